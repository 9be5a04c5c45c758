"""A decoded video as contract rows: the interleaved video-ASR row and the caption row.

    VideoFacts  what the job learnt about one video (times, frames, transcript, caption)
    video_of(frames, facts)            -> a `videos` entry (frames with absolute times)
    interleaved_row(facts, clips, texts) -> kind `interleaved`: one `document` turn alternating
                                          clip i (a video part) and the words said during clip i
    caption_row(facts, whole)          -> kind `video`: the video and its caption

Every row's `extra` has the video's `origin` and a `video` record (seconds, frames, sampled fps,
transcript source, ...): the dataset card counts hours and coverage from it, once per origin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from curation import schema
from curation.sources.common import detect_lang
from curation.steps import REJECT
from synthesis.video.decode import Frame
from synthesis.video.speech import Segment

STEP = "video_ingest"


@dataclass
class VideoFacts:
    source: str
    origin: str
    seconds: float = 0.0
    total_frames: int = 0
    wanted_frames: int = 0  # what the fps rule asked for (more than taken when the budget bit)
    effective_fps: float = 0.0
    width: int = 0  # stored frame size
    height: int = 0
    codec: str = ""
    rotation: int = 0
    caption: str | None = None
    transcript: list[Segment] = field(default_factory=list)
    transcript_source: str = "none"  # subtitles, asr_json, pocketsphinx, whisper, none
    has_audio: bool = False
    pathways: str = ""  # slow/fast preset: "S" or "F" per sampled frame
    errors: dict = field(default_factory=dict)  # optional steps that failed: step -> reason

    def record(self) -> dict:
        speech = sum(s.end - s.start for s in self.transcript)
        return {
            "seconds": round(self.seconds, 3), "frames": self.total_frames, "sampled_frames": self.wanted_frames,
            "sampled_fps": round(self.effective_fps, 4), "width": self.width, "height": self.height,
            "codec": self.codec, "rotation": self.rotation, "audio": self.has_audio,
            "transcript": self.transcript_source, "speech_seconds": round(speech, 3),
            "words": sum(len(s.words) or len(s.text.split()) for s in self.transcript),
            **({"pathways": self.pathways} if self.pathways else {}),
            **({"errors": self.errors} if self.errors else {}),
        }

    def extra(self, **more) -> dict:
        return {"origin": self.origin, "video": self.record(), **more}


def video_of(frames: Sequence[Frame], facts: VideoFacts, duration: float | None = None) -> dict:
    return schema.video_entry(
        [f.jpeg for f in frames], [round(f.time, 6) for f in frames], facts.width, facts.height,
        facts.effective_fps, facts.seconds if duration is None else duration,
    )


def interleaved_row(facts: VideoFacts, clips: Sequence[Sequence[Frame]], bounds: Sequence[tuple[float, float]],
                    texts: Sequence[str]) -> dict | None:
    """One `document` turn: clip 0, its words, clip 1, its words, ...; None without any words."""
    if not any(texts):
        return None
    parts, videos = [], []
    for clip, (start, end), text in zip(clips, bounds, texts):
        if not clip:
            continue
        parts.append(schema.video_part(len(videos)))
        videos.append(video_of(clip, facts, duration=end - start))
        if text:
            parts.append(text)
    words = " ".join(t for t in texts if t)
    return kept(schema.make_row(
        facts.source, "interleaved", [schema.message("document", *parts)], videos=videos, lang=detect_lang(words),
        extra=facts.extra(clips=[[round(a, 3), round(b, 3)] for a, b in bounds],
                          segments=[s.to_json() for s in facts.transcript]),
    ))


def caption_row(facts: VideoFacts, whole: dict, prompt: str = "Describe this video.") -> dict | None:
    if not facts.caption:
        return None
    return kept(schema.make_row(
        facts.source, "video",
        [schema.message("user", schema.video_part(0), prompt), schema.message("assistant", facts.caption)],
        videos=[whole], lang=detect_lang(facts.caption), extra=facts.extra(task="caption"),
    ))


def kept(row: dict) -> dict:
    row[REJECT] = None
    return row


def refused_row(source: str, origin: str, reason: str, detail: str, facts: VideoFacts | None = None) -> dict:
    """An input that gave no rows: its id from what identifies it, the reason why."""
    row = schema.make_row(source, "video", [], id=schema.raw_id("video", source, origin),
                          extra={"origin": origin, **({"video": facts.record()} if facts and facts.total_frames else {})})
    row[REJECT] = {"step": STEP, "reason": reason, "detail": detail[:500]}
    return row
