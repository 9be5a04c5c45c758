"""`mlp_AR`: vision features -> LLM embeddings.

LayerNorm(vision hidden) on every patch, then each 2x2 block of neighbouring patches becomes one
vector (4 x hidden, in the order top-left, top-right, bottom-left, bottom-right), then
Linear -> GELU -> Linear to the LLM width. The merged tokens come out row-major over the merged
grid, frame after frame: the order of the `<|image_pad|>` / `<|video_pad|>` tokens they replace.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class KeyeProjector(nn.Module):
    def __init__(self, vision_hidden: int, text_hidden: int, merge_size: int = 2):
        super().__init__()
        self.merge_size = merge_size
        merged = vision_hidden * merge_size * merge_size
        self.pre_norm = nn.LayerNorm(vision_hidden, eps=1e-5)
        self.linear_1 = nn.Linear(merged, merged)
        self.act = nn.GELU()  # exact (erf) GELU, as the release
        self.linear_2 = nn.Linear(merged, text_hidden)

    def forward(self, features: torch.Tensor, grid_thw: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """features (num_patches, vision_hidden), patches row-major per frame -> (num_merged, text_hidden)."""
        m = self.merge_size
        features = self.pre_norm(features)
        merged = []
        start = 0
        for t, h, w in grid_thw:
            block = features[start : start + t * h * w]
            start += t * h * w
            block = block.view(t, h // m, m, w // m, m, -1).permute(0, 1, 3, 2, 4, 5)
            merged.append(block.reshape(t * (h // m) * (w // m), -1))
        return self.linear_2(self.act(self.linear_1(torch.cat(merged, dim=0))))
