"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    global_count,
    micro_step_loss,
    siglip_logits,
    siglip_sigmoid_loss,
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


def _softplus(x: float) -> float:
    return math.log(1.0 + math.exp(x))  # -log sigmoid(-x)


def test_siglip_sigmoid_loss_by_hand():
    """2 pairs, exp(t') = 2, b = -1. Images x0 = (1, 0), x1 = (0, 1); captions y0 = (3, 0) and
    y1 = (1, 1), which normalise to (1, 0) and (1, 1)/sqrt 2. Pair logits 2 * <x_i, y_j> - 1:
        z00 = 2*1 - 1 = 1 (match)       z01 = 2/sqrt 2 - 1 = sqrt 2 - 1 (no match)
        z10 = 2*0 - 1 = -1 (no match)   z11 = sqrt 2 - 1 (match)
    -log sigmoid(s * z) = softplus(-s * z), s = +1 for a match, -1 otherwise."""
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    scale, bias = torch.tensor([math.log(2.0)]), torch.tensor([-1.0])
    r = math.sqrt(2.0) - 1.0
    expected = _softplus(-1.0) + _softplus(r) + _softplus(-1.0) + _softplus(-r)
    total, n = siglip_sigmoid_loss(images, texts, scale, bias)
    assert n == 2
    assert total.item() == pytest.approx(expected, rel=1e-6)  # 0.3133 + 0.9215 + 0.3133 + 0.5073
    assert (total / n).item() == pytest.approx(expected / 2, rel=1e-6)  # SigLIP's -1/n sum_i sum_j
    logits = siglip_logits(images, texts, scale, bias)
    torch.testing.assert_close(logits, torch.tensor([[1.0, r], [-1.0, r]]), rtol=0, atol=1e-6)


def test_siglip_sigmoid_loss_3x3_matches_the_pairwise_sum():
    """3 pairs, one-hot images, captions on the axes with different lengths (normalised away):
    every match has cosine 1 and every non-match 0, so with exp(t') = 10, b = -10 all logits are
    10 - 10 = 0 (matches) or -10 (non-matches): 3 * softplus(0) + 6 * softplus(-10)."""
    images = torch.eye(3)
    texts = torch.diag(torch.tensor([2.0, 5.0, 0.5]))
    total, n = siglip_sigmoid_loss(images, texts, torch.tensor([math.log(10.0)]), torch.tensor([-10.0]))
    assert n == 3
    assert total.item() == pytest.approx(3 * math.log(2.0) + 6 * _softplus(-10.0), rel=1e-6)


def test_siglip_temperature_and_bias_get_gradients():
    torch.manual_seed(0)
    images, texts = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    scale = torch.tensor([math.log(10.0)], requires_grad=True)
    bias = torch.tensor([-10.0], requires_grad=True)
    total, n = siglip_sigmoid_loss(images, texts, scale, bias)
    (total / n).backward()
    assert scale.grad.abs().item() > 0 and bias.grad.abs().item() > 0 and images.grad.abs().sum() > 0
    # at b = -10 nearly every pair scores "no match": the loss pushes the bias up
    assert bias.grad.item() < 0
    with pytest.raises(ValueError, match="text embeddings"):
        siglip_sigmoid_loss(images, texts[:3], scale, bias)
