"""Greedy / sampled decoding for KeyeForConditionalGeneration, with a KV cache and 3D positions.

The prompt (with its images and videos) runs once; its forward returns the per-sample rope delta
(max position + 1 - length). Every generated token is text, so token number n of a row sits at
position n + delta on all three M-RoPE axes, and each step feeds one token against the cache.
`use_cache=False` recomputes the whole sequence every step (the reference the tests compare to).
Batches may be left-padded (attention_mask 0 on the left).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch


@contextmanager
def _eval_mode(model) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _pick(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_k: int,
    top_p: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    logits = logits.float()
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits / max(temperature, 1e-5)
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop tokens once the mass before them already reaches top_p (the first is always kept)
        drop = probs.cumsum(dim=-1) - probs >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    pixel_values: torch.Tensor | None = None,
    image_grid_thw: torch.Tensor | None = None,
    pixel_values_videos: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Returns (B, L + generated) token ids: the prompt followed by the new tokens.
    Runs in eval mode (no dropout) and gives the model back in the mode it came in."""
    with _eval_mode(model):
        vision = dict(
            pixel_values=pixel_values,
            image_grid_thw=image_grid_thw,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts,
        )
        if eos_token_id is None:
            eos_token_id = model.config.eos_token_id
        eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        eos = torch.tensor(eos_ids, dtype=torch.long, device=input_ids.device)
        pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if eos.numel() else 0)
        batch = input_ids.shape[0]
        sequence = input_ids
        mask = attention_mask
        finished = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)

        out = model(sequence, attention_mask=mask, use_cache=use_cache, logits_to_keep=1, **vision)
        cache, deltas = out.past_key_values, out.rope_deltas
        for _ in range(max_new_tokens):
            token = _pick(out.logits[:, -1], do_sample, temperature, top_k, top_p, generator)
            token = torch.where(finished, torch.full_like(token, pad), token)
            sequence = torch.cat([sequence, token[:, None]], dim=1)
            if mask is not None:
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            finished |= torch.isin(token, eos) if eos.numel() else torch.zeros_like(finished)
            if finished.all():
                break
            if use_cache:
                out = model(
                    token[:, None], attention_mask=mask, past_key_values=cache, use_cache=True, rope_deltas=deltas
                )
            else:
                out = model(sequence, attention_mask=mask, logits_to_keep=1, **vision)
        return sequence
