"""Cutting a video's sampled frames into clips by time, and giving each clip the words said in it.

    bounds = clip_bounds(frames, transcript, seconds, ClipConfig(mode="seconds", seconds=5))
    clips = split_frames(frames, bounds)          # frames per clip, in time order
    texts = [spoken_text(transcript, a, b) for a, b in bounds]

Modes: fixed `seconds`; transcript `sentences` (a clip starts where a segment starts); `shots`
(a clip starts where consecutive sampled frames differ by more than `shot_threshold` in mean
absolute grey level). A clip with fewer than `min_frames` frames joins the clip before it (or
after it, for the first), so every clip is a video the model can take.
A word belongs to the clip that holds its midpoint; a segment without word times, by its midpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from synthesis.video.decode import Frame
from synthesis.video.speech import Segment


@dataclass
class ClipConfig:
    mode: Literal["seconds", "sentences", "shots"] = "seconds"
    seconds: float = 5.0  # clip length in `seconds` mode
    min_frames: int = 4  # fewer frames than this: joined to a neighbour
    shot_threshold: float = 0.25  # mean |grey difference| in [0, 1] that starts a new shot


def clip_bounds(frames: Sequence[Frame], transcript: Sequence[Segment], seconds: float, cfg: ClipConfig) -> list[tuple[float, float]]:
    """[start, end) times that cover [0, seconds); every clip holds at least min_frames frames
    when the video has that many."""
    if cfg.mode == "seconds":
        if cfg.seconds <= 0:
            raise ValueError(f"clips.seconds must be positive, got {cfg.seconds}")
        starts = list(np.arange(0.0, seconds, cfg.seconds))
    elif cfg.mode == "sentences":
        starts = [0.0] + [s.start for s in transcript if s.start > 0]
    else:
        starts = [0.0] + [b.time for a, b in zip(frames, frames[1:]) if float(np.abs(a.thumb - b.thumb).mean()) > cfg.shot_threshold]
    starts = sorted(set(float(s) for s in starts if s < seconds)) or [0.0]
    bounds = list(zip(starts, starts[1:] + [max(seconds, starts[-1])]))
    return _merge_short(bounds, [f.time for f in frames], cfg.min_frames)


def _merge_short(bounds: list[tuple[float, float]], times: Sequence[float], min_frames: int) -> list[tuple[float, float]]:
    def count(a: float, b: float) -> int:
        return sum(1 for t in times if a <= t < b)

    merged: list[tuple[float, float]] = []
    for a, b in bounds:
        if merged and count(*merged[-1]) < min_frames:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    if len(merged) > 1 and count(*merged[-1]) < min_frames:
        last = merged.pop()
        merged[-1] = (merged[-1][0], last[1])
    # frames at or after the last bound's end (rounding at the very end) stay in the last clip
    if merged and times and max(times) >= merged[-1][1]:
        merged[-1] = (merged[-1][0], max(times) + 1e-3)
    return merged


def split_frames(frames: Sequence[Frame], bounds: Sequence[tuple[float, float]]) -> list[list[Frame]]:
    return [[f for f in frames if a <= f.time < b] for a, b in bounds]


def spoken_text(transcript: Sequence[Segment], start: float, end: float) -> str:
    """The words said in [start, end), in order."""
    words = []
    for segment in transcript:
        if segment.words:
            words.extend(w.text for w in segment.words if start <= (w.start + w.end) / 2 < end)
        elif start <= (segment.start + segment.end) / 2 < end:
            words.append(segment.text)
    return " ".join(words)
