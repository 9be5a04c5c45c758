"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    global_count,
    micro_step_loss,
    sum_from_mean,
    token_sum_cross_entropy,
)


def test_token_sum_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [3.0, 1.0, 0.0]])
    targets = torch.tensor([2, 0, -100, 1])
    total, count = token_sum_cross_entropy(logits, targets)
    expected = (
        math.log(3.0)  # uniform over 3 classes
        + (math.log(math.e + math.e**2 + math.e**3) - 1.0)  # -log softmax([1,2,3])[0]
        + (math.log(math.e**3 + math.e + 1.0) - 1.0)  # -log softmax([3,1,0])[1]
    )
    assert count == 3
    assert total.item() == pytest.approx(expected, rel=1e-6)


def test_global_normalisation_weighs_every_token_alike():
    """Two micro-batches with 1 and 3 loss tokens: the step loss is the 4-token mean, not the mean
    of the two micro-batch means."""
    per_token = [2.0, 1.0, 1.0, 1.0]  # micro-batch A: [2.0], B: [1.0, 1.0, 1.0]
    a, b = torch.tensor(2.0), torch.tensor(3.0)  # token sums
    global_tokens = 4
    step = micro_step_loss(a, global_tokens) + micro_step_loss(b, global_tokens)
    assert step.item() == pytest.approx(sum(per_token) / 4)  # 1.25
    assert step.item() != pytest.approx((2.0 / 1 + 3.0 / 3) / 2)  # 1.5: the per-batch average
    # two ranks, DeepSpeed averages gradients over them: each rank's share is scaled back up
    assert micro_step_loss(a, global_tokens, world_size=2).item() == pytest.approx(2 * 2.0 / 4)


def test_sum_from_mean_and_errors():
    assert sum_from_mean(torch.tensor(0.5), 6).item() == 3.0
    with pytest.raises(ValueError, match="loss tokens"):
        micro_step_loss(torch.tensor(1.0), 0)
    assert global_count(7) == 7  # no process group: itself
