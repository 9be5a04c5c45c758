"""Rotary position embeddings: 2D RoPE of the ViT and 3D (M-RoPE) positions of the LLM.

LLM positions, one (t, h, w) triple per token (the rule of the released `get_rope_index`):

* text advances all three ids by one;
* a vision block (the run of `<|image_pad|>` or `<|video_pad|>` tokens) starts at `s`, the id the
  first pad token would have had as text; merged token (k, row, col) gets
  (s + t_k, s + row, s + col), with t_k = 0 for images and, for sampled video frame k,
  t_k = int(k * seconds_per_frame * tokens_per_second) computed in float32 and truncated
  (`.long()`), exactly as the released code does;
* text after a block continues at max(all ids so far) + 1.

The rope delta of a sample is max(id) + 1 - length: during cached generation token number n (0-based,
counting the prompt) sits at id n + delta on all three axes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def _as_triples(grid_thw: torch.Tensor | Sequence | None) -> list[tuple[int, int, int]]:
    if grid_thw is None:
        return []
    if isinstance(grid_thw, torch.Tensor):
        grid_thw = grid_thw.tolist()
    return [tuple(int(v) for v in g) for g in grid_thw]


def sample_position_ids(
    input_ids: Sequence[int] | torch.Tensor,
    image_grids: Iterator[tuple[int, int, int]],
    video_grids: Iterator[tuple[tuple[int, int, int], float]],
    *,
    image_token_id: int,
    video_token_id: int,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
) -> tuple[torch.Tensor, int]:
    """3D position ids (3, L) and the rope delta of ONE sample.

    `image_grids` / `video_grids` are iterators consumed in order of appearance; a video item is
    ((t, h, w), seconds_per_frame). Grids are in patches (before the 2x2 merge).
    """
    ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
    length = len(ids)
    pieces: list[torch.Tensor] = []
    next_id = 0  # id the next text token gets
    pos = 0
    while pos < length:
        # the next vision block
        block_start = next((i for i in range(pos, length) if ids[i] in (image_token_id, video_token_id)), length)
        if block_start > pos:  # text run
            run = block_start - pos
            pieces.append(torch.arange(next_id, next_id + run).expand(3, run))
            next_id += run
            pos = block_start
        if pos >= length:
            break
        token = ids[pos]
        if token == image_token_id:
            try:
                t, h, w = next(image_grids)
            except StopIteration:
                raise ValueError("more image blocks in input_ids than image grids") from None
            seconds_per_frame = 0.0
        else:
            try:
                (t, h, w), seconds_per_frame = next(video_grids)
            except StopIteration:
                raise ValueError("more video blocks in input_ids than video grids") from None
        gh, gw = h // spatial_merge_size, w // spatial_merge_size
        count = t * gh * gw
        block = ids[pos : pos + count]
        if len(block) != count or any(tok != token for tok in block):
            raise ValueError(
                f"vision block at token {pos} should be {count} pad tokens (grid {t}x{h}x{w}), "
                f"found {sum(tok == token for tok in block)}"
            )
        # float32 product then truncation, as the released get_rope_index (`.long()`)
        t_index = (torch.arange(t).view(-1, 1) * seconds_per_frame * tokens_per_second).long()
        t_index = t_index.expand(t, gh * gw).flatten()
        h_index = torch.arange(gh).view(1, -1, 1).expand(t, gh, gw).flatten()
        w_index = torch.arange(gw).view(1, 1, -1).expand(t, gh, gw).flatten()
        block_ids = torch.stack([t_index, h_index, w_index]) + next_id
        pieces.append(block_ids)
        next_id = int(block_ids.max()) + 1
        pos += count
    positions = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long)
    delta = (int(positions.max()) + 1 - length) if length else 0
    return positions, delta


def get_rope_index(
    input_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | Sequence | None = None,
    video_grid_thw: torch.Tensor | Sequence | None = None,
    second_per_grid_ts: torch.Tensor | Sequence[float] | None = None,
    *,
    image_token_id: int,
    video_token_id: int,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
    attention_mask: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids (3, B, L) and rope deltas (num_samples, 1) for a batch or a packed row.

    Samples are the rows of `input_ids` (padding marked by `attention_mask` == 0 gets id 1, as the
    released code) or, when `cu_seqlens` is given, the segments of the single packed row. Images and
    videos are assigned to blocks in order of appearance across the whole batch.
    """
    images = iter(_as_triples(image_grid_thw))
    videos_grids = _as_triples(video_grid_thw)
    if second_per_grid_ts is None:
        second_per_grid_ts = [1.0] * len(videos_grids)  # the released default
    elif isinstance(second_per_grid_ts, torch.Tensor):
        second_per_grid_ts = second_per_grid_ts.tolist()
    videos = iter(list(zip(videos_grids, [float(s) for s in second_per_grid_ts])))
    kwargs = dict(
        image_token_id=image_token_id,
        video_token_id=video_token_id,
        spatial_merge_size=spatial_merge_size,
        tokens_per_second=tokens_per_second,
    )
    batch, length = input_ids.shape
    position_ids = torch.ones(3, batch, length, dtype=torch.long)
    deltas = []
    if cu_seqlens is not None:
        if batch != 1:
            raise ValueError("cu_seqlens needs a single packed row (1, total)")
        bounds = [int(b) for b in (cu_seqlens.tolist() if isinstance(cu_seqlens, torch.Tensor) else cu_seqlens)]
        for start, end in zip(bounds[:-1], bounds[1:]):
            pos, delta = sample_position_ids(input_ids[0, start:end], images, videos, **kwargs)
            position_ids[:, 0, start:end] = pos
            deltas.append(delta)
    else:
        for row in range(batch):
            keep = attention_mask[row].bool() if attention_mask is not None else torch.ones(length, dtype=torch.bool)
            pos, delta = sample_position_ids(input_ids[row][keep], images, videos, **kwargs)
            position_ids[:, row, keep] = pos
            # delta relative to the padded row length, so `n + delta` holds for cached decoding
            deltas.append(int(pos.max()) + 1 - length if pos.numel() else 0)
    for leftover, what in ((images, "image"), (videos, "video")):
        if next(leftover, None) is not None:
            raise ValueError(f"more {what} grids than {what} blocks in input_ids")
    deltas = torch.tensor(deltas, dtype=torch.long, device=input_ids.device).view(-1, 1)
    return position_ids.to(input_ids.device), deltas


class MultimodalRotaryEmbedding(torch.nn.Module):
    """cos/sin of M-RoPE: frequency i of the head takes the t, h or w id by `mrope_section`.

    With sections [16, 24, 24] (head_dim 128) the 64 frequencies split into 16 temporal, 24 height
    and 24 width ones; the result is the (cos, sin) pair transformers' Qwen3 attention applies with
    `rotate_half`, so M-RoPE needs no change in the attention itself.
    """

    def __init__(self, head_dim: int, theta: float, mrope_section: Sequence[int]):
        super().__init__()
        if sum(mrope_section) != head_dim // 2:
            raise ValueError(f"mrope_section {list(mrope_section)} must sum to head_dim/2 = {head_dim // 2}")
        # Plain attributes, not buffers: the tables are recomputed in fp32 on every call, so they
        # survive meta-device construction (from_pretrained) and model.to(bfloat16) unchanged.
        self.head_dim, self.theta, self.mrope_section = head_dim, float(theta), list(mrope_section)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids (3, B, L) -> cos, sin (B, L, head_dim)."""
        device = position_ids.device
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, device=device).float() / self.head_dim))
        freqs = position_ids[..., None].float() * inv_freq  # (3, B, L, hd/2)
        axis = torch.cat(
            [torch.full((n,), i, dtype=torch.long, device=device) for i, n in enumerate(self.mrope_section)]
        )
        freqs = freqs.gather(0, axis.view(1, 1, 1, -1).expand(1, *freqs.shape[1:])).squeeze(0)
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class VisionRotaryEmbedding(torch.nn.Module):
    """2D RoPE of the ViT: half of each head's rotary frequencies see the patch row, half the column.

    With head_dim D the rotary table has D/4 frequencies (base `theta`) per axis; a patch at (row,
    col) gets angles [row * f, col * f], duplicated for the rotate_half convention. Every frame of a
    video uses the same (row, col) ids: time is not encoded inside the ViT.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.dim, self.theta = head_dim // 2, float(theta)  # not buffers: see MultimodalRotaryEmbedding

    @torch.no_grad()
    def forward(
        self, grid_thw: Sequence[tuple[int, int, int]], dtype: torch.dtype, device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = [], []
        for t, h, w in grid_thw:
            rows.append(torch.arange(h, device=device).view(1, h, 1).expand(t, h, w).flatten())
            cols.append(torch.arange(w, device=device).view(1, 1, w).expand(t, h, w).flatten())
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.dim, 2, device=device).float() / self.dim))
        angles = torch.cat(
            [torch.cat(rows)[:, None].float() * inv_freq, torch.cat(cols)[:, None].float() * inv_freq], dim=-1
        )
        emb = torch.cat([angles, angles], dim=-1)  # (num_patches, head_dim)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)
