"""TaskGalaxy's curation steps (curation.steps.Step), as build_sft runs them.

    TagTaskTypes(TagConfig)       rows get `task_types` from their question text (embeddings, offline)
    BalanceMixture(BalanceConfig) rows over their type's share are refused (`balanced_out`)

Tagging runs in mapInArrow over a narrow frame (row key, messages, task_types: no images), the
embedding model loaded once per Python worker; its result is joined back by row key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from curation.spark import small_side
from curation.steps import REJECT, ROW, Step, is_kept, reject_where, with_reject_column
from taskgalaxy.balance import UNTAGGED, BalanceConfig, allocate, entropy
from taskgalaxy.embed import text_embedder
from taskgalaxy.tagging import TagConfig, TypeIndex, question_text
from taskgalaxy.taxonomy import SEED, Taxonomy

TAG_STEP = "tag_task_types"
BALANCE_STEP = "balance_mixture"
TAGS = pa.schema([(ROW, pa.int64()), ("_t_types", pa.list_(pa.string())), ("_t_score", pa.float32())])


class TagTaskTypes(Step):
    name = TAG_STEP
    requires = ("sentence_transformers",)
    writes = ("task_types",)

    def cache_key(self) -> dict:
        """The config and the taxonomy's bytes: an edited taxonomy file tags again."""
        import hashlib

        digest = hashlib.sha256(Path(self.config.taxonomy or SEED).read_bytes()).hexdigest()
        return {**dataclasses.asdict(self.config), "taxonomy_sha256": digest}

    def __call__(self, df: DataFrame) -> DataFrame:
        df = with_reject_column(df)
        cfg = self.config
        todo = df.where(is_kept()).select(ROW, "messages", "task_types")
        if cfg.keep_existing:
            todo = todo.where(F.size(F.coalesce(F.col("task_types"), F.array())) == 0)
        tags = todo.mapInArrow(_Tagger(cfg), f"{ROW} long, _t_types array<string>, _t_score float").cache()
        counted = tags.count()
        tagged = tags.where(F.size("_t_types") > 0)
        per_l1 = {r["l1"]: r["count"] for r in tagged.select(F.split(F.get(F.col("_t_types"), 0), "~").getItem(0).alias("l1"))
                  .groupBy("l1").count().collect()}
        with_type = tagged.count()
        self.stats.update({"rows_tagged": with_type, "rows_without_type": counted - with_type,
                           "tagged_per_l1": dict(sorted(per_l1.items()))})
        joined = df.join(small_side(tagged.withColumnRenamed(ROW, "_t_row"), counted, row_bytes=256),
                         F.col(ROW) == F.col("_t_row"), "left")
        out = joined.withColumn("task_types", F.coalesce(F.col("_t_types"), F.col("task_types")))
        return out.drop("_t_row", "_t_types", "_t_score")


class _Tagger:
    def __init__(self, cfg: TagConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        index = None
        for batch in batches:
            if batch.num_rows == 0:
                continue
            if index is None:  # the model and the taxonomy's vectors, once per worker
                index = _index(self.cfg.taxonomy or str(SEED), self.cfg.model_path)
            rows = batch.to_pydict()
            texts = [question_text(m) for m in rows["messages"]]
            for start in range(0, len(texts), max(1, self.cfg.batch_size)):
                chunk = texts[start:start + self.cfg.batch_size]
                found = index.tag(chunk, self.cfg.threshold, self.cfg.top_k)
                yield pa.RecordBatch.from_pydict({
                    ROW: rows[ROW][start:start + len(chunk)],
                    "_t_types": [[p for p, _ in f] for f in found],
                    "_t_score": [f[0][1] if f else None for f in found],
                }, schema=TAGS)


_INDEXES: dict = {}


def _index(taxonomy_path: str, model_path: str) -> TypeIndex:
    """The taxonomy's leaf vectors, once per Python worker, taxonomy and model."""
    key = (taxonomy_path, model_path)
    if key not in _INDEXES:
        _INDEXES[key] = TypeIndex(Taxonomy.load(taxonomy_path), text_embedder(model_path))
    return _INDEXES[key]


class BalanceMixture(Step):
    name = BALANCE_STEP
    writes = ()

    def __init__(self, config: BalanceConfig, taxonomy: str = ""):
        super().__init__(config)
        self.taxonomy = taxonomy  # for the coverage stat: the taxonomy's leaves with a kept row

    def __call__(self, df: DataFrame) -> DataFrame:
        cfg = self.config
        df = with_reject_column(df)
        kept = df.where(is_kept()).select(
            ROW, "id", F.coalesce(F.get(F.col("task_types"), 0), F.lit(UNTAGGED)).alias("_b_type"))
        counts = {r["_b_type"]: r["count"] for r in kept.groupBy("_b_type").count().collect()}
        quota = allocate(counts, cfg.total, cfg.cap, cfg.temperature)
        order = Window.partitionBy("_b_type").orderBy(F.sha2(F.concat(F.lit(f"{cfg.seed}\0"), F.col("id")), 256), ROW)
        quotas = kept.sparkSession.createDataFrame(sorted(quota.items()), "_b_type string, _b_quota long")
        ranked = kept.withColumn("_b_rank", F.row_number().over(order)).join(F.broadcast(quotas), "_b_type")
        out_rows = ranked.where(F.col("_b_rank") > F.col("_b_quota")).select(F.col(ROW).alias("_b_row"), "_b_type", "_b_quota")
        refused = out_rows.count()
        joined = df.join(small_side(out_rows, refused, row_bytes=96), F.col(ROW) == F.col("_b_row"), "left")
        marked = reject_where(joined, F.col("_b_row").isNotNull(), BALANCE_STEP, F.lit("balanced_out"),
                              F.concat(F.lit("type "), F.col("_b_type"), F.lit(" keeps "), F.col("_b_quota").cast("string")))
        top = sorted(quota.items(), key=lambda kv: (-kv[1], kv[0]))[:15]
        leaves = {t.path for t in Taxonomy.load(self.taxonomy or SEED).leaves()}
        self.stats["taxonomy_coverage"] = {"leaf_types": len(leaves),
                                           "with_a_kept_row": sum(1 for t, n in quota.items() if n and t in leaves)}
        self.stats.update({
            "types_in": len(counts), "types_kept": sum(1 for n in quota.values() if n),
            "rows_in": sum(counts.values()), "rows_kept": sum(quota.values()), "refused": refused,
            "entropy_bits_before": round(entropy(counts), 4), "entropy_bits_after": round(entropy(quota), 4),
            "top_types_after": dict(top), "config": dataclasses.asdict(cfg),
        })
        return marked.drop("_b_row", "_b_type", "_b_quota")


__all__ = ["TagTaskTypes", "BalanceMixture", "TagConfig", "BalanceConfig", "TAG_STEP", "BALANCE_STEP", "REJECT"]
