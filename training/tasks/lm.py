"""Task `lm`: the VLM under next-token cross-entropy on packed sequences (align, pretrain, anneal,
sft, cot_coldstart). The loss of a step is the sum of -log p(target) over every labelled token of
the step divided by the step's labelled tokens (`loss_tokens`), so a token weighs the same in
whatever sequence, micro-step or rank it lands."""

from __future__ import annotations

from pathlib import Path

import torch

from curation.config import ConfigError
from training.data.cost import ModelDims, sequence_flops
from training.stages import PARTS, REPO, StageConfig

from .base import MicroLoss, Task, to_device


def resolve_model(cfg: StageConfig):
    """The VLM of `cfg.model` (+ `cfg.init`): a YAML config with random weights (tiny only) or
    an HF folder's weights."""
    from training.model import KeyeForConditionalGeneration, load_model_config

    name = cfg.model
    named = REPO / "configs" / "models" / f"{name}.yaml"
    source = Path(cfg.init) if cfg.init else Path(name) if Path(name).is_dir() else None
    if source is not None:
        if not (source / "config.json").is_file():
            raise ConfigError(f"{source} is no HF model folder (no config.json)")
        return KeyeForConditionalGeneration.from_pretrained(source, torch_dtype=torch.float32)
    path = named if named.is_file() else Path(name)
    if not path.is_file():
        raise ConfigError(f"model={name}: not tiny, keye_8b, a model YAML or an HF folder")
    if name != "tiny":
        raise ConfigError(f"model={name} needs init=HF_FOLDER with its weights (training.model.weights builds one "
                          "from SigLIP + Qwen3); only the tiny model starts from random weights")
    torch.manual_seed(cfg.seed)
    return KeyeForConditionalGeneration(load_model_config(path))


def model_dims(config) -> ModelDims:
    v = config.vision_config
    return ModelDims(
        vit_hidden=v.hidden_size, vit_layers=v.num_hidden_layers, vit_intermediate=v.intermediate_size,
        patch_size=v.patch_size, merge_size=v.spatial_merge_size, llm_hidden=config.hidden_size,
        llm_layers=config.num_hidden_layers, llm_intermediate=config.intermediate_size,
        llm_heads=config.num_attention_heads, llm_kv_heads=config.num_key_value_heads,
        llm_head_dim=config.head_dim, vocab_size=config.vocab_size,
    )


def forward_flops(batch, dims: ModelDims) -> float:
    """The cost model's forward over one packed sequence (ViT, projector, LLM), with lm_head only
    on loss positions (the packed training forward projects nothing else; the cost model counts
    it on every position)."""
    unprojected = batch.real_tokens - batch.loss_tokens
    return sequence_flops(batch.shapes, dims) - 2 * dims.llm_hidden * dims.vocab_size * unprojected


def train_flops(micro: list, dims: ModelDims) -> float:
    """FLOPs of a training step over these packed sequences: forward + backward = 3 x forward."""
    return 3 * sum(forward_flops(b, dims) for b in micro)


def vlm_parts(model) -> dict[str, list[torch.nn.Module]]:
    """The VLM's parts by their released attribute names."""
    return {"visual": [model.visual], "projector": [model.mlp_AR], "llm": [model.model, model.lm_head]}


class LMTask(Task):
    name = "lm"
    parts = PARTS

    def __init__(self):
        self.dims: ModelDims | None = None

    def build_model(self, cfg: StageConfig):
        return resolve_model(cfg)

    def model_parts(self, model):
        return vlm_parts(model)

    def build_pipeline(self, cfg: StageConfig, tokenizer, rank: int, world: int, pairs: bool = False):
        """shard folders -> ShardReader (this rank's slice) -> processor -> packer."""
        from training.data import DataPipeline, ShardReader
        from training.processor import KeyeProcessor

        weights = cfg.data_weights or [1.0] * len(cfg.data)
        reader = ShardReader(list(zip(cfg.data, weights)), seed=cfg.seed, rank=rank, world_size=world,
                             buffer_size=cfg.shuffle_buffer, epochs=cfg.epochs)
        return DataPipeline(reader, KeyeProcessor(tokenizer), max_tokens=cfg.max_tokens,
                            buffer_size=cfg.packer_buffer, pairs=pairs)

    def attach(self, engine, cfg) -> None:
        self.dims = model_dims(engine.module.config)

    def cost(self, batch) -> float:
        if self.dims is None:
            raise RuntimeError("attach(engine) first: the cost model needs the model's dimensions")
        return train_flops([batch], self.dims)

    def counts(self, batch) -> dict[str, int]:
        return {"loss_tokens": batch.loss_tokens}

    def loss(self, engine, batch, totals: dict[str, int]) -> MicroLoss:
        out = engine(**to_device(batch.inputs, engine.device), return_logits=False)
        return MicroLoss(-out.token_logps.sum() / totals["loss_tokens"])
