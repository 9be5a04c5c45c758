"""How curation steps refuse rows: they mark them, they never drop them.

A step is a pure ``DataFrame -> DataFrame`` function with a config dataclass. Rows carry a
``_reject`` column (struct of step, reason, detail), null while a row is kept. A step looks only at
rows still kept and may set ``_reject`` on some of them; it never removes a row. So every row that
came in is still there at the end, either kept or rejected with the step and reason that refused
it, and the funnel (in = kept + rejected, per step) follows from one aggregation.

``split(df)`` gives the (kept, rejected) pair view when a caller wants it.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

REJECT = "_reject"
REJECT_TYPE = T.StructType(
    [
        T.StructField("step", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("detail", T.StringType()),
    ]
)


def with_reject_column(df: DataFrame) -> DataFrame:
    """Add an all-null `_reject` column if the frame has none (e.g. rows read from shards), and give
    it the one canonical type (all fields nullable) that Arrow-based steps declare as output."""
    if REJECT in df.columns:
        return df.withColumn(REJECT, F.col(REJECT).cast(REJECT_TYPE))
    return df.withColumn(REJECT, F.lit(None).cast(REJECT_TYPE))


def is_kept() -> Column:
    return F.col(REJECT).isNull()


def reject_where(df: DataFrame, condition: Column, step: str, reason: str | Column, detail: Column | str | None = None) -> DataFrame:
    """Mark kept rows matching `condition` as rejected by `step` for `reason`."""
    reason_col = reason if isinstance(reason, Column) else F.lit(reason)
    if detail is None:
        detail_col = F.lit(None).cast("string")
    elif isinstance(detail, Column):
        detail_col = detail.cast("string")
    else:
        detail_col = F.lit(detail)
    verdict = F.struct(F.lit(step).alias("step"), reason_col.alias("reason"), detail_col.alias("detail"))
    marked = F.when(is_kept() & condition, verdict).otherwise(F.col(REJECT))
    return df.withColumn(REJECT, marked.cast(REJECT_TYPE))


def split(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(kept rows without the marker column, rejected rows with it)."""
    return df.filter(is_kept()).drop(REJECT), df.filter(~is_kept())
