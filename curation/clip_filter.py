"""CLIP scoring and filtering of rows in Spark: image-text cosine similarity from an open_clip model
(curation.clip_model says how the model and its weights are chosen).

Scoring runs in `mapInArrow` over a narrow frame (row key, the first image's bytes, the text); the
model loads once per Python worker (cached by config) and runs on the executor's GPU in half
precision when it has one. Score = cosine of the normalised image and text embeddings of a row's
first image and its text. The scores are persisted in the job's work folder under a key of the
input rows and the model settings only: a re-run after a kill, or with another threshold or mode,
reuses them and only filters again.

Filter modes: `threshold` (keep score >= clip.threshold) and `top_fraction` (keep the best
clip.top_fraction of each source: DataComp's top-30% rule; ranked over the narrow scores, never
over the rows). Rows without an image or text, or of other kinds, are not scored and pass through.
Stats: rows scored, whether the scores were reused, score quantiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from curation.clip_model import TINY_RANDOM, ClipConfig, ClipModel, ClipWeightsError, load_clip, open_rgb, resolve_weights
from curation.row_text import row_text
from curation.spark import checkpoint, small_side
from curation.steps import ROW, Step, is_kept, reject_where, with_reject_column

__all__ = ["STEP", "TINY_RANDOM", "ClipConfig", "ClipFilter", "ClipModel", "ClipWeightsError", "clip_filter", "load_clip", "resolve_weights", "score_rows"]

STEP = "clip"
# Settings that change which rows are kept, not their scores: left out of the scores' key.
FILTER_FIELDS = ("enabled", "mode", "threshold", "top_fraction", "partitions")
SCORES = f"{ROW} long, id string, source string, clip_score float, error string"
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def score_rows(df: DataFrame, cfg: ClipConfig) -> DataFrame:
    """(row key, id, source, clip_score) of the kept rows of the configured kinds that have an
    image and text. Only each row's first image and its text reach the scorer."""
    df = with_reject_column(df)
    todo = df.where(is_kept() & F.col("kind").isin(list(cfg.kinds)) & (F.size("images") > 0)).select(
        ROW, "id", "source", F.col("images")[0]["bytes"].alias("image"), row_text().alias("text")
    ).where(F.length("text") > 0)
    if cfg.partitions:  # opt-in: spreads inference wider than the input's splits, at one shuffle of images
        todo = todo.repartition(cfg.partitions, ROW)
    return todo.mapInArrow(_Scorer(cfg), SCORES)


class ClipFilter(Step):
    name = STEP
    requires = ("open_clip", "torch")
    writes = ("clip_score",)

    def preflight(self) -> None:
        resolve_weights(self.config)  # on the driver, with a message naming the setting to change

    def __call__(self, df: DataFrame) -> DataFrame:
        cfg = self.config
        self.preflight()
        df = with_reject_column(df)
        key_config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in FILTER_FIELDS}
        work = self.context.work
        if work is not None:
            from curation.workdir import hash_key

            scores, reused = work.persisted(df.sparkSession, "clip_scores", hash_key(self.context.input_key, key_config), lambda: score_rows(df, cfg))
        else:
            scores, reused = checkpoint(score_rows(df, cfg)), False
        scored = scores.count()
        self.stats.update({"scored": scored, "scores_reused": reused})
        if scored:
            values = scores.where(F.col("error").isNull()).approxQuantile("clip_score", list(QUANTILES), 0.0)
            self.stats["score_quantiles"] = {f"p{round(q * 100):02d}": round(v, 4) for q, v in zip(QUANTILES, values)}
        verdicts = checkpoint(_verdicts(scores, cfg))
        joined = df.join(small_side(verdicts, scored, row_bytes=64), F.col(ROW) == F.col("_s_row"), "left")
        joined = joined.withColumn("clip_score", F.coalesce(F.col("_s_score"), F.col("clip_score")))
        marked = reject_where(joined, F.col("_s_reason").isNotNull(), STEP, F.col("_s_reason"), F.col("_s_detail"))
        self.stats["refused"] = verdicts.where(F.col("_s_reason").isNotNull()).count()
        return marked.drop("_s_row", "_s_score", "_s_reason", "_s_detail")


def _verdicts(scores: DataFrame, cfg: ClipConfig) -> DataFrame:
    """Per scored row: its score, and a reason and detail when the filter refuses it."""
    broken = scores.where(F.col("error").isNotNull()).select(
        F.col(ROW).alias("_s_row"), F.lit(None).cast("float").alias("_s_score"),
        F.lit("image_decode_error").alias("_s_reason"), F.col("error").alias("_s_detail"),
    )
    scores = scores.where(F.col("error").isNull())
    if cfg.mode == "threshold":
        refused = F.col("clip_score") < cfg.threshold
        reason = F.when(refused, F.lit("clip_below_threshold"))
        detail = F.when(refused, F.format_string(f"score %.4f < {cfg.threshold:g}", "clip_score"))
        ranked = scores
    elif cfg.mode == "top_fraction":
        ordered = Window.partitionBy("source").orderBy(F.desc("clip_score"), "id", ROW)
        ranked = scores.withColumn("_rank", F.row_number().over(ordered)).withColumn(
            "_n", F.count("*").over(Window.partitionBy("source"))
        )
        refused = F.col("_rank") > F.ceil(F.col("_n") * F.lit(cfg.top_fraction))
        reason = F.when(refused, F.lit("clip_below_top_fraction"))
        detail = F.when(
            refused,
            F.format_string(f"score %.4f ranks %d of %d in its source (top {cfg.top_fraction:g} kept)", "clip_score", "_rank", "_n"),
        )
    else:
        raise ValueError(f"clip.mode must be threshold or top_fraction, got {cfg.mode!r}")
    return ranked.select(
        F.col(ROW).alias("_s_row"), F.col("clip_score").alias("_s_score"), reason.alias("_s_reason"), detail.alias("_s_detail")
    ).unionByName(broken)


def clip_filter(df: DataFrame, cfg: ClipConfig) -> DataFrame:
    """The step as a function (`ClipFilter(cfg)(df)`); the frame needs the `_row` key."""
    return ClipFilter(cfg)(df) if cfg.enabled else with_reject_column(df)


_SCORE_SCHEMA = pa.schema(
    [(ROW, pa.int64()), ("id", pa.string()), ("source", pa.string()), ("clip_score", pa.float32()), ("error", pa.string())]
)


class _Scorer:
    """mapInArrow function: (row key, id, source, image, text) -> (row key, id, source, clip_score)."""

    def __init__(self, cfg: ClipConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        model = None
        size = self.cfg.batch_size  # one batch shape: scores independent of partitioning
        for batch in batches:
            keys, ids, sources = batch.column(ROW).to_pylist(), batch.column("id").to_pylist(), batch.column("source").to_pylist()
            images, texts = batch.column("image").to_pylist(), batch.column("text").to_pylist()
            out: dict[str, list] = {ROW: [], "id": [], "source": [], "clip_score": [], "error": []}
            for start in range(0, len(keys), size):
                model = model or load_clip(self.cfg)
                pixels, keep = [], []
                for i in range(start, min(start + size, len(keys))):
                    try:
                        pixels.append(model.preprocess(open_rgb(images[i])))
                        keep.append(i)
                    except Exception as exc:  # only reachable with validation off: refused with its reason
                        for name, value in ((ROW, keys[i]), ("id", ids[i]), ("source", sources[i]), ("clip_score", None),
                                            ("error", f"{type(exc).__name__}: {exc}"[:300])):
                            out[name].append(value)
                if not keep:
                    continue
                image_emb = model.embed_pixels(pixels, pad_to=size)
                text_emb = model.embed_texts([texts[i] for i in keep], pad_to=size)
                for i, value in zip(keep, np.sum(image_emb * text_emb, axis=1)):
                    out[ROW].append(keys[i])
                    out["id"].append(ids[i])
                    out["source"].append(sources[i])
                    out["clip_score"].append(float(value))
                    out["error"].append(None)
            yield pa.RecordBatch.from_pydict(out, schema=_SCORE_SCHEMA)
