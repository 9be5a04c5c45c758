"""CLIP scoring and filtering of rows in Spark: image-text cosine similarity from an open_clip model
(curation.clip_model says how the model and its weights are chosen).

Scoring runs in `mapInArrow` batches; the model loads once per Python worker (cached by config)
and runs on the executor's GPU in half precision when it has one. Score = cosine of the
normalised image and text embeddings of a row's first image and its text.

Filter modes: `threshold` (keep score >= clip.threshold) and `top_fraction` (keep the best
clip.top_fraction of each source: DataComp's top-30% rule). Rows without an image or text, or of
other kinds, are not scored and pass through.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from curation.clip_model import TINY_RANDOM, ClipConfig, ClipModel, ClipWeightsError, open_rgb, load_clip, resolve_weights
from curation.steps import REJECT, is_kept, reject_where, with_reject_column

__all__ = ["STEP", "TINY_RANDOM", "ClipConfig", "ClipModel", "ClipWeightsError", "clip_filter", "load_clip", "resolve_weights", "score"]

STEP = "clip"



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
                        images.append(model.preprocess(open_rgb(r["images"][0]["bytes"])))
                        keep.append(r)
                    except Exception as exc:  # only reachable with validation switched off
                        r[REJECT] = {"step": STEP, "reason": "image_decode_error", "detail": str(exc)[:300]}
                if keep:
                    size = self.cfg.batch_size  # one batch shape: scores independent of partitioning
                    image_emb = model.embed_pixels(images, pad_to=size)
                    text_emb = model.embed_texts([row_text(r) for r in keep], pad_to=size)
                    values = np.sum(image_emb * text_emb, axis=1)
                    for r, value in zip(keep, values):
                        r["clip_score"] = float(value)
            yield pa.RecordBatch.from_pylist(rows, schema=batch.schema)
