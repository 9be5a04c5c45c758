"""Losses as plain functions.

The LM loss of a global step is normalised by the number of loss tokens of that whole step (all
data-parallel ranks, all micro-steps), not averaged per sequence or per micro-batch:

    loss = sum over every labelled token of the step of -log p(token) / global_loss_tokens

so a token weighs the same whatever sequence, micro-step or rank it lands in. A rank cannot
compute that quotient alone; it back-propagates its own share, `local_sum / global_loss_tokens`,
for each micro-batch, and the gradients add up across micro-steps (gradient accumulation) and
ranks (the data-parallel reduction) to the gradient of the global loss. DeepSpeed's reduction
averages over ranks (divides by the world size) and, unless told otherwise, scales each
micro-step by 1/gradient_accumulation_steps: the engine multiplies each share by the world size
and calls `backward(..., scale_wrt_gas=False)` (training/engine.py train_step). Every task's loss
works this way, with its own normalisers (pairs for SigLIP and DPO, chosen tokens for MPO's
generation term; training/tasks/base.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # the label of a position without loss (prompts, padding, vision tokens): torch's default


def token_sum_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropy over targets != IGNORE_INDEX, number of such targets as an
    int64 tensor). `targets` are already shifted (targets[i] is what position i predicts). Half
    precision logits are upcast to float32; float32 and float64 stay as they are."""
    logits = logits.reshape(-1, logits.shape[-1])
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = targets.reshape(-1)
    total = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    return total, (targets != IGNORE_INDEX).sum()


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-target next-token cross-entropy (N,) of (N, vocab) logits and N targets, all kept;
    half precision logits upcast to float32 as in `token_sum_cross_entropy`."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits, targets, reduction="none")


# --- SigLIP (vit_pretrain) ------------------------------------------------------------------------


def siglip_logits(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """(n, n) pair logits exp(t') * <x_i, y_j> + b of L2-normalised embeddings, in fp32.
    `logit_scale` is t' (log temperature; SigLIP starts it at log 10), `logit_bias` is b (-10)."""
    x = F.normalize(image_emb.float(), dim=-1)
    y = F.normalize(text_emb.float(), dim=-1)
    return logit_scale.float().exp() * (x @ y.T) + logit_bias.float()


def siglip_sigmoid_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """SigLIP's sigmoid loss (Zhai et al. 2023) as (sum over the batch's rows, number of pairs n):

        sum / n = -1/n * sum_i sum_j log sigmoid(z_ij * (exp(t') * <x_i, y_j> + b))

    with z_ii = +1 (image i and its own caption) and z_ij = -1 otherwise. Every pair is an
    independent binary problem, so no softmax over the batch: the sum over a rank's rows can be
    added across ranks and micro-steps and divided by the global pair count, like the LM's token
    sums (see the module docstring). Negatives are the other captions of the same batch."""
    n = image_emb.shape[0]
    if text_emb.shape[0] != n:
        raise ValueError(f"{n} image embeddings but {text_emb.shape[0]} text embeddings")
    logits = siglip_logits(image_emb, text_emb, logit_scale, logit_bias)
    signs = 2 * torch.eye(n, device=logits.device) - 1  # +1 on the diagonal, -1 elsewhere
    return -F.logsigmoid(signs * logits).sum(), n


# --- per-sample sums of a packed row ----------------------------------------------------------------


def segment_sums(values: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Sums of a packed row's per-token values (1, total) or (total,) over each sample's span of
    `cu_seqlens`: (samples,), differentiable. How a response's summed log-probability is read off a
    packed forward (the model's `token_logps` are 0 where a position has no target)."""
    flat = values.reshape(-1)
    bounds = cu_seqlens.to(flat.device).long()
    sample_of = torch.repeat_interleave(torch.arange(len(bounds) - 1, device=flat.device), bounds.diff())
    return flat.new_zeros(len(bounds) - 1).index_add(0, sample_of, flat)


# --- preference optimisation (mpo, iterative_alignment) ---------------------------------------------
# A logratio is log pi(response | prompt) - log pi_ref(response | prompt), each the summed
# log-probability of the response's tokens. Results are per pair, so a step can normalise them
# over all of its pairs (every rank, every micro-step) the way LM token sums are normalised.


def dpo_sigmoid_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO (Rafailov et al. 2023), per pair: -log sigmoid(beta * (chosen - rejected))."""
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))


def bco_pair_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, beta: float,
                  delta: float | torch.Tensor) -> torch.Tensor:
    """BCO's pairwise form (Jung et al. 2024; MPO's quality term), per pair: each response is a
    binary classification around the running reward shift `delta`:
    -log sigmoid(beta * chosen - delta) - log sigmoid(-(beta * rejected - delta))."""
    return -F.logsigmoid(beta * chosen_logratios - delta) - F.logsigmoid(-(beta * rejected_logratios - delta))


def mpo_loss(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, chosen_nll_sum: torch.Tensor,
             chosen_tokens: int | torch.Tensor, beta: float, delta: float | torch.Tensor,
             weights: tuple[float, float, float] = (0.8, 0.2, 1.0), *,
             num_pairs: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MPO (InternVL, Wang et al. 2024): w0 * mean(DPO) + w1 * mean(BCO) + w2 * generation, the
    generation term being the chosen responses' token-mean negative log-likelihood
    (chosen_nll_sum / chosen_tokens). Returns (loss, {"dpo", "bco", "sft"}: each term unweighted).

    `num_pairs` (keyword only): divide the pair sums by the pairs of the whole step instead of this
    call's own count; with `chosen_tokens` the step's chosen tokens as well, each rank's micro-step
    returns its share and the shares add up to the loss of the step (see the module docstring)."""
    pairs = chosen_logratios.numel() if num_pairs is None else num_pairs
    if pairs <= 0 or float(chosen_tokens) <= 0:
        raise ValueError(f"mpo_loss needs pairs and chosen tokens, got {pairs} and {chosen_tokens}")
    parts = {
        "dpo": dpo_sigmoid_loss(chosen_logratios, rejected_logratios, beta).sum() / pairs,
        "bco": bco_pair_loss(chosen_logratios, rejected_logratios, beta, delta).sum() / pairs,
        "sft": chosen_nll_sum / chosen_tokens,
    }
    w_dpo, w_bco, w_sft = weights
    return w_dpo * parts["dpo"] + w_bco * parts["bco"] + w_sft * parts["sft"], parts


# --- GRPO (rl) --------------------------------------------------------------------------------------


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages: rewards flat, each prompt's `group_size` rollouts consecutive;
    r - the group's mean, divided by the group's unbiased std + eps ("group", GRPO), by the std of
    all rewards + eps ("batch"), or not at all ("none", Dr. GRPO). A group of equal rewards gets 0."""
    if group_size < 2 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not make groups of {group_size} (at least 2)")
    groups = rewards.reshape(-1, group_size).to(torch.promote_types(rewards.dtype, torch.float32))
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (groups.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        centred = centred / (groups.reshape(-1).std() + eps)
    elif scale != "none":
        raise ValueError(f"scale must be group, batch or none, got {scale!r}")
    return centred.reshape(-1)


GRPO_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              epsilon: float = 0.2, epsilon_high: float | None = None, ref_logps: torch.Tensor | None = None,
              beta: float = 0.0, aggregation: str = "token_mean", *, normaliser: float | None = None) -> torch.Tensor:
    """The clipped policy-gradient loss of GRPO over (sequences, tokens) log-probs, per token
    -min(ratio * A, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A), ratio = exp(logps - old_logps),
    plus beta * (exp(ref - logps) - (ref - logps) - 1) (the k3 KL estimate) when beta > 0; then
    aggregated over the masked tokens: "token_mean" (masked sum / mask sum),
    "seq_mean_token_mean" (mean over sequences of each one's token mean) or
    "seq_mean_token_sum_norm" (masked sum / (sequences x mask width), Dr. GRPO).

    `normaliser` (keyword only): the step's count instead of this call's (its masked tokens for
    token_mean, its sequences for seq_mean_token_mean, sequences x width for the third), so that
    the calls of a step's micro-steps and ranks add up to the loss of the whole step."""
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    high = epsilon if epsilon_high is None else epsilon_high
    adv = advantages.reshape(-1, 1).to(logps.dtype)
    per_token = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - epsilon, 1 + high) * adv)
    if beta > 0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        diff = ref_logps - logps
        per_token = per_token + beta * (torch.exp(diff) - diff - 1)
    if aggregation == "token_mean":
        return (per_token * mask).sum() / (normaliser if normaliser is not None else mask.sum().clamp(min=1))
    if aggregation == "seq_mean_token_mean":
        per_sequence = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_sequence.sum() / (normaliser if normaliser is not None else mask.shape[0])
    if aggregation == "seq_mean_token_sum_norm":
        return (per_token * mask).sum() / (normaliser if normaliser is not None else mask.shape[0] * mask.shape[1])
    raise ValueError(f"aggregation must be one of {GRPO_AGGREGATIONS}, got {aggregation!r}")
