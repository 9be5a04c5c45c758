"""The Spark session a job runs in, and the memory settings that keep every job bounded by bytes.

Under `spark-submit` the master and resources come from the command line; run as plain Python the
job gets a local session on every core. Steps never create sessions: jobs do, through here.

Memory is bounded by bytes, never by a count of rows (an image row is 1000x a text row):
* Arrow batches to and from Python workers hold at most ARROW_BATCH_BYTES
  (`spark.sql.execution.arrow.maxBytesPerBatch`, besides Spark's row limit);
* the Parquet reader's batch of rows is sized from the data's bytes per row (`bound_memory`:
  `spark.sql.parquet.columnarReaderBatchSize` = READER_BATCH_BYTES / the largest bytes per row of
  the job's files), and the files it reads have byte-bounded row groups (curation.parquet_files);
* local mode gives the driver JVM (which is also the executor) a quarter of the machine's memory,
  between 1 GiB and 16 GiB (`driver_memory`), instead of Spark's 1 GiB default. A plain
  `python jobs/...` run sets it here; `spark-submit` starts its JVM before any of our code runs,
  so set-up installs `configs/spark/spark-env.sh` into the venv's Spark, which applies the same
  rule to local masters. An explicit `--driver-memory` / `spark.driver.memory` always wins; on a
  cluster, size the driver and executors as usual (the jobs need little driver memory: only ids,
  counts and small verdict tables reach it).
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

ARROW_BATCH_BYTES = 16 * 2**20
READER_BATCH_BYTES = 16 * 2**20
READER_BATCH_MAX_ROWS = 4096  # Spark's default: small rows keep it

DEFAULT_CONF = {
    # Arrow batches between the JVM and Python workers, reused workers so that models load once.
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxBytesPerBatch": str(ARROW_BATCH_BYTES),
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
    # Steps report their own progress (curation.progress); Spark's bars would garble those lines.
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.log.level": "WARN",
}


def session(app_name: str = "keyeforge", conf: dict[str, str] | None = None) -> SparkSession:
    # Plain `python jobs/x.py` runs: executors use this interpreter (and its packages).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    if not _master_given():
        builder = builder.master(f"local[{os.cpu_count() or 1}]")
        if not (os.environ.get("SPARK_DRIVER_MEMORY") or "spark.driver.memory" in (conf or {})):
            builder = builder.config("spark.driver.memory", driver_memory())
    for key, value in {**DEFAULT_CONF, **(conf or {})}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    sc = spark.sparkContext
    if sc.master.startswith("local") and not sc.getConf().contains("spark.sql.shuffle.partitions"):
        # One machine: a few shuffle partitions per core instead of Spark's 200 (every shuffled
        # table here is narrow: ids, keys, verdicts; the shard writer sets its own count).
        spark.conf.set("spark.sql.shuffle.partitions", str(2 * sc.defaultParallelism))
    return spark


def machine_memory() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit_file).read().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def driver_memory(total: int | None = None) -> str:
    """The local driver's heap: a quarter of the memory, between 1 GiB and 16 GiB (as
    configs/spark/spark-env.sh computes it for spark-submit)."""
    quarter_mib = (machine_memory() if total is None else total) // 4 // 2**20
    return f"{min(16384, max(1024, quarter_mib))}m"


def bound_memory(spark: SparkSession, bytes_per_row: float) -> int:
    """Bound a session's batches by bytes (see the module doc), also when a caller made the
    session: Arrow batches to Python, and the Parquet reader's rows from the data's bytes per row.
    Returns the reader's batch rows."""
    if spark.conf.get("spark.sql.execution.arrow.maxBytesPerBatch", None) is None:
        spark.conf.set("spark.sql.execution.arrow.maxBytesPerBatch", str(ARROW_BATCH_BYTES))
    rows = int(min(READER_BATCH_MAX_ROWS, max(1, READER_BATCH_BYTES // max(1.0, bytes_per_row))))
    spark.conf.set("spark.sql.parquet.columnarReaderBatchSize", str(rows))
    return rows


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


BROADCAST_SHARE = 16  # a broadcast table may take 1/16 of the driver's heap


def broadcast_budget(spark: SparkSession) -> int:
    """Bytes a broadcast table may hold: it is built in the driver and kept by every executor."""
    heap = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()
    return int(heap) // BROADCAST_SHARE


def small_side(df: DataFrame, rows: int | None = None, row_bytes: int = 100) -> DataFrame:
    """`df` with a broadcast hint when it is small enough (`rows` of about `row_bytes`, counted
    when not given) for the driver's heap, so joining it to the full rows does not shuffle them
    (Spark cannot size a checkpointed frame itself and would sort-merge join). A larger table is
    joined by shuffling: slower, never out of memory."""
    rows = df.count() if rows is None else rows
    return F.broadcast(df) if rows * row_bytes <= broadcast_budget(df.sparkSession) else df
