"""TaskGalaxy's curation steps (curation.steps.Step), as build_sft runs them.

    TagTaskTypes(TagConfig)       rows get `task_types` from their question text (embeddings, offline;
                                  optionally CLIP on the first image and a model classifier)
    BalanceMixture(BalanceConfig) rows over their type's share are refused (`balanced_out`)

(taskgalaxy.difficulty.RateDifficulty runs between them in build_sft.)

Tagging runs in mapInArrow over a narrow frame (row key, messages, task_types, and the first
image only when tag.image_weight > 0), the models loaded once per Python worker; its result is
joined back by row key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from curation.clip_model import ClipConfig
from curation.spark import small_side
from curation.steps import REJECT, ROW, Step, is_kept, reject_where, with_reject_column
from taskgalaxy.balance import UNTAGGED, BalanceConfig, allocate, entropy
from taskgalaxy.embed import text_embedder
from taskgalaxy.tagging import TagConfig, TypeIndex, clip_type_texts, mix_image_scores, question_text
from taskgalaxy.taxonomy import SEED, Taxonomy

TAG_STEP = "tag_task_types"
BALANCE_STEP = "balance_mixture"
# per row: its types, the best score, and what decided: embedding, classifier, or fallback:<why>
TAGS = pa.schema([(ROW, pa.int64()), ("_t_types", pa.list_(pa.string())), ("_t_score", pa.float32()), ("_t_by", pa.string())])
TAGS_DDL = f"{ROW} long, _t_types array<string>, _t_score float, _t_by string"
CLASSIFY_SCHEMA = {"type": "object", "properties": {"task_type": {"type": "string"}}, "required": ["task_type"],
                   "additionalProperties": False}
NONE_FITS = "none"


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
        image = F.when(F.size("images") > 0, F.col("images")[0]["bytes"]) if cfg.image_weight > 0 else F.lit(None).cast("binary")
        todo = df.where(is_kept()).select(ROW, "messages", "task_types", image.alias("_t_image"))
        if cfg.keep_existing:
            todo = todo.where(F.size(F.coalesce(F.col("task_types"), F.array())) == 0)
        tags = todo.mapInArrow(_Tagger(cfg), TAGS_DDL).cache()
        counted = tags.count()
        tagged = tags.where(F.size("_t_types") > 0)
        per_l1 = {r["l1"]: r["count"] for r in tagged.select(F.split(F.get(F.col("_t_types"), 0), "~").getItem(0).alias("l1"))
                  .groupBy("l1").count().collect()}
        with_type = tagged.count()
        by = {r["_t_by"]: r["count"] for r in tags.groupBy("_t_by").count().collect()}
        self.stats.update({"rows_tagged": with_type, "rows_without_type": counted - with_type,
                           "tagged_per_l1": dict(sorted(per_l1.items())), "decided_by": dict(sorted(by.items()))})
        joined = df.join(small_side(tagged.withColumnRenamed(ROW, "_t_row"), counted, row_bytes=256),
                         F.col(ROW) == F.col("_t_row"), "left")
        out = joined.withColumn("task_types", F.coalesce(F.col("_t_types"), F.col("task_types")))
        return out.drop("_t_row", "_t_types", "_t_score", "_t_by")


class _Tagger:
    """mapInArrow: (row key, messages, task_types, first image or null) -> TAGS."""

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
            size = max(1, self.cfg.batch_size)
            for start in range(0, len(texts), size):
                part = slice(start, start + size)
                chunk = texts[part]
                scores = index.scores(chunk)
                if self.cfg.image_weight > 0:
                    scores = mix_image_scores(scores, self.image_scores(rows["_t_image"][part]), self.cfg.image_weight)
                found = index.tag(chunk, self.cfg.threshold, self.cfg.top_k, scores=scores)
                by = ["embedding"] * len(chunk)
                if self.cfg.classify:
                    found, by = self.classify(index, rows[ROW][part], chunk, scores, found)
                yield pa.RecordBatch.from_pydict({
                    ROW: rows[ROW][part],
                    "_t_types": [[p for p, _ in f] for f in found],
                    "_t_score": [f[0][1] if f else None for f in found],
                    "_t_by": by,
                }, schema=TAGS)

    def image_scores(self, images: list) -> np.ndarray:
        """(rows, leaves) CLIP cosine of each row's first image with each leaf; NaN without one
        (or where CLIP cannot read it)."""
        from curation.clip_model import load_clip

        clip = load_clip(self.cfg.clip)
        leaves = _clip_leaves(self.cfg.taxonomy or str(SEED), self.cfg.clip)
        out = np.full((len(images), leaves.shape[0]), np.nan, dtype=np.float32)
        for k, data in enumerate(images):
            if data:
                try:
                    out[k] = leaves @ clip.embed_images([data])[0]
                except Exception:  # an unreadable image: this row is tagged by its text alone
                    pass
        return out

    def classify(self, index: TypeIndex, keys: list, texts: list[str], scores: np.ndarray, found: list) -> tuple[list, list]:
        """The classifier's pick among each row's nearest `candidates` leaves, first in its types;
        a pick outside them or a failed call keeps the embedding's answer (by = fallback:<why>)."""
        import dataclasses as dc

        from synthesis.model_client import ChatRequest, client_for

        asked = [k for k, text in enumerate(texts) if text]
        # per asked row: {path: leaf number} of its nearest candidates, nearest first
        lists = {k: {index.paths[i]: int(i) for i in np.argsort(-scores[k], kind="stable")[: self.cfg.candidates]} for k in asked}
        requests = []
        for k in asked:
            listed = "\n".join(f"- {path}: {index.leaves[i].description}" for path, i in lists[k].items())
            prompt = (f"Question: {texts[k]}\nCandidate task types:\n{listed}\nWhich one task type is this question? "
                      f'Answer as JSON {{"task_type": ...}} with a name copied exactly from the list, or "{NONE_FITS}".')
            requests.append(ChatRequest(f"tag:{keys[k]}", [{"role": "user", "content": [{"type": "text", "text": prompt}]}]))
        client = client_for(dc.replace(self.cfg.classifier, response_schema=CLASSIFY_SCHEMA, schema_name="task_type"))
        found, by = list(found), ["embedding"] * len(texts)
        for k, done in zip(asked, client.chat(requests)):
            if not done.ok:
                by[k] = f"fallback:{done.error}"
                continue
            pick = str(done.parsed[0]["task_type"]).strip()
            if pick == NONE_FITS:
                found[k], by[k] = [], "classifier"
            elif pick in lists[k]:
                score = round(float(scores[k][lists[k][pick]]), 4)
                found[k] = [(pick, score)] + [f for f in found[k] if f[0] != pick][: self.cfg.top_k - 1]
                by[k] = "classifier"
            else:
                by[k] = "fallback:outside_candidates"
        return found, by


_INDEXES: dict = {}


def _index(taxonomy_path: str, model_path: str) -> TypeIndex:
    """The taxonomy's leaf vectors, once per Python worker, taxonomy and model."""
    key = (taxonomy_path, model_path)
    if key not in _INDEXES:
        _INDEXES[key] = TypeIndex(Taxonomy.load(taxonomy_path), text_embedder(model_path))
    return _INDEXES[key]


def _clip_leaves(taxonomy_path: str, clip: ClipConfig) -> np.ndarray:
    """CLIP text vectors of the taxonomy's leaves, once per Python worker, taxonomy and model."""
    from curation.clip_model import load_clip

    key = ("clip", taxonomy_path, repr(clip))
    if key not in _INDEXES:
        _INDEXES[key] = load_clip(clip).embed_texts(clip_type_texts(Taxonomy.load(taxonomy_path))).astype(np.float32)
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
