"""Video tasks whose answers come from the data itself (Keye-VL report §3.1.5).

    reorder_row(facts, frames, cfg, rng)      frames far enough apart to tell apart, shown shuffled;
                                              the answer lists them in their original order
    grounding_row(facts, whole, cfg, rng)     when is "..." said? -> [start, end] in seconds
    matching_rows(videos, cfg, seed)          context clip of one video + candidates (its true
                                              continuation and clips of other videos) -> the label

Frames "far enough apart": every pair differs by at least `min_difference` in mean absolute grey
level (32x32 thumbnails, levels in [0, 1]), so the order is decidable from pixels.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from curation import schema
from synthesis.video.decode import Frame
from synthesis.video.rows import VideoFacts, kept, video_of

LETTERS = "ABCDEFGH"


@dataclass
class TaskConfig:
    reorder: bool = True
    reorder_frames: int = 4  # frames shown shuffled
    min_difference: float = 0.02  # pairwise mean |grey difference| of the shown frames
    matching: bool = True
    matching_candidates: int = 4  # the true continuation + clips of other videos
    grounding: bool = True
    grounding_sources: list[str] = field(default_factory=lambda: ["subtitles", "asr_json", "whisper"])
    grounding_min_words: int = 3


def rng_for(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\0".join([str(seed), *parts]).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def distinct_frames(frames: Sequence[Frame], k: int, min_difference: float) -> list[Frame]:
    """Up to k frames in time order, spread over the video, every pair at least min_difference
    apart: candidates are taken from evenly spaced positions first, then the rest in time order."""
    order = list(np.round(np.linspace(0, len(frames) - 1, min(len(frames), k))).astype(int))
    order += [i for i in range(len(frames)) if i not in order]
    chosen: list[Frame] = []
    for i in order:
        frame = frames[i]
        if all(float(np.abs(frame.thumb - c.thumb).mean()) >= min_difference for c in chosen):
            chosen.append(frame)
            if len(chosen) == k:
                break
    return sorted(chosen, key=lambda f: f.time) if len(chosen) == k else []


def reorder_row(facts: VideoFacts, frames: Sequence[Frame], cfg: TaskConfig, rng: random.Random) -> dict | None:
    picked = distinct_frames(frames, cfg.reorder_frames, cfg.min_difference)
    if not picked:
        return None
    shown = list(range(len(picked)))
    while shown == sorted(shown):  # a shuffle that leaves the order as it was teaches nothing
        rng.shuffle(shown)
    parts: list = []
    for position, original in enumerate(shown):
        parts += [f"Frame {position + 1}:", schema.image_part(position)]
    parts.append("These frames come from one video but are shuffled. List the frame numbers in the order "
                 "they happen in the video, separated by commas.")
    # the original order: frame numbers sorted by their original position
    answer = ", ".join(str(shown.index(original) + 1) for original in range(len(picked)))
    images = [schema.image_entry(picked[i].jpeg, facts.width, facts.height) for i in shown]
    return kept(schema.make_row(
        facts.source, "vqa", [schema.message("user", *parts), schema.message("assistant", answer)], images=images,
        task_types=["video~temporal~frame_reordering"], lang="en",
        extra=facts.extra(task="frame_reordering", shown_times=[round(picked[i].time, 6) for i in shown]),
    ))


def grounding_row(facts: VideoFacts, whole: dict, cfg: TaskConfig, rng: random.Random) -> dict | None:
    if facts.transcript_source not in cfg.grounding_sources:
        return None
    usable = [s for s in facts.transcript if len(s.text.split()) >= cfg.grounding_min_words]
    if not usable:
        return None
    segment = rng.choice(usable)
    question = (f'When is "{segment.text}" said in this video? Answer with its start and end time in seconds, '
                "as [start, end].")
    answer = f"[{segment.start:.1f}, {segment.end:.1f}]"
    return kept(schema.make_row(
        facts.source, "video", [schema.message("user", schema.video_part(0), question),
                                schema.message("assistant", answer)],
        videos=[whole], task_types=["video~temporal~speech_grounding"], lang="en",
        extra=facts.extra(task="speech_grounding", segment=segment.to_json()),
    ))


@dataclass
class MatchingEntry:
    """What one video offers the matching task: a context clip and the clip right after it."""

    facts: VideoFacts
    context: list[Frame]
    continuation: list[Frame]
    bounds: tuple[tuple[float, float], tuple[float, float]]


def matching_entry(facts: VideoFacts, clips: Sequence[Sequence[Frame]], bounds: Sequence[tuple[float, float]]) -> MatchingEntry | None:
    usable = [(c, b) for c, b in zip(clips, bounds) if c]
    if len(usable) < 2:
        return None
    (context, a), (continuation, b) = usable[-2], usable[-1]
    return MatchingEntry(facts, list(context), list(continuation), (a, b))


def matching_rows(entries: Sequence[MatchingEntry], cfg: TaskConfig, seed: int) -> list[dict]:
    """For each video with two clips: its context clip, then candidates = its continuation and
    continuations of other videos of the group; the answer is the true one's letter."""
    rows = []
    want = min(cfg.matching_candidates, len(entries))
    if want < 2:
        return rows
    for i, entry in enumerate(entries):
        rng = rng_for(seed, "matching", entry.facts.origin)
        others = [e for j, e in enumerate(entries) if j != i]
        candidates = [entry] + rng.sample(others, want - 1)
        rng.shuffle(candidates)
        label = LETTERS[candidates.index(entry)]
        parts: list = ["Context:", schema.video_part(0)]
        videos = [video_of(entry.context, entry.facts, entry.bounds[0][1] - entry.bounds[0][0])]
        for k, candidate in enumerate(candidates):
            parts += [f"Candidate {LETTERS[k]}:", schema.video_part(k + 1)]
            duration = candidate.bounds[1][1] - candidate.bounds[1][0]
            videos.append(video_of(candidate.continuation, candidate.facts, duration))
        parts.append("Which candidate continues the context video? Answer with its letter.")
        rows.append(kept(schema.make_row(
            entry.facts.source, "video", [schema.message("user", *parts), schema.message("assistant", label)],
            videos=videos, task_types=["video~temporal~video_matching"], lang="en",
            extra=entry.facts.extra(task="video_matching", candidates=[c.facts.origin for c in candidates]),
        )))
    return rows
