"""Training FLOPs of a vit_pretrain batch, for the engine's MFU: 3 x forward (backward ~ 2 x forward).

Forward, 2 FLOPs per multiply-add, norms and activations left out (as training/data/cost.py):

ViT per image, grid (t, h, w), P patches, width D, MLP width I:
    encoder   cost.vit_flops without its projector term (vit_pretrain has no projector)
    pooling   the attention-pooling head, one probe query over P keys:
              k, v projections 2*P*2*D*D, scores + weighted sum 4*P*D, q and out projections
              2*2*D*D, its MLP on one token 2*2*D*I
    projection 2*D*E when the ViT width D differs from the shared width E
Text tower per caption of T real tokens (caption + end token), width H, MLP width J, L layers:
    linear    2*T*L*(4*H*H + 2*H*J), and the head on the pooled token 2*H*E
    attention L * 4*T^2*H (bidirectional)
    Only real tokens count: the fixed-length padding is computed but is not useful model work,
    so, as for the LM, it lowers MFU instead of raising it.
Loss: the n x n similarity matrix, 2*n*n*E.
"""

from __future__ import annotations

from collections.abc import Sequence

from training.data.cost import ModelDims, vit_flops


def _vit_dims(vision) -> ModelDims:
    return ModelDims(
        vit_hidden=vision.hidden_size,
        vit_layers=vision.num_hidden_layers,
        vit_intermediate=vision.intermediate_size,
        patch_size=vision.patch_size,
        in_channels=vision.num_channels,
        merge_size=vision.spatial_merge_size,
        llm_hidden=0,
    )


def image_flops(grid: Sequence[int], vision, embed_dim: int) -> float:
    """Forward FLOPs of one image through the ViT, the pooling head and the projection."""
    dims = _vit_dims(vision)
    t, h, w = grid
    patches = t * h * w
    d, m2 = dims.vit_hidden, dims.merge_size**2
    # vit_flops counts the VLM's projector: with llm_hidden=0 that is 2 * merged * (m2*D)^2
    encoder = vit_flops(grid, dims) - 2 * (patches // m2) * (m2 * d) ** 2
    pooling = 4 * patches * d * d + 4 * patches * d + 4 * d * d + 4 * d * dims.vit_intermediate
    projection = 2 * d * embed_dim if d != embed_dim else 0
    return float(encoder + pooling + projection)


def caption_flops(tokens: int, text, embed_dim: int) -> float:
    """Forward FLOPs of one caption of `tokens` real tokens through the text tower."""
    h, layers = text.hidden_size, text.num_hidden_layers
    linear = 2 * tokens * layers * (4 * h * h + 2 * h * text.intermediate_size) + 2 * h * embed_dim
    attention = layers * 4 * tokens**2 * h
    return float(linear + attention)


def contrastive_train_flops(batch, model_config) -> float:
    """Training FLOPs (forward + backward) of one ContrastiveBatch under a ViTPretrainConfig."""
    e = model_config.embed_dim
    forward = sum(
        sum(image_flops(g, model_config.vision_config, e) for g in shape.grids)
        + caption_flops(shape.text_tokens, model_config.text_config, e)
        for shape in batch.shapes
    )
    n = len(batch.shapes)
    return 3 * (forward + 2 * n * n * e)
