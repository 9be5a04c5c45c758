"""Forward FLOPs of a sample and of a packed sequence, for balancing work across ranks.

The balancer needs relative costs that track step time, not an exact FLOP count, but the formula
follows the model's structure so that it stays right as the mix changes:

ViT (one item = one image or one whole video, patch grid (t, h, w), P = t*h*w patches):
    linear  2 * P * (C*p*p*D                      patch embedding, C channels, p x p pixels
                     + L_v * (4*D*D + 2*D*I))      per layer: q, k, v, o projections + fc1, fc2
    attn    L_v * 4 * P^2 * D                      per layer: Q K^T (2 P^2 D) + A V (2 P^2 D); an
                                                   item is one bidirectional varlen segment (all
                                                   frames of a video attend to each other), so the
                                                   quadratic term is per item, never per batch
Projector (P/m^2 merged tokens, m = 2):
            2 * (P/m^2) * (m^2*D * m^2*D + m^2*D * H)
LLM (one sample = text tokens + merged vision tokens, S tokens; samples in a packed sequence only
attend within themselves):
    linear  2 * S * (L * (H*Q + 2*H*K + Q*H + 3*H*F) + H*V)
                                                   q (Q = heads*head_dim), k and v (K = kv_heads *
                                                   head_dim), o, gated MLP (gate, up, down), and
                                                   lm_head on every position
    attn    L * 4 * S^2 * Q * c                    c = 1/2 for causal attention: a causal kernel
                                                   skips the masked half

2 FLOPs per multiply-add; norms, activations, RoPE and softmax are a few FLOPs per element and left
out. Backward is about twice the forward for every trained part, so a training step is ~3x these
numbers; the constant does not change an assignment. (A stage that freezes the ViT skips its
backward: scale `vit` there if that matters.) The 2*S*params term is linear in tokens, the
attention terms quadratic per segment: that is why two packed sequences with the same token count
can differ several-fold in cost (one 24k-token video vs. many short captions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from curation import schema


@dataclass(frozen=True)
class ModelDims:
    """Dimensions that set the cost; defaults are Keye-VL-8B (SigLIP-400M ViT, Qwen3-8B)."""

    vit_hidden: int = 1152
    vit_layers: int = 27
    vit_intermediate: int = 4304
    patch_size: int = 14
    in_channels: int = 3
    merge_size: int = 2
    llm_hidden: int = 4096
    llm_layers: int = 36
    llm_intermediate: int = 12288
    llm_heads: int = 32
    llm_kv_heads: int = 8
    llm_head_dim: int = 128
    vocab_size: int = 151936
    causal_llm: bool = True


KEYE_VL_8B = ModelDims()


@dataclass(frozen=True)
class SampleShape:
    """What the cost depends on: LLM text tokens (everything that is not a merged vision token,
    special tokens included) and the patch grid (t, h, w) of each image or video."""

    text_tokens: int
    grids: tuple[tuple[int, int, int], ...] = field(default=())

    def llm_tokens(self, dims: ModelDims = KEYE_VL_8B) -> int:
        """Tokens the LLM sees: text plus merged vision tokens (patches / merge^2)."""
        return self.text_tokens + sum(t * h * w for t, h, w in self.grids) // dims.merge_size**2


def vit_flops(grid: Sequence[int], dims: ModelDims = KEYE_VL_8B) -> float:
    """ViT + projector forward FLOPs of one image or video with patch grid (t, h, w)."""
    t, h, w = grid
    patches = t * h * w
    d, i, m2 = dims.vit_hidden, dims.vit_intermediate, dims.merge_size**2
    embed = dims.in_channels * dims.patch_size**2 * d
    linear = 2 * patches * (embed + dims.vit_layers * (4 * d * d + 2 * d * i))
    attention = dims.vit_layers * 4 * patches**2 * d
    merged = patches // m2
    projector = 2 * merged * (m2 * d * m2 * d + m2 * d * dims.llm_hidden)
    return float(linear + attention + projector)


def llm_flops(tokens: int, dims: ModelDims = KEYE_VL_8B) -> float:
    """LLM forward FLOPs of one sample of `tokens` tokens (its own attention segment)."""
    h, q = dims.llm_hidden, dims.llm_heads * dims.llm_head_dim
    kv = dims.llm_kv_heads * dims.llm_head_dim
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * dims.llm_intermediate
    linear = 2 * tokens * (dims.llm_layers * per_layer + h * dims.vocab_size)
    attention = dims.llm_layers * 4 * tokens**2 * q * (0.5 if dims.causal_llm else 1.0)
    return float(linear + attention)


def sample_flops(sample: SampleShape, dims: ModelDims = KEYE_VL_8B) -> float:
    """Forward FLOPs of one sample: its images/videos through ViT + projector, its tokens through the LLM."""
    return sum(vit_flops(g, dims) for g in sample.grids) + llm_flops(sample.llm_tokens(dims), dims)


def sequence_flops(samples: Iterable[SampleShape], dims: ModelDims = KEYE_VL_8B) -> float:
    """Forward FLOPs of a packed sequence: samples are separate attention segments, so costs add."""
    return sum(sample_flops(s, dims) for s in samples)


# --- shapes from contract rows (metadata only: no decoding) -------------------------------------


def image_grid(height: int, width: int) -> tuple[int, int, int]:
    """Patch grid (1, h, w) of an image after smart_resize (the processor's rule)."""
    h, w = schema.smart_resize(height, width)
    return (1, h // schema.PATCH_SIZE, w // schema.PATCH_SIZE)


def video_grid(height: int, width: int, frames: int) -> tuple[int, int, int]:
    """Patch grid (t, h, w) of a video of `frames` sampled frames: the rule of
    `schema.video_tokens` (an even frame count in [4, 192], 128..768 merged tokens per frame, at
    most 24576 per video), returning the grid instead of the token total."""
    f2 = schema.FACTOR**2
    n = max(
        schema.VIDEO_MIN_FRAMES,
        min(frames, schema.VIDEO_MAX_FRAMES, schema.VIDEO_MAX_TOKENS // schema.VIDEO_FRAME_MIN_TOKENS),
    )
    n -= n % 2
    while True:
        cap = max(schema.VIDEO_FRAME_MIN_TOKENS, min(schema.VIDEO_FRAME_MAX_TOKENS, schema.VIDEO_MAX_TOKENS // n))
        h, w = schema.smart_resize(height, width, min_pixels=schema.VIDEO_FRAME_MIN_TOKENS * f2, max_pixels=cap * f2)
        if (h // schema.FACTOR) * (w // schema.FACTOR) * n <= schema.VIDEO_MAX_TOKENS or n <= schema.VIDEO_MIN_FRAMES:
            return (n, h // schema.PATCH_SIZE, w // schema.PATCH_SIZE)
        n -= 2


def sample_shape(row: Mapping) -> SampleShape:
    """A contract row's shape from its metadata alone (image sizes, frame counts, est_tokens; no
    decoding), for costing before the Processor runs. Grids follow the image/video references in
    `messages`, as `schema.estimate_tokens` counts them; text tokens are what est_tokens holds
    beyond the merged vision tokens. After the Processor, build SampleShape from its real token
    count and grid_thw instead."""
    grids = []
    for message in row["messages"] or ():
        for part in message["content"] or ():
            if part["type"] not in ("image", "video"):
                continue
            item = (row["images"] if part["type"] == "image" else row["videos"])[part["index"]]
            if not (item["width"] and item["height"]):
                continue
            try:
                if part["type"] == "image":
                    grids.append(image_grid(item["height"], item["width"]))
                else:
                    grids.append(video_grid(item["height"], item["width"], len(item["frames"])))
            except ValueError:  # extreme aspect ratio: estimate_tokens skips it too
                continue
    vision = sum(t * h * w for t, h, w in grids) // schema.MERGE_SIZE**2
    return SampleShape(max(0, int(row["est_tokens"]) - vision), tuple(grids))
