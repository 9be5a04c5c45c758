"""The Spark session a job runs in.

Under `spark-submit` the master and resources come from the command line; run as plain Python the
job gets a local session on every core. Steps never create sessions: jobs do, through here.
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

DEFAULT_CONF = {
    # Arrow batches between the JVM and Python workers, reused workers so that models load once.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "true",
    "spark.ui.enabled": "false",
    "spark.log.level": "WARN",
}


def session(app_name: str = "keyeforge", conf: dict[str, str] | None = None) -> SparkSession:
    # Plain `python jobs/x.py` runs: executors use this interpreter (and its packages).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if not _master_given():
        builder = builder.master(f"local[{os.cpu_count() or 1}]")
        # Small local jobs: a few shuffle partitions instead of 200 tiny tasks.
        builder = builder.config("spark.sql.shuffle.partitions", str(2 * (os.cpu_count() or 1)))
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _master_given() -> bool:
    """True when spark-submit (or the environment) already chose a master."""
    if os.environ.get("MASTER"):
        return True
    from pyspark import SparkConf

    return SparkConf().contains("spark.master")


def rows_frame(spark: SparkSession, rows) -> DataFrame:
    """A DataFrame of contract rows (dicts from curation.schema builders), with the exact types."""
    from pyspark.sql.pandas.types import from_arrow_schema

    from curation import schema

    table = schema.rows_to_table(rows)
    return spark.createDataFrame(table, schema=from_arrow_schema(schema.SCHEMA))


def checkpoint(df: DataFrame) -> DataFrame:
    """Materialise and cut the lineage: the checkpoint directory if the job set one, else local."""
    if df.sparkSession.sparkContext.getCheckpointDir():
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


BROADCAST_ROWS = 2_000_000  # id lists up to this size are shipped to every task (~100 MB)


def small_side(df: DataFrame, rows: int | None = None) -> DataFrame:
    """`df` with a broadcast hint when it is small enough (`rows`, counted when not given), so
    joining it to the full rows does not shuffle them (Spark cannot size a checkpointed frame
    itself and would sort-merge join)."""
    return F.broadcast(df) if (df.count() if rows is None else rows) <= BROADCAST_ROWS else df
