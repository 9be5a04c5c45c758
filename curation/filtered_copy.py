"""The kept shards of a job that only rejects rows: each input shard copied without its rejects.

A filtering job (jobs/dedup.py) changes no row; it marks some rejected. Its kept rows are then the
input shards minus those rows, and they are written that way: one output shard per input shard
(same order and numbering, rows in their input order), read, filtered and written by pyarrow in
one task per shard. No row's content goes through a Spark shuffle, which is most of the cost of
hash-sharding every row again (`writer.write_shards`).

Which rows to drop comes from a scan of the input's `id` column alone (with each row's file name),
semi-joined to the rejected ids and grouped per file; a shard's task then gets its file's list.
The output depends on the input files and the rejected ids only: the same bytes whatever Spark's
partitioning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation.spark import checkpoint, small_side


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
    `files`); the stats of every shard are returned in shard order. None, with nothing written,
    when an id is not enough to tell a rejected row: a rejected id that the files hold more than
    once (exact copies, one of them kept); the caller then writes the rows another way.
    """
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError("the input shards of a filtered copy need distinct file names")
    ids = spark.read.schema("id string").parquet(*files)
    ids = ids.select(F.element_at(F.split(F.input_file_name(), "/"), -1).alias("name"), "id")
    gone = checkpoint(ids.join(small_side(rejected_ids, n_rejected), "id", "left_semi"))
    if gone.count() != n_rejected:
        return None
    dropped = gone.groupBy("name").agg(F.collect_list("id").alias("drop"))
    shards = spark.createDataFrame(
        [(i, str(f), n) for i, (f, n) in enumerate(zip(files, names))], "shard int, path string, name string"
    )
    tasks = shards.join(dropped, "name", "left").select("shard", "path", "drop")
    # One shard per task where the cores allow it: a range of shard numbers per partition.
    tasks = tasks.repartitionByRange(len(files), "shard")
    stats = tasks.mapInArrow(_CopyShards(write_table), write_table.stats_schema)
    found = sorted((r.asDict() for r in stats.collect()), key=lambda r: r["shard"])
    if [r["shard"] for r in found] != list(range(len(files))):
        raise RuntimeError(f"filtered copy wrote {len(found)} of {len(files)} shards")
    return found


class _CopyShards:
    """mapInArrow function: (shard, path, drop) rows -> the stats of each shard written."""

    def __init__(self, write_table):
        self.write_table = write_table

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for task in batch.to_pylist():
                table = pq.read_table(task["path"])
                if task["drop"]:
                    table = table.filter(pc.invert(pc.is_in(table.column("id"), pa.array(task["drop"], pa.string()))))
                yield self.write_table(task["shard"], table)
