"""Which frames of a video become a row, and at what size: Keye-VL-8B-Preview's rules
(keye-vl-utils 1.0), as pure functions of what the container's index says.

    plan = plan_frames(pts_seconds, FrameRules())   # indices into the presentation-order frames
    height, width = frame_size(display_h, display_w, len(plan.indices), FrameRules())

Count: nframes = total_frames / video_fps x fps (= seconds x fps), clamped to
[min_frames, min(max_frames, total_frames)] and floored to an even number; at the 128-token
per-frame minimum no more frames than the 24,576-token budget allows (then fewer frames are taken
and the effective fps says so). Positions: linspace(0, total - 1, nframes).round(), half to even as
torch and numpy round. Size: smart_resize (multiples of 28) with a per-frame budget of
total // frames tokens, clamped to [128, 768]; a frame rounded up past the budget drops two frames.

Times are never index / fps: each chosen frame's time is its own pts (see synthesis.video.decode).

Preset `keye_vl_1_5_slow_fast` (Keye-VL-1.5's slow/fast encoding, on the data side): the same
frames, then each is "slow" (full resolution) or "fast" (low resolution): the first frame is
slow, a frame whose patch similarity to the latest slow frame exceeds 0.95 is fast, any other
starts a new slow frame. A fast frame gets 30% of a slow frame's tokens; the slow frames' tokens
are the largest (binary search) that keeps the video within 75,000 tokens. Patch similarity here:
the share of 4x4 patches of the 32x32 grey thumbnails whose mean absolute difference is under
8/255 (the report names a patch-based similarity without its formula; this is our reading).
The `videos` entry keeps the slow size as its width/height; fast frames are stored smaller and the
row's extra lists each frame's pathway.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from curation import schema


@dataclass
class FrameRules:
    fps: float = schema.VIDEO_FPS  # frames sampled per second of video
    min_frames: int = schema.VIDEO_MIN_FRAMES
    max_frames: int = schema.VIDEO_MAX_FRAMES
    frame_min_tokens: int = schema.VIDEO_FRAME_MIN_TOKENS  # merged tokens (28x28 pixels each)
    frame_max_tokens: int = schema.VIDEO_FRAME_MAX_TOKENS
    max_tokens: int = schema.VIDEO_MAX_TOKENS  # per video
    preset: Literal["keye_vl_8b", "keye_vl_1_5_slow_fast"] = "keye_vl_8b"
    # keye_vl_1_5_slow_fast only:
    slow_fast_max_tokens: int = 75000  # per video, slow and fast frames together
    fast_token_ratio: float = 0.3  # a fast frame's tokens / a slow frame's
    fast_similarity: float = 0.95  # patch similarity to the latest slow frame above which a frame is fast

    def check(self) -> None:
        if self.fps <= 0:
            raise ValueError(f"frames.fps must be positive, got {self.fps}")
        if not 2 <= self.min_frames <= self.max_frames:
            raise ValueError(f"frames: need 2 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if not 0 < self.frame_min_tokens <= self.frame_max_tokens:
            raise ValueError("frames: need 0 < frame_min_tokens <= frame_max_tokens")
        if self.max_tokens < self.frame_min_tokens * self.min_frames:
            raise ValueError(f"frames.max_tokens {self.max_tokens} cannot hold min_frames at frame_min_tokens")


@dataclass(frozen=True)
class FramePlan:
    indices: list[int]  # presentation-order frame numbers, ascending (may repeat in tiny videos)
    wanted: int  # the count the fps rule asked for, before the token budget
    effective_fps: float  # frames taken per second of video


def _floor_even(x: float) -> int:
    return int(math.floor(x / 2) * 2)


def _ceil_even(x: float) -> int:
    return int(math.ceil(x / 2) * 2)


def frame_count(total_frames: int, seconds: float, rules: FrameRules) -> int:
    """The fps rule: seconds x fps frames, in [min_frames, min(max_frames, total)], even."""
    if total_frames < 2:
        raise ValueError(f"a video needs at least 2 frames, this one has {total_frames}")
    lowest = _ceil_even(rules.min_frames)
    highest = _floor_even(min(rules.max_frames, total_frames))
    count = min(max(seconds * rules.fps, lowest), highest, total_frames)
    return max(2, _floor_even(count))


def plan_frames(frame_times: Sequence[float], rules: FrameRules) -> FramePlan:
    """The frames to take from a video whose presentation-order frames start at `frame_times`
    (seconds; the last frame lasts as long as the median gap)."""
    times = np.asarray(frame_times, dtype=np.float64)
    total = len(times)
    seconds = video_seconds(times)
    wanted = frame_count(total, seconds, rules)
    count = min(wanted, max(2, _floor_even(rules.max_tokens // rules.frame_min_tokens)))
    indices = np.round(np.linspace(0, total - 1, count)).astype(np.int64).tolist()
    return FramePlan(indices=indices, wanted=wanted, effective_fps=count / seconds if seconds > 0 else 0.0)


def video_seconds(frame_times: Sequence[float]) -> float:
    """Duration from the frames' own times: last - first + one typical frame gap."""
    times = np.asarray(frame_times, dtype=np.float64)
    if len(times) < 2:
        return 0.0
    gaps = np.diff(times)
    return float(times[-1] - times[0] + np.median(gaps))


def frame_size(height: int, width: int, count: int, rules: FrameRules) -> tuple[int, int, int]:
    """(count, height, width) of the stored frames: smart_resize under the per-frame budget; when a
    frame rounded up to the minimum breaks the video's budget, two frames fewer, and again."""
    factor = schema.FACTOR
    while True:
        cap = max(rules.frame_min_tokens, min(rules.frame_max_tokens, rules.max_tokens // count))
        h, w = schema.smart_resize(
            height, width, min_pixels=rules.frame_min_tokens * factor * factor, max_pixels=cap * factor * factor
        )
        if (h // factor) * (w // factor) * count <= rules.max_tokens or count <= rules.min_frames:
            return count, h, w
        count -= 2


def fit_plan(plan: FramePlan, height: int, width: int, rules: FrameRules, seconds: float, total: int) -> tuple[FramePlan, int, int]:
    """`plan` with the size its frames get, re-spaced when the budget took frames away."""
    count, h, w = frame_size(height, width, len(plan.indices), rules)
    if count != len(plan.indices):
        indices = np.round(np.linspace(0, total - 1, count)).astype(np.int64).tolist()
        plan = FramePlan(indices=indices, wanted=plan.wanted, effective_fps=count / seconds if seconds > 0 else 0.0)
    return plan, h, w


def patch_similarity(a: np.ndarray, b: np.ndarray, patch: int = 4, tolerance: float = 8 / 255) -> float:
    """Share of `patch` x `patch` patches of two grey thumbnails (levels in [0, 1]) that match:
    mean absolute difference under `tolerance`."""
    h, w = a.shape
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))[: h // patch * patch, : w // patch * patch]
    means = diff.reshape(h // patch, patch, w // patch, patch).mean(axis=(1, 3))
    return float((means < tolerance).mean())


def slow_fast_pathways(thumbs: Sequence[np.ndarray], similarity: float) -> list[bool]:
    """True for slow frames: the first, and every frame not similar enough to the latest slow one."""
    slow, latest = [], None
    for thumb in thumbs:
        is_slow = latest is None or patch_similarity(thumb, latest) <= similarity
        if is_slow:
            latest = thumb
        slow.append(is_slow)
    return slow


def slow_fast_sizes(height: int, width: int, slow: Sequence[bool], rules: FrameRules) -> tuple[tuple[int, int], tuple[int, int]]:
    """((slow h, w), (fast h, w)): the most tokens a slow frame can have (binary search over the
    per-frame cap in [frame_min_tokens, frame_max_tokens]) with every fast frame at
    fast_token_ratio of the cap, all frames within slow_fast_max_tokens."""
    factor = schema.FACTOR
    n_slow, n_fast = sum(slow), len(slow) - sum(slow)

    def sizes(cap: int):
        fast_cap = max(1, int(cap * rules.fast_token_ratio))
        s = schema.smart_resize(height, width, min_pixels=factor * factor, max_pixels=cap * factor * factor)
        f = schema.smart_resize(height, width, min_pixels=factor * factor, max_pixels=fast_cap * factor * factor)
        total = n_slow * (s[0] // factor) * (s[1] // factor) + n_fast * (f[0] // factor) * (f[1] // factor)
        return s, f, total

    lo, hi = rules.frame_min_tokens, rules.frame_max_tokens
    if sizes(lo)[2] > rules.slow_fast_max_tokens:
        hi = lo  # even the minimum is over: the minimum, as the 8B rule's floor
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sizes(mid)[2] <= rules.slow_fast_max_tokens:
            lo = mid
        else:
            hi = mid - 1
    s, f, _ = sizes(lo)
    return s, f
