"""CLIP models for curation: an open_clip model, its preprocessing and tokenizer, on the best device.

The model is named by `clip.model` (an open_clip architecture or `hf-hub:org/name`) and its weights
by `clip.pretrained` (a tag such as `datacomp_xl_s13b_b90k`, or a local checkpoint file). Weights
are resolved before any work starts: weights that cannot be found are a clear error naming the
setting to change, never a silent random model. The one exception is the built-in `tiny-random`:
an explicitly untrained smoke-test model whose scores mean nothing.

This module has no Spark in it, so model code can be used and measured on its own; the Spark
steps that use it are in curation.clip_filter (scoring, filtering) and curation.dedup.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

TINY_RANDOM = "tiny-random"
BUILTIN_CONFIGS = Path(__file__).parent / "clip_models"


@dataclass
class ClipConfig:
    enabled: bool = True
    model: str = TINY_RANDOM
    pretrained: str | None = None  # tag, local checkpoint file; ignored for hf-hub: models
    model_config: str | None = None  # JSON file registering a custom architecture (file stem = name)
    cache_dir: str | None = None  # where open_clip / Hugging Face weights are cached
    # The embedded default is the demo: keep the best 90% of each source. Production
    # (configs/pretrain.yaml) uses a real model with DataComp's top 30% or a threshold.
    mode: Literal["threshold", "top_fraction"] = "top_fraction"
    threshold: float = 0.28
    top_fraction: float = 0.9
    kinds: list[str] = field(default_factory=lambda: ["caption"])
    batch_size: int = 32
    partitions: int = 0  # tasks for scoring; 0: twice the cluster's default parallelism
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: the executor's GPU when it has one, else cpu
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp32 on CPU, fp16 on GPU
    seed: int = 0  # initialises tiny-random


class ClipWeightsError(RuntimeError):
    pass


def is_untrained(cfg: ClipConfig) -> bool:
    return cfg.model == TINY_RANDOM




def register_configs(cfg: ClipConfig) -> None:
    import open_clip

    for path in (BUILTIN_CONFIGS, cfg.model_config):
        if path and Path(path) not in getattr(open_clip.factory, "_MODEL_CONFIG_PATHS", []):
            open_clip.add_model_config(Path(path))


def resolve_weights(cfg: ClipConfig) -> str | None:
    """Find (or fetch into the cache) the weights before Spark starts; raise if there are none."""
    if is_untrained(cfg):  # no weights to find (and no need to import torch in the driver)
        return None
    import open_clip
    from open_clip import pretrained as oc_pretrained

    register_configs(cfg)
    hint = (
        "set clip.pretrained to a local checkpoint file or a tag whose weights are in the cache "
        "(clip.cache_dir), or clip.model=tiny-random for an untrained smoke test"
    )
    if cfg.model.startswith("hf-hub:"):
        try:
            return oc_pretrained.download_pretrained_from_hf(cfg.model[len("hf-hub:"):], cache_dir=cfg.cache_dir)
        except Exception as exc:  # hub client errors vary by version; all mean "no weights"
            raise ClipWeightsError(f"clip.model={cfg.model}: weights not found or not downloadable ({exc}); {hint}") from exc
    if cfg.model not in open_clip.list_models():
        raise ClipWeightsError(
            f"clip.model={cfg.model!r} is not an open_clip architecture; register one with clip.model_config=FILE.json"
        )
    if not cfg.pretrained:
        raise ClipWeightsError(f"clip.model={cfg.model} needs clip.pretrained (only {TINY_RANDOM} runs untrained); {hint}")
    if os.path.isfile(cfg.pretrained):
        return cfg.pretrained
    tag_cfg = oc_pretrained.get_pretrained_cfg(cfg.model, cfg.pretrained)
    if not tag_cfg:
        raise ClipWeightsError(
            f"clip.pretrained={cfg.pretrained!r} is neither a file nor a tag of {cfg.model} "
            f"(tags: {oc_pretrained.list_pretrained_tags_by_model(cfg.model)}); {hint}"
        )
    try:
        return oc_pretrained.download_pretrained(tag_cfg, cache_dir=cfg.cache_dir)
    except Exception as exc:  # offline and not cached, or a hub error
        raise ClipWeightsError(f"weights for clip.model={cfg.model} clip.pretrained={cfg.pretrained} are not available ({exc}); {hint}") from exc


class ClipModel:
    """An open_clip model with its preprocessing and tokenizer, on the best local device."""

    def __init__(self, cfg: ClipConfig):
        import open_clip
        import torch

        register_configs(cfg)
        self.device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        precision = cfg.precision if cfg.precision != "auto" else ("fp16" if self.device == "cuda" else "fp32")
        if precision not in ("fp32", "fp16", "bf16"):
            raise ValueError(f"clip.precision must be auto, fp32, fp16 or bf16; got {precision!r}")
        # Half precision through autocast over fp32 weights: open_clip keeps some layers in fp32
        # when it casts weights itself, so one input dtype would not fit every layer.
        self.autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        weights = resolve_weights(cfg)
        torch.manual_seed(cfg.seed)  # tiny-random: the same untrained weights in every worker
        model, _, preprocess = open_clip.create_model_and_transforms(
            cfg.model,
            pretrained=weights if weights and not cfg.model.startswith("hf-hub:") else None,
            precision="fp32",
            device=self.device,
            cache_dir=cfg.cache_dir,
            require_pretrained=not is_untrained(cfg),
        )
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(cfg.model)

    def _context(self) -> contextlib.ExitStack:
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        if self.autocast is not None:
            stack.enter_context(torch.autocast(device_type=self.device, dtype=self.autocast))
        return stack

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        return self.embed_pixels([self.preprocess(open_rgb(b)) for b in images])

    def embed_pixels(self, pixels: Sequence, pad_to: int = 0) -> np.ndarray:
        """Embeddings of images already passed through `preprocess`. See `_padded` for pad_to."""
        import torch

        with self._context():
            emb = self.model.encode_image(torch.stack(_padded(list(pixels), pad_to)).to(self.device))
        return _normalise(emb.float().cpu().numpy()[: len(pixels)])

    def embed_texts(self, texts: Sequence[str], pad_to: int = 0) -> np.ndarray:
        with self._context():
            emb = self.model.encode_text(self.tokenizer(_padded(list(texts), pad_to)).to(self.device))
        return _normalise(emb.float().cpu().numpy()[: len(texts)])

    def scores(self, images: Sequence[bytes], texts: Sequence[str]) -> np.ndarray:
        return np.sum(self.embed_images(images) * self.embed_texts(texts), axis=1)


def _padded(items: list, size: int) -> list:
    """`items` repeated up to `size` entries. Matrix kernels pick their algorithm by shape (a batch
    of one takes another path than a batch of 32), so the same row can come out with different last
    bits in different batches; one fixed batch shape makes a row's embedding independent of which
    rows share its batch, hence of the Spark partitioning."""
    return items + [items[0]] * (size - len(items)) if items and len(items) < size else items


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


_MODELS: dict[tuple, ClipModel] = {}


def load_clip(cfg: ClipConfig) -> ClipModel:
    """One model per Python worker and configuration (Spark reuses workers across tasks)."""
    key = (cfg.model, cfg.pretrained, cfg.model_config, cfg.cache_dir, cfg.device, cfg.precision, cfg.seed)
    if key not in _MODELS:
        _MODELS[key] = ClipModel(cfg)
    return _MODELS[key]


def open_rgb(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
