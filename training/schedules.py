"""Learning-rate schedules: pure functions step -> multiplier of each param group's base lr.

A schedule keeps no state, so resuming at step k needs only k; the engine sets
`group["lr"] = group["base_lr"] * schedule(k)` before optimizer step k (steps count from 0), and
per-module multipliers live in each group's base lr, so every group follows the same curve.

    warmup_cosine  linear 0 -> 1 over `warmup` steps, then cosine 1 -> min_ratio at `total`
    constant       linear warmup, then 1
    linear         linear warmup, then straight down to min_ratio at `total` (annealing)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

ScheduleName = Literal["cosine", "constant", "linear"]


@dataclass(frozen=True)
class Schedule:
    name: ScheduleName = "cosine"
    warmup: int = 0  # steps of linear warmup
    total: int = 1  # steps of the whole run (the decay ends here)
    min_ratio: float = 0.0  # final lr / peak lr of cosine and linear

    def __call__(self, step: int) -> float:
        return lr_multiplier(self.name, step, self.warmup, self.total, self.min_ratio)


def warmup_factor(step: int, warmup: int) -> float:
    """(step + 1) / warmup during warmup: the first step already moves, step warmup-1 reaches 1."""
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _progress(step: int, warmup: int, total: int) -> float:
    """Fraction of the decay phase done at `step`: 0 at the first step after warmup, 1 at `total`."""
    span = total - warmup
    return min(1.0, max(0.0, (step - warmup) / span)) if span > 0 else 1.0


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    if step < warmup:
        return warmup_factor(step, warmup)
    p = _progress(step, warmup, total)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def constant(step: int, warmup: int = 0) -> float:
    return warmup_factor(step, warmup)


def linear_decay(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    if step < warmup:
        return warmup_factor(step, warmup)
    return 1.0 - (1.0 - min_ratio) * _progress(step, warmup, total)


def lr_multiplier(name: str, step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if name == "cosine":
        return warmup_cosine(step, warmup, total, min_ratio)
    if name == "constant":
        return constant(step, warmup)
    if name == "linear":
        return linear_decay(step, warmup, total, min_ratio)
    raise ValueError(f"unknown schedule {name!r}: cosine, constant or linear")
