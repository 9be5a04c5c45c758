"""Losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    bco_pair_loss,
    dpo_sigmoid_loss,
    grpo_advantages,
    grpo_loss,
    mpo_loss,
    segment_sums,
    siglip_logits,
    siglip_sigmoid_loss,
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


def test_step_shares_of_two_micro_batches_add_up_to_the_step_loss():
    """MPO over two micro-batches (1 pair with 2 chosen tokens, 2 pairs with 6): each returns its
    share, its sums over the step's 3 pairs and 8 chosen tokens; the shares add up to mpo_loss over
    the union, which is not the mean of the two micro-batches' own losses."""
    c = torch.tensor([2.0, 0.5, -0.3], dtype=torch.float64)
    r = torch.tensor([-1.0, 0.7, -2.0], dtype=torch.float64)
    nll = [torch.tensor(3.0, dtype=torch.float64), torch.tensor(4.0, dtype=torch.float64)]
    whole, _ = mpo_loss(c, r, nll[0] + nll[1], 8, 0.1, 0.05)
    a, _ = mpo_loss(c[:1], r[:1], nll[0], 8, 0.1, 0.05, num_pairs=3)
    b, _ = mpo_loss(c[1:], r[1:], nll[1], 8, 0.1, 0.05, num_pairs=3)
    assert (a + b).item() == pytest.approx(whole.item(), rel=1e-12)
    own_a, _ = mpo_loss(c[:1], r[:1], nll[0], 2, 0.1, 0.05)
    own_b, _ = mpo_loss(c[1:], r[1:], nll[1], 6, 0.1, 0.05)
    assert abs((own_a + own_b).item() / 2 - whole.item()) > 0.1
    with pytest.raises(ValueError, match="pairs and chosen tokens"):
        mpo_loss(c, r, nll[0], 0, 0.1, 0.0)


def test_segment_sums_of_a_packed_row():
    values = torch.tensor([[0.0, -1.0, -2.0, 0.0, -0.5, -0.25, 0.0]], requires_grad=True)
    sums = segment_sums(values, torch.tensor([0, 3, 4, 7], dtype=torch.int32))
    assert sums.tolist() == [-3.0, 0.0, -0.75]
    sums.sum().backward()
    assert values.grad.tolist() == [[1.0] * 7]


# --- preference and RL losses, by hand (math in float64 here: the formulas, not the kernels) ----------


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_dpo_and_bco_by_hand():
    c, r = torch.tensor([2.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    # DPO: -log sigmoid(0.1 * (2 - (-1))) = -log sigmoid(0.3)
    assert dpo_sigmoid_loss(c, r, 0.1).item() == pytest.approx(0.554355, abs=1e-6)
    assert dpo_sigmoid_loss(c, r, 0.1).item() == pytest.approx(-_logsigmoid(0.3), rel=1e-12)
    # BCO: -log sigmoid(0.2 - 0.05) - log sigmoid(-(-0.1 - 0.05))
    assert bco_pair_loss(c, r, 0.1, 0.05).item() == pytest.approx(1.241914, abs=1e-6)
    assert bco_pair_loss(c, r, 0.1, 0.05).item() == pytest.approx(-_logsigmoid(0.15) - _logsigmoid(0.15), rel=1e-12)


def test_mpo_by_hand():
    c = torch.tensor([2.0, -0.5], dtype=torch.float64)
    r = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    loss, parts = mpo_loss(c, r, torch.tensor(6.0, dtype=torch.float64), 4, beta=0.1, delta=0.05)
    dpo = (-_logsigmoid(0.3) - _logsigmoid(-0.1)) / 2
    bco = (-_logsigmoid(0.2 - 0.05) - _logsigmoid(0.1 + 0.05) - _logsigmoid(-0.05 - 0.05) - _logsigmoid(-(0.05 - 0.05))) / 2
    assert parts["dpo"].item() == pytest.approx(dpo, rel=1e-12)
    assert parts["bco"].item() == pytest.approx(bco, rel=1e-12)
    assert parts["sft"].item() == 1.5
    assert loss.item() == pytest.approx(0.8 * dpo + 0.2 * bco + 1.0 * 1.5, rel=1e-12)
    weighted, _ = mpo_loss(c, r, torch.tensor(6.0, dtype=torch.float64), 4, 0.1, 0.05, weights=(1.0, 0.0, 0.0))
    assert weighted.item() == pytest.approx(dpo, rel=1e-12)


def test_grpo_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=torch.float64)  # groups of 3
    # group 1: mean 1/3, unbiased std sqrt(1/3); group 2: all equal -> 0
    std = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)
    got = grpo_advantages(rewards, 3, eps=1e-4)
    expected = [(2 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4), (-1 / 3) / (std + 1e-4), 0.0, 0.0, 0.0]
    assert got.tolist() == pytest.approx(expected, rel=1e-12)
    batch_std = rewards.std().item()  # unbiased over all six: sqrt(4/3 * ... ) computed by torch in float64
    mean = sum(rewards.tolist()) / 6
    assert batch_std == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in rewards.tolist()) / 5), rel=1e-12)
    assert grpo_advantages(rewards, 3, scale="batch").tolist() == pytest.approx(
        [(2 / 3) / (batch_std + 1e-4), (-1 / 3) / (batch_std + 1e-4), (-1 / 3) / (batch_std + 1e-4), 0, 0, 0], rel=1e-12)
    assert grpo_advantages(rewards, 3, scale="none").tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0, 0, 0])
    with pytest.raises(ValueError):
        grpo_advantages(rewards, 4)


def test_grpo_loss_by_hand():
    # two sequences of widths 3 (mask 1,1,0) and 3 (mask 1,1,1); advantages +1 and -2
    logps = torch.tensor([[math.log(1.5), 0.0, 5.0], [math.log(0.5), math.log(1.1), 0.0]], dtype=torch.float64)
    old = torch.zeros_like(logps)
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # ratios: 1.5 (clipped to 1.2, A=+1: min(1.5, 1.2) = 1.2), 1.0; 0.5 (A=-2: min(-1, -0.8*2=-1.6) = -1.6),
    # 1.1 (min(-2.2, -2.2)), 1.0 (-2); per-token loss = -min(...)
    per_token = [[-1.2, -1.0, None], [1.6, 2.2, 2.0]]
    flat = [-1.2, -1.0, 1.6, 2.2, 2.0]
    assert grpo_loss(logps, old, adv, mask).item() == pytest.approx(sum(flat) / 5, rel=1e-12)
    assert grpo_loss(logps, old, adv, mask, aggregation="seq_mean_token_mean").item() == pytest.approx(
        ((-1.2 - 1.0) / 2 + (1.6 + 2.2 + 2.0) / 3) / 2, rel=1e-12)
    assert grpo_loss(logps, old, adv, mask, aggregation="seq_mean_token_sum_norm").item() == pytest.approx(
        sum(flat) / 6, rel=1e-12)
    # epsilon_high 0.6: the 1.5 ratio is no longer clipped
    assert grpo_loss(logps, old, adv, mask, epsilon_high=0.6).item() == pytest.approx((sum(flat) + 1.2 - 1.5) / 5, rel=1e-12)
    # KL (k3) with beta 0.5 against ref = 0: exp(-logp) + logp - 1 per token
    kl = [math.exp(-x) + x - 1 for x in (math.log(1.5), 0.0, math.log(0.5), math.log(1.1), 0.0)]
    assert grpo_loss(logps, old, adv, mask, ref_logps=torch.zeros_like(logps), beta=0.5).item() == pytest.approx(
        (sum(flat) + 0.5 * sum(kl)) / 5, rel=1e-12)
    assert per_token[0][2] is None  # the masked token (logp 5) counts nowhere


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
