"""Attention over packed sequences: many samples (or images) in one row, never attending across.

Segments are given by `cu_seqlens` (int32 offsets [0, l0, l0+l1, ...], the flash-attn convention).
On CUDA with flash-attn installed and a half-precision dtype we call `flash_attn_varlen_func`;
everywhere else we run PyTorch SDPA once per segment, which does exactly the arithmetic of running
each segment alone (that is what makes packed-vs-unpacked logits equal on CPU).

`keye_varlen_attention` is registered in transformers' AttentionInterface so the reused Qwen3
attention layers call it: with `cu_seqlens` it is packed causal attention, without it plain SDPA
with the boolean mask the model built (padding + causal offset for a KV cache).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

try:  # optional: only on CUDA machines with flash-attn built
    from flash_attn import flash_attn_varlen_func
except Exception:  # ImportError, or a broken CUDA build: fall back to SDPA
    flash_attn_varlen_func = None


def flash_available(tensor: torch.Tensor) -> bool:
    return flash_attn_varlen_func is not None and tensor.is_cuda and tensor.dtype in (torch.float16, torch.bfloat16)


def _expand_kv(x: torch.Tensor, num_heads: int, head_axis: int) -> torch.Tensor:
    """Repeat grouped key/value heads up to the query head count (GQA)."""
    groups = num_heads // x.shape[head_axis]
    return x if groups == 1 else x.repeat_interleave(groups, dim=head_axis)


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor,
    *,
    causal: bool,
    scale: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """q (total, H, D), k/v (total, Hkv, D) -> (total, H, D); attention stays inside each segment.

    Keep `cu_seqlens` on the CPU where you can: the segment lengths are read on the host."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    if flash_available(q):
        offsets = cu_seqlens.to(device=q.device, dtype=torch.int32)
        max_len = max(lengths)
        return flash_attn_varlen_func(
            q, k, v, offsets, offsets, max_len, max_len, dropout_p=dropout, softmax_scale=scale, causal=causal
        )
    num_heads = q.shape[1]
    outputs = []
    for qs, ks, vs in zip(q.split(lengths), k.split(lengths), v.split(lengths)):
        out = F.scaled_dot_product_attention(
            qs.transpose(0, 1),
            _expand_kv(ks, num_heads, 1).transpose(0, 1),
            _expand_kv(vs, num_heads, 1).transpose(0, 1),
            is_causal=causal,
            scale=scale,
            dropout_p=dropout,
        )
        outputs.append(out.transpose(0, 1))
    return torch.cat(outputs, dim=0)


def keye_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seqlens: torch.Tensor | None = None,
    **_: object,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface signature: query (B, H, Lq, D), key/value (B, Hkv, Lk, D);
    returns (B, Lq, H, D)."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    if cu_seqlens is not None:
        if query.shape[0] != 1 or query.shape[2] != key.shape[2]:
            raise ValueError("packed attention (cu_seqlens) needs one row and no KV cache")
        out = varlen_attention(
            query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), cu_seqlens,
            causal=True, scale=scale, dropout=dropout,
        )
        return out.unsqueeze(0), None
    num_heads = query.shape[1]
    key, value = _expand_kv(key, num_heads, 1), _expand_kv(value, num_heads, 1)
    # No mask: a fresh causal block (Lq == Lk) or one new token that sees the whole cache.
    is_causal = attention_mask is None and query.shape[2] == key.shape[2] and query.shape[2] > 1
    if attention_mask is None and query.shape[2] not in (1, key.shape[2]):
        raise ValueError("several new tokens after a KV cache need an explicit causal mask")
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, is_causal=is_causal, scale=scale, dropout_p=dropout
    )
    return out.transpose(1, 2), None


AttentionInterface.register("keye_varlen", keye_varlen_attention)
