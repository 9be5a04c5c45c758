"""Task `contrastive` (vit_pretrain): Keye's ViT and a small text tower under SigLIP's sigmoid
loss (training/vit_pretrain). Every image-caption pair is an independent binary problem, so the
loss of a step is the per-row sums of all its batches over the step's pairs."""

from __future__ import annotations

from training.stages import TASK_PARTS, StageConfig

from .base import MicroLoss, Task, to_device


class ContrastiveTask(Task):
    name = "contrastive"
    parts = TASK_PARTS["contrastive"]

    def __init__(self):
        self.model_config = None

    def build_model(self, cfg: StageConfig):
        from training.vit_pretrain import build_vit_pretrain_model

        return build_vit_pretrain_model(cfg)

    def model_parts(self, model):
        return model.trainable_parts()

    def build_pipeline(self, cfg: StageConfig, tokenizer, rank: int, world: int):
        from training.data import ShardReader
        from training.processor import KeyeProcessor
        from training.vit_pretrain import ContrastivePipeline

        weights = cfg.data_weights or [1.0] * len(cfg.data)
        reader = ShardReader(list(zip(cfg.data, weights)), seed=cfg.seed, rank=rank, world_size=world,
                             buffer_size=cfg.shuffle_buffer, epochs=cfg.epochs)
        return ContrastivePipeline(reader, tokenizer, KeyeProcessor(tokenizer), cfg.batch_size, cfg.max_text_tokens)

    def attach(self, engine, cfg) -> None:
        self.model_config = engine.module.config

    def cost(self, batch) -> float:
        from training.vit_pretrain import contrastive_train_flops

        return contrastive_train_flops(batch, self.model_config)

    def counts(self, batch) -> dict[str, int]:
        return {"pairs": batch.loss_tokens}

    def loss(self, engine, batch, totals: dict[str, int]) -> MicroLoss:
        out = engine(**to_device(batch.inputs, engine.device))
        return MicroLoss(out.loss_sum / totals["pairs"])
