"""Exact duplicates: rows with the same content id (same text, same image bytes) are one sample.

The id is a content hash (curation.schema.content_id), so this is a grouping by id. Within a
group the row kept is the first by (source, origin): deterministic whatever the partitioning.
The others are refused with reason `exact_duplicate` and the kept row's source and origin.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from curation.steps import is_kept, reject_where, with_reject_column

STEP = "exact_dedup"


@dataclass
class ExactDedupConfig:
    enabled: bool = True


def exact_dedup(df: DataFrame, cfg: ExactDedupConfig) -> DataFrame:
    df = with_reject_column(df)
    origin = F.coalesce(F.get_json_object("extra", "$.origin"), F.lit(""))
    # Rejected rows sit in their own window partition, so they never count as "first".
    window = Window.partitionBy("id", is_kept()).orderBy("source", origin)
    ranked = df.withColumn("_rank", F.row_number().over(window)).withColumn(
        "_first", F.first(F.concat_ws(":", "source", origin)).over(window)
    )
    marked = reject_where(ranked, F.col("_rank") > 1, STEP, "exact_duplicate", F.concat(F.lit("same content as "), F.col("_first")))
    return marked.drop("_rank", "_first").select(*df.columns)
