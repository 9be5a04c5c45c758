"""vit_pretrain (task "contrastive"): Keye's ViT with a small text tower under SigLIP's sigmoid loss.

    model.py  ViTPretrainConfig / ViTPretrainModel (parts visual, text, logit) and
              build_vit_pretrain_model(cfg)
    data.py   ContrastivePipeline: shard rows -> batches of (image, caption) pairs, resumable
    cost.py   contrastive_train_flops(batch, model_config) for MFU

The loss itself is training.losses.siglip_sigmoid_loss. The trained `visual` has the VLM's class
and parameter names: it loads into KeyeForConditionalGeneration.visual as it is.
"""

from .cost import contrastive_train_flops
from .data import ContrastiveBatch, ContrastivePipeline
from .model import ViTPretrainConfig, ViTPretrainModel, ViTPretrainOutput, build_vit_pretrain_model

__all__ = [
    "ContrastiveBatch",
    "ContrastivePipeline",
    "ViTPretrainConfig",
    "ViTPretrainModel",
    "ViTPretrainOutput",
    "build_vit_pretrain_model",
    "contrastive_train_flops",
]
