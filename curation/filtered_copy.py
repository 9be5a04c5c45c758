"""The kept shards of a job that only rejects rows: each input shard copied without its rejects.

A filtering job (jobs/dedup.py) changes no row; it marks some rejected. Its kept rows are then the
input shards minus those rows, and they are written that way: one output shard per input shard
(same order and numbering, rows in their input order), read, filtered and written by pyarrow in
one task per shard. No row's content goes through a Spark shuffle, which is most of the cost of
hash-sharding every row again (`writer.write_shards`).

Which rows to drop: the rejected ids, collected once and broadcast to every task, which drops
its shard's rows with those ids. (More rejected ids than `curation.spark.BROADCAST_ROWS`: a scan of
the input's `id` column, semi-joined to them and grouped per file, gives each task its own list.)
The output depends on the input files and the rejected ids only: the same bytes whatever Spark's
partitioning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from curation.spark import BROADCAST_ROWS


def copy_kept_shards(
    spark: SparkSession,
    files: Sequence[str],
    rejected_ids: DataFrame,
    n_rejected: int,
    write_table,
) -> list[dict] | None:
    """Copy every file of `files` without the rows whose id is in `rejected_ids` (column id,
    `n_rejected` rows).

    `write_table(shard, table) -> stats` writes output shard `shard` (the file's position in
    `files`); the stats of every shard are returned in shard order. None, with nothing left written,
    when an id is not enough to tell a rejected row: a rejected id that the files hold more than
    once (exact copies, one of them kept); the caller then writes the rows another way.
    """
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError("the input shards of a filtered copy need distinct file names")
    if n_rejected <= BROADCAST_ROWS:
        ids = rejected_ids.select("id").toArrow().column("id").combine_chunks()
        drop: Broadcast | list[list[str]] = spark.sparkContext.broadcast(ids)
    else:
        drop = _drop_lists(spark, files, names, rejected_ids)
    tasks = min(len(files), 4 * spark.sparkContext.defaultParallelism)
    shard_numbers = spark.range(len(files), numPartitions=tasks)
    schema = T.StructType([*write_table.stats_schema.fields, T.StructField("dropped", T.LongType())])
    stats = shard_numbers.mapInArrow(_CopyShards([str(f) for f in files], drop, write_table), schema)
    found = sorted((r.asDict() for r in stats.collect()), key=lambda r: r["shard"])
    if isinstance(drop, Broadcast):
        drop.unpersist()
    if [r["shard"] for r in found] != list(range(len(files))):
        raise RuntimeError(f"filtered copy wrote {len(found)} of {len(files)} shards")
    # Each task dropped every row holding a rejected id: more rows than were rejected means some
    # rejected id also names a kept row.
    if sum(r.pop("dropped") for r in found) != n_rejected:
        for r in found:
            Path(r["path"]).unlink(missing_ok=True)
        return None
    return found


def _drop_lists(
    spark: SparkSession, files: Sequence[str], names: list[str], rejected_ids: DataFrame
) -> list[list[str]]:
    """Per file, the ids of its rows that are rejected (a scan of the files' id column)."""
    ids = spark.read.schema("id string").parquet(*files)
    ids = ids.select(F.element_at(F.split(F.input_file_name(), "/"), -1).alias("name"), "id")
    gone = ids.join(rejected_ids.select("id").distinct(), "id", "left_semi")
    lists = dict(gone.groupBy("name").agg(F.collect_list("id").alias("drop")).collect())
    return [lists.get(name, []) for name in names]


class _CopyShards:
    """mapInArrow function: shard numbers -> the stats of each shard written, with how many rows
    it dropped."""

    def __init__(self, files: list[str], drop: Broadcast | list[list[str]], write_table):
        self.files, self.drop, self.write_table = files, drop, write_table

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for shard in batch.column(0).to_pylist():
                table = pq.read_table(self.files[shard])
                drop = self.drop.value if isinstance(self.drop, Broadcast) else pa.array(self.drop[shard], pa.string())
                keep = pc.invert(pc.is_in(table.column("id"), drop))
                kept = table.filter(keep)
                stats = self.write_table(shard, kept)
                dropped = pa.array([table.num_rows - kept.num_rows], pa.int64())
                yield stats.append_column("dropped", dropped)
