"""Exact duplicates: rows with the same content id (same text, same image bytes) are one sample.

The id is a content hash (curation.schema.content_id), so this is a grouping by id. Within a
group the row kept is the first by (source, origin): deterministic whatever the partitioning.
The others are refused with reason `exact_duplicate` and the kept row's source and origin.

Only ids, sources, origins and row keys are grouped (never the rows' images); the duplicates'
row keys are joined back. Stats: duplicate rows and the groups they fall in.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from curation.spark import checkpoint
from curation.steps import ROW, Step, is_kept, mark, with_reject_column

STEP = "exact_dedup"


@dataclass
class ExactDedupConfig:
    enabled: bool = True


class ExactDedup(Step):
    name = STEP

    def __call__(self, df: DataFrame) -> DataFrame:
        df = with_reject_column(df)
        origin = F.coalesce(F.get_json_object("extra", "$.origin"), F.lit(""))
        keys = df.where(is_kept()).select(ROW, "id", F.col("source"), origin.alias("origin"))
        window = Window.partitionBy("id").orderBy("source", "origin", ROW)
        ranked = keys.withColumn("_rank", F.row_number().over(window)).withColumn(
            "_first", F.first(F.concat_ws(":", "source", "origin")).over(window)
        )
        duplicates = checkpoint(
            ranked.where(F.col("_rank") > 1).select(
                ROW, "id", F.lit("exact_duplicate").alias("reason"), F.concat(F.lit("same content as "), F.col("_first")).alias("detail")
            )
        )
        rows = duplicates.count()
        groups = duplicates.select("id").distinct().count() if rows else 0
        self.stats.update({"duplicate_rows": rows, "duplicate_groups": groups})
        return mark(df, duplicates, STEP, rows=rows)


def exact_dedup(df: DataFrame, cfg: ExactDedupConfig) -> DataFrame:
    """The step as a function (`ExactDedup(cfg)(df)`)."""
    return ExactDedup(cfg)(df)
