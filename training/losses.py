"""Losses as plain functions.

The LM loss of a global step is normalised by the number of loss tokens of that whole step (all
data-parallel ranks, all micro-steps), not averaged per sequence or per micro-batch:

    loss = sum over every labelled token of the step of -log p(token) / global_loss_tokens

so a token weighs the same whatever sequence, micro-step or rank it lands in. A rank cannot
compute that quotient alone; it back-propagates its own share, `local_sum / global_loss_tokens`,
for each micro-batch, and the gradients add up across micro-steps (gradient accumulation) and
ranks (the data-parallel reduction) to the gradient of the global loss. DeepSpeed's reduction
averages over ranks (divides by the world size) and, unless told otherwise, scales each
micro-step by 1/gradient_accumulation_steps: `micro_step_loss` multiplies the world size back in,
and the engine calls `backward(..., scale_wrt_gas=False)`.
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


def sum_from_mean(mean_loss: torch.Tensor, count: int | torch.Tensor) -> torch.Tensor:
    """The token sum back from a mean over `count` tokens (the model returns the mean and the count)."""
    return mean_loss * float(count)


def micro_step_loss(local_sum: torch.Tensor, global_loss_tokens: int, world_size: int = 1) -> torch.Tensor:
    """What one micro-step back-propagates: its share of the global loss, times the world size
    because the data-parallel reduction averages gradients over ranks (see the module docstring)."""
    if global_loss_tokens <= 0:
        raise ValueError(f"a step needs loss tokens, got global_loss_tokens={global_loss_tokens}")
    return local_sum * (world_size / global_loss_tokens)


def global_count(local: int, group=None) -> int:
    """Sum of an integer over all ranks (itself without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return int(local)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else "cpu"
    value = torch.tensor([int(local)], dtype=torch.int64, device=device)
    dist.all_reduce(value, group=group)
    return int(value.item())


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
