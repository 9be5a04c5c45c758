"""The vision tower: SigLIP-so400m layout, native resolution, packed over many images and videos.

Parameter names follow the released checkpoint (`visual.vision_model.…`), which is also the layout
of transformers' `SiglipVisionModel`, so a SigLIP checkpoint copies in name for name.

What differs from SigLIP: patches of any grid (h, w) instead of a fixed 27x27, so the learned
27x27 position table is bilinearly resized to each grid; 2D RoPE on (row, column) in every
attention layer; all images of a batch run as one packed sequence with block-diagonal attention.
`packing_position_embedding` and the attention-pooling `head` are kept for checkpoint
compatibility; the released forward does not use them and neither do we.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.siglip.modeling_siglip import SiglipMLP, SiglipMultiheadAttentionPoolingHead

from .attention import varlen_attention
from .configuration import KeyeVisionConfig
from .rope import VisionRotaryEmbedding, rotate_half

PACKING_POSITIONS = 32768  # rows of the (unused) packing_position_embedding in the release


class KeyeVisionEmbeddings(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.config = config
        self.patch_size = config.patch_size
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.table_side = config.image_size // config.patch_size  # 27 for 384 / 14
        self.position_embedding = nn.Embedding(self.table_side**2, config.hidden_size)
        self.packing_position_embedding = nn.Embedding(PACKING_POSITIONS, config.hidden_size)

    def resized_position_table(self, height: int, width: int) -> torch.Tensor:
        """The learned side x side table resized (bilinear, align_corners=False) to a h x w grid."""
        side = self.table_side
        # through the module's forward (not .weight) so ZeRO-3 hooks gather the partitioned table
        ids = torch.arange(side * side, device=self.position_embedding.weight.device)
        table = self.position_embedding(ids)
        grid = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        if (height, width) != (side, side):
            grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(height * width, -1)

    def forward(self, pixel_values: torch.Tensor, grid_thw: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """pixel_values (num_patches, C*p*p), patches row-major per frame -> (num_patches, hidden)."""
        weight = self.patch_embedding.weight
        patches = pixel_values.to(weight.dtype).view(-1, self.config.num_channels, self.patch_size, self.patch_size)
        embeddings = self.patch_embedding(patches).flatten(1)
        positions = [self.resized_position_table(h, w).repeat(t, 1) for t, h, w in grid_thw]
        return embeddings + torch.cat(positions, dim=0)


class KeyeVisionAttention(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        dim = config.hidden_size
        # registration order k, v, q, out: the order of the released state dict
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        total = hidden_states.shape[0]
        shape = (total, self.num_heads, self.head_dim)
        q = self.q_proj(hidden_states).view(shape)
        k = self.k_proj(hidden_states).view(shape)
        v = self.v_proj(hidden_states).view(shape)
        cos, sin = (x.unsqueeze(1) for x in rope)  # broadcast over heads
        # rotate in fp32 for bf16 stability, as the released code does
        q = (q.float() * cos + rotate_half(q.float()) * sin).to(v.dtype)
        k = (k.float() * cos + rotate_half(k.float()) * sin).to(v.dtype)
        out = varlen_attention(
            q, k, v, cu_seqlens, causal=False, scale=self.scale, dropout=self.dropout if self.training else 0.0
        )
        return self.out_proj(out.reshape(total, -1))


class KeyeVisionBlock(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with GELU-tanh."""

    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = KeyeVisionAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def forward(
        self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        hidden_states = hidden_states + self.self_attn(self.layer_norm1(hidden_states), cu_seqlens, (cos, sin))
        return hidden_states + self.mlp(self.layer_norm2(hidden_states))


class KeyeVisionEncoder(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.layers = nn.ModuleList([KeyeVisionBlock(config) for _ in range(config.num_hidden_layers)])


class KeyeVisionTransformer(nn.Module):
    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.config = config
        self.embeddings = KeyeVisionEmbeddings(config)
        self.encoder = KeyeVisionEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = SiglipMultiheadAttentionPoolingHead(config)  # kept for the checkpoint, unused
        # Never run, so frozen: data-parallel wrappers need no unused-parameter search for them.
        for param in [*self.head.parameters(), *self.embeddings.packing_position_embedding.parameters()]:
            param.requires_grad_(False)
        self.rotary = VisionRotaryEmbedding(config.head_dim)

    def forward(self, pixel_values: torch.Tensor, grid_thw: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        """Packed patches of several images/videos -> per-patch features (num_patches, hidden).

        Attention rule: one segment per `grid_thw` entry. An image attends within itself; all
        frames of one video form ONE segment and attend to each other (the released code passes
        cu_seqlens per t*h*w item), while different images/videos never see each other.
        """
        grid_thw = [tuple(int(v) for v in g) for g in grid_thw]
        sizes = [t * h * w for t, h, w in grid_thw]
        if sum(sizes) != pixel_values.shape[0]:
            raise ValueError(f"grids cover {sum(sizes)} patches but pixel_values has {pixel_values.shape[0]}")
        cu_seqlens = F.pad(torch.tensor(sizes).cumsum(0), (1, 0)).to(torch.int32)  # on the host: see varlen_attention
        hidden_states = self.embeddings(pixel_values, grid_thw)
        cos, sin = self.rotary(grid_thw, torch.float32, hidden_states.device)
        for layer in self.encoder.layers:
            hidden_states = layer(hidden_states, cu_seqlens, cos, sin)
        return self.post_layernorm(hidden_states)


class KeyeVisionModel(nn.Module):
    """`visual` of the released checkpoint: a wrapper whose only child is `vision_model`."""

    def __init__(self, config: KeyeVisionConfig):
        super().__init__()
        self.vision_model = KeyeVisionTransformer(config)

    def forward(self, pixel_values: torch.Tensor, grid_thw: Sequence[tuple[int, int, int]]) -> torch.Tensor:
        return self.vision_model(pixel_values, grid_thw)
