"""CLIP scoring and filtering: image-text cosine similarity from an open_clip model.

The model is named by `clip.model` (an open_clip architecture or `hf-hub:org/name`) and its weights
by `clip.pretrained` (a tag such as `datacomp_xl_s13b_b90k`, or a local checkpoint file). Weights
are resolved on the driver before any work starts: weights that cannot be found are a clear error
naming the setting to change, never a silent random model. The one exception is the built-in
`tiny-random`: an explicitly untrained smoke-test model whose scores mean nothing.

Scoring runs in `mapInArrow` batches; the model loads once per Python worker (cached by config)
and runs on the executor's GPU in half precision when it has one. Score = cosine of the
normalised image and text embeddings of a row's first image and its text.

Filter modes: `threshold` (keep score >= clip.threshold) and `top_fraction` (keep the best
clip.top_fraction of each source: DataComp's top-30% rule). Rows without an image or text, or of
other kinds, are not scored and pass through.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from curation.steps import REJECT, is_kept, reject_where, with_reject_column

STEP = "clip"
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
    mode: str = "top_fraction"  # threshold | top_fraction
    threshold: float = 0.28
    top_fraction: float = 0.9
    kinds: list[str] = field(default_factory=lambda: ["caption"])
    batch_size: int = 32
    partitions: int = 0  # tasks for scoring; 0: twice the cluster's default parallelism
    precision: str = "auto"  # auto: fp32 on CPU, fp16 on GPU; or fp32 / fp16 / bf16
    seed: int = 0  # initialises tiny-random


class ClipWeightsError(RuntimeError):
    pass


def is_untrained(cfg: ClipConfig) -> bool:
    return cfg.model == TINY_RANDOM


# --- model ---------------------------------------------------------------------------------------


def register_configs(cfg: ClipConfig) -> None:
    import open_clip

    for path in (BUILTIN_CONFIGS, cfg.model_config):
        if path and Path(path) not in getattr(open_clip.factory, "_MODEL_CONFIG_PATHS", []):
            open_clip.add_model_config(Path(path))


def resolve_weights(cfg: ClipConfig) -> str | None:
    """Find (or fetch into the cache) the weights before Spark starts; raise if there are none."""
    import open_clip
    from open_clip import pretrained as oc_pretrained

    register_configs(cfg)
    if is_untrained(cfg):
        return None
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
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        precision = cfg.precision if cfg.precision != "auto" else ("fp16" if self.device == "cuda" else "fp32")
        weights = resolve_weights(cfg)
        torch.manual_seed(cfg.seed)  # tiny-random: the same untrained weights in every worker
        model, _, preprocess = open_clip.create_model_and_transforms(
            cfg.model,
            pretrained=weights if weights and not cfg.model.startswith("hf-hub:") else None,
            precision=precision,
            device=self.device,
            cache_dir=cfg.cache_dir,
            require_pretrained=not is_untrained(cfg),
        )
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(cfg.model)
        self.dtype = next(model.parameters()).dtype

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        return self.embed_pixels([self.preprocess(_open_rgb(b)) for b in images])

    def embed_pixels(self, pixels: Sequence) -> np.ndarray:
        """Embeddings of images already passed through `preprocess`."""
        import torch

        with torch.no_grad():
            emb = self.model.encode_image(torch.stack(list(pixels)).to(self.device, self.dtype))
        return _normalise(emb.float().cpu().numpy())

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        with torch.no_grad():
            emb = self.model.encode_text(self.tokenizer(list(texts)).to(self.device))
        return _normalise(emb.float().cpu().numpy())

    def scores(self, images: Sequence[bytes], texts: Sequence[str]) -> np.ndarray:
        return np.sum(self.embed_images(images) * self.embed_texts(texts), axis=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


_MODELS: dict[tuple, ClipModel] = {}


def load_clip(cfg: ClipConfig) -> ClipModel:
    """One model per Python worker and configuration (Spark reuses workers across tasks)."""
    key = (cfg.model, cfg.pretrained, cfg.model_config, cfg.cache_dir, cfg.precision, cfg.seed)
    if key not in _MODELS:
        _MODELS[key] = ClipModel(cfg)
    return _MODELS[key]


# --- steps ---------------------------------------------------------------------------------------


def score(df: DataFrame, cfg: ClipConfig) -> DataFrame:
    """Fill clip_score for kept rows of the configured kinds that have an image and text."""
    resolve_weights(cfg)  # fail fast, on the driver, with a readable message
    df = with_reject_column(df)
    # Model inference is heavy for its bytes: spread it over every core instead of letting
    # adaptive execution coalesce the (small) upstream shuffle into one task.
    partitions = cfg.partitions or 2 * df.sparkSession.sparkContext.defaultParallelism
    df = df.repartition(partitions)
    return df.mapInArrow(_Scorer(cfg), df.schema)


def clip_filter(df: DataFrame, cfg: ClipConfig) -> DataFrame:
    scored = score(df, cfg)
    eligible = is_kept() & F.col("clip_score").isNotNull()
    if cfg.mode == "threshold":
        return reject_where(
            scored,
            eligible & (F.col("clip_score") < cfg.threshold),
            STEP,
            "clip_below_threshold",
            F.format_string(f"score %.4f < {cfg.threshold:g}", "clip_score"),
        )
    if cfg.mode == "top_fraction":
        ordered = Window.partitionBy("source", eligible).orderBy(F.desc("clip_score"), "id")
        whole = Window.partitionBy("source", eligible)
        ranked = scored.withColumn("_rank", F.row_number().over(ordered)).withColumn("_n", F.count("*").over(whole))
        keep = F.ceil(F.col("_n") * F.lit(cfg.top_fraction))
        marked = reject_where(
            ranked,
            eligible & (F.col("_rank") > keep),
            STEP,
            "clip_below_top_fraction",
            F.format_string(f"score %.4f ranks %d of %d in its source (top {cfg.top_fraction:g} kept)", "clip_score", "_rank", "_n"),
        )
        return marked.drop("_rank", "_n")
    raise ValueError(f"clip.mode must be threshold or top_fraction, got {cfg.mode!r}")


def row_text(row: dict) -> str:
    return "\n".join(p["text"] for turn in row["messages"] for p in turn["content"] if p["type"] == "text" and p["text"])


class _Scorer:
    def __init__(self, cfg: ClipConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = None
        for batch in batches:
            rows = batch.to_pylist()
            todo = [
                r for r in rows
                if r[REJECT] is None and r["kind"] in self.cfg.kinds and r["images"] and row_text(r)
            ]
            for start in range(0, len(todo), self.cfg.batch_size):
                chunk = todo[start : start + self.cfg.batch_size]
                model = model or load_clip(self.cfg)
                images, keep = [], []
                for r in chunk:
                    try:
                        images.append(model.preprocess(_open_rgb(r["images"][0]["bytes"])))
                        keep.append(r)
                    except Exception as exc:  # only reachable with validation switched off
                        r[REJECT] = {"step": STEP, "reason": "image_decode_error", "detail": str(exc)[:300]}
                if keep:
                    values = np.sum(model.embed_pixels(images) * model.embed_texts([row_text(r) for r in keep]), axis=1)
                    for r, value in zip(keep, values):
                        r["clip_score"] = float(value)
            yield pa.RecordBatch.from_pylist(rows, schema=batch.schema)


def _open_rgb(data: bytes):
    from PIL import Image

    return Image.open(io.BytesIO(data)).convert("RGB")
