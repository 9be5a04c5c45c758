"""Optional rows that need a model: frame-level OCR (the OCR engines of synthesis.ocr_extract) and
recaptioning (the model client). Both are off by default; a failure never costs the video its
other rows, and is counted in the row's extra or the job's stats.

    frame_ocr_row(facts, frames, whole, cfg.ocr)        kind `ocr`: the text on screen, with times
    recaption_row(facts, frames, whole, cfg.recaption)  kind `video`: a model's caption of the video
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from curation import schema
from curation.sources.common import detect_lang
from synthesis.model_client.config import ClientConfig
from synthesis.ocr_extract.engine import EngineConfig
from synthesis.video.decode import Frame
from synthesis.video.rows import VideoFacts, kept


@dataclass
class FrameOcrConfig:
    enabled: bool = False
    engine: EngineConfig = field(default_factory=EngineConfig)
    every: int = 2  # read one sampled frame in `every` (2 fps sampling: once a second)
    min_score: float = 0.6
    min_chars: int = 3  # characters of text a frame needs to count
    question: str = "What text appears in this video, and when? Give each text with its time in seconds."


@dataclass
class RecaptionConfig:
    enabled: bool = False
    client: ClientConfig = field(default_factory=ClientConfig)
    frames: int = 8  # frames shown to the model, evenly spread over the video
    prompt: str = ("These frames come from one video, in time order. Describe what happens in the video in a "
                   "few sentences: the scene, the people or objects, and how things change.")
    min_chars: int = 20  # shorter captions are not used


def frame_ocr_row(facts: VideoFacts, frames: Sequence[Frame], whole: dict, cfg: FrameOcrConfig) -> dict | None:
    """Text read from every `every`-th frame; a text shown on consecutive read frames is listed once,
    at its first time. None when no frame has text."""
    import cv2

    from synthesis.ocr_extract.engine import get_engine
    from synthesis.ocr_extract.reading import reading_order

    engine = get_engine(cfg.engine)
    picked = list(frames)[:: max(1, cfg.every)]
    images = [cv2.imdecode(np.frombuffer(f.jpeg, np.uint8), cv2.IMREAD_COLOR) for f in picked]
    lines_per_frame = engine.read(images)
    timeline, previous = [], None
    for frame, lines in zip(picked, lines_per_frame):
        good = [line for line in reading_order(lines) if line.score >= cfg.min_score and line.text.strip()]
        text = " ".join(line.text.strip() for line in good)
        if len("".join(text.split())) < cfg.min_chars:
            previous = None
            continue
        if text != previous:
            timeline.append((frame.time, text))
        previous = text
    if not timeline:
        return None
    answer = "\n".join(f"[{t:.1f} s] {text}" for t, text in timeline)
    return kept(schema.make_row(
        facts.source, "ocr", [schema.message("user", schema.video_part(0), cfg.question),
                              schema.message("assistant", answer)],
        videos=[whole], task_types=["ocr~video~frame_text"], lang=detect_lang(answer),
        extra=facts.extra(task="frame_ocr", engine=cfg.engine.name, read_frames=len(picked),
                          texts=[[round(t, 3), text] for t, text in timeline]),
    ))


def recaption_row(facts: VideoFacts, frames: Sequence[Frame], whole: dict, cfg: RecaptionConfig,
                  prompt: str) -> tuple[dict | None, str | None]:
    """(row, None) with the model's caption, or (None, reason) when the model gave none usable."""
    from synthesis.model_client import client_for
    from synthesis.model_client.records import ChatRequest

    count = min(len(frames), max(1, cfg.frames))
    chosen = [frames[i] for i in np.round(np.linspace(0, len(frames) - 1, count)).astype(int)]
    content = []
    for k, frame in enumerate(chosen):
        content += [{"type": "text", "text": f"[{frame.time:.1f} s]"}, {"type": "image", "index": k}]
    content.append({"type": "text", "text": cfg.prompt})
    request = ChatRequest(f"recaption:{facts.origin}", [{"role": "user", "content": content}],
                          images=[f.jpeg for f in chosen])
    [done] = client_for(cfg.client).chat([request])
    if not done.ok:
        return None, done.error
    caption = " ".join((done.texts[0] if done.texts else "").split())
    if len(caption) < cfg.min_chars:
        return None, "caption_too_short"
    row = kept(schema.make_row(
        facts.source, "video", [schema.message("user", schema.video_part(0), prompt),
                                schema.message("assistant", caption)],
        videos=[whole], lang=detect_lang(caption),
        extra=facts.extra(task="recaption", model=cfg.client.model, shown_frames=[round(f.time, 3) for f in chosen],
                          usage=json.loads(json.dumps(done.usage))),
    ))
    return row, None
