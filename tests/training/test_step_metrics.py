"""training/step_metrics.py: one step's record against numbers worked out by hand (a world of one,
no process group), the mixture fractions, and which loss / gradient norms count as not finite."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest

from training.engine import StepLoss
from training.global_step import StepPlan
from training.step_metrics import Mixture, StepMetrics


def sequence(real: int, slots: int, samples: int, sources: list[int]):
    """What the record reads of a packed sequence."""
    return SimpleNamespace(real_tokens=real, max_tokens=slots, padding_tokens=slots - real,
                           sample_ids=[f"s{i}" for i in range(samples)],
                           coords=[SimpleNamespace(source=s) for s in sources])


def test_a_steps_record_by_hand():
    mine = [sequence(90, 100, 3, [0, 0, 1]), sequence(60, 100, 1, [0])]
    plan = StepPlan(mine=mine, owners=[0, 0], per_rank=2, loads=[3e9], loads_unbalanced=[3e9])
    mixture = Mixture(["web", "ocr"], Counter({0: 5, 1: 3}))  # the reader drew 8 rows, 4 of them trained
    mixture.add(mine)
    step = StepLoss(loss=2.5, totals={"loss_tokens": 12}, stats={"correct": 3.0})
    task = SimpleNamespace(metrics=lambda stats, totals: {"accuracy": stats["correct"] / totals["loss_tokens"]})
    record = StepMetrics.gather(plan, step, lr=1e-4, grad_norm=0.5, seconds=2.0, peak_flops=1e10, world=1,
                                mixture=mixture, task=task)
    assert record.loss == 2.5 and record.totals == {"loss_tokens": 12}
    assert record.values()["loss_tokens"] == 12 and record.values()["accuracy"] == 0.25  # the task's own values
    assert record.tokens_per_s == 75.0 and record.samples_per_s == 2.0  # 150 tokens, 4 samples in 2 s
    assert record.padding_fraction == 0.25  # 50 of 200 slots
    assert record.mfu == pytest.approx(3e9 / 2.0 / 1e10)
    values = record.values()
    assert values["mix/web"] == 5 / 8 and values["mix/ocr"] == 3 / 8 and values["rows_drawn"] == 8
    assert values["trained_mix/web"] == 0.75 and values["trained_mix/ocr"] == 0.25
    assert "dropped_sequences" not in values and record.finite


def test_one_folder_logs_no_mixture():
    mixture = Mixture(["only"], Counter({0: 1}))
    mixture.add([sequence(1, 1, 1, [0])])
    assert mixture.fractions() == {}


@pytest.mark.parametrize(
    "loss, grad_norm, finite",
    [(2.0, 0.5, True), (2.0, None, True), (math.nan, 0.5, False), (math.inf, 0.5, False),
     (2.0, math.nan, False), (2.0, math.inf, False), (2.0, -1.0, False)],  # -1: DeepSpeed's NaN/inf sentinel
)
def test_not_finite(loss, grad_norm, finite):
    record = StepMetrics(loss=loss, lr=1e-4, grad_norm=grad_norm, totals={"loss_tokens": 1}, tokens_per_s=1.0, samples_per_s=1.0,
                         step_seconds=1.0, padding_fraction=0.0, rank_imbalance=1.0, rank_imbalance_unbalanced=1.0,
                         mfu=None)
    assert record.finite is finite
