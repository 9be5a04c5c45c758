"""Schedules against hand-computed values."""

from __future__ import annotations

import math

import pytest

from training.schedules import Schedule, lr_multiplier


def test_warmup_cosine_by_hand():
    s = Schedule("cosine", warmup=4, total=12, min_ratio=0.1)
    assert [s(k) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert s(4) == pytest.approx(1.0)  # decay starts
    # step 8: halfway through the 8 decay steps -> 0.1 + 0.9 * 0.5 * (1 + cos(pi/2)) = 0.55
    assert s(8) == pytest.approx(0.55)
    assert s(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert s(12) == pytest.approx(0.1)
    assert s(100) == pytest.approx(0.1)  # stays at the floor past the end


def test_constant_by_hand():
    assert [lr_multiplier("constant", k, 2, 10) for k in range(4)] == [0.5, 1.0, 1.0, 1.0]
    assert lr_multiplier("constant", 0, 0, 10) == 1.0


def test_linear_decay_by_hand():
    s = Schedule("linear", warmup=0, total=10, min_ratio=0.0)
    assert [s(k) for k in (0, 5, 9, 10, 20)] == pytest.approx([1.0, 0.5, 0.1, 0.0, 0.0])
    w = Schedule("linear", warmup=2, total=6, min_ratio=0.2)
    assert [w(k) for k in range(7)] == pytest.approx([0.5, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2])


def test_unknown_schedule_and_negative_step():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_multiplier("exp", 0, 0, 1)
    with pytest.raises(ValueError):
        lr_multiplier("cosine", -1, 0, 1)
