"""The kept shards of a job that only rejects rows: each input shard copied without its rejects.

A filtering job (jobs/dedup.py) changes no row; it marks some rejected. Its kept rows are then the
input shards minus those rows, and they are written that way: one output shard per input shard
(same order and numbering, rows in their input order), read, filtered and written by pyarrow in
one task per shard. No row's content goes through a Spark shuffle, which is most of the cost of
hash-sharding every row again (`writer.write_shards`).

Which rows to drop is known by position: the job reads its shards `with_row_positions` (each
row's file name and index in that file, from Spark's Parquet metadata), the steps carry those
columns along, and the rejected rows' positions are collected (8 bytes a row) and broadcast to
the copy tasks. Positions, not ids: exact copies share an id, and only one of them may be kept.
The output depends on the input files and the rejected positions only: the same bytes whatever
Spark's partitioning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

ROW_FILE = "_row_file"  # the name of the input file a row was read from
ROW_INDEX = "_row_index"  # the row's index in that file
POSITIONS = (ROW_FILE, ROW_INDEX)


def with_row_positions(df: DataFrame) -> DataFrame:
    """A Parquet scan with each row's position: file name and row index within the file."""
    return df.withColumn(ROW_FILE, F.col("_metadata.file_name")).withColumn(ROW_INDEX, F.col("_metadata.row_index"))


def copy_kept_shards(
    spark: SparkSession, files: Sequence[str], rejected: DataFrame, n_rejected: int, write_table
) -> list[dict]:
    """Copy every file of `files` without the rows at the positions in `rejected` (columns
    `POSITIONS`, `n_rejected` rows).

    `write_table(shard, table) -> stats` writes output shard `shard` (the file's position in
    `files`); the stats of every shard are returned in shard order.
    """
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError("the input shards of a filtered copy need distinct file names")
    drop = _positions_by_file(rejected, names, n_rejected)
    tasks = min(len(files), 4 * spark.sparkContext.defaultParallelism)
    shard_numbers = spark.range(len(files), numPartitions=tasks)
    shared = spark.sparkContext.broadcast(drop)
    try:
        copies = shard_numbers.mapInArrow(
            _CopyShards([str(f) for f in files], shared, write_table), write_table.stats_schema
        )
        found = sorted((r.asDict() for r in copies.collect()), key=lambda r: r["shard"])
    finally:
        shared.unpersist()
    if [r["shard"] for r in found] != list(range(len(files))):
        raise RuntimeError(f"filtered copy wrote {len(found)} of {len(files)} shards")
    return found


def _positions_by_file(rejected: DataFrame, names: list[str], n_rejected: int) -> list[np.ndarray]:
    """Per file of `names`, the sorted row indices to drop; every rejected position checked."""
    table = rejected.select(*POSITIONS).toArrow()
    if table.num_rows != n_rejected:
        raise RuntimeError(f"{table.num_rows} rejected positions for {n_rejected} rejected rows")
    # Spark gives file names URL-encoded (a space as %20).
    file_of = {name: i for i, name in enumerate(names)}
    files = [file_of.get(unquote(name), -1) for name in table.column(ROW_FILE).to_pylist()]
    if -1 in files:
        unknown = unquote(table.column(ROW_FILE)[files.index(-1)].as_py())
        raise ValueError(f"a rejected row comes from {unknown!r}, which is not one of the job's input shards")
    files = np.asarray(files, dtype=np.int64)
    rows = table.column(ROW_INDEX).to_numpy()
    order = np.lexsort((rows, files))  # one sort, then each file's run of rows
    files, rows = files[order], rows[order]
    if np.any((files[1:] == files[:-1]) & (rows[1:] == rows[:-1])):
        raise RuntimeError("a row is rejected twice: not a position per row")
    bounds = np.searchsorted(files, np.arange(len(names) + 1))
    drop = [rows[bounds[i] : bounds[i + 1]] for i in range(len(names))]
    return drop


class _CopyShards:
    """mapInArrow function: shard numbers -> the stats of each shard written."""

    def __init__(self, files: list[str], drop, write_table):
        self.files, self.drop, self.write_table = files, drop, write_table

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for shard in batch.column(0).to_pylist():
                table = pq.ParquetFile(self.files[shard]).read()
                drop = self.drop.value[shard]
                if len(drop) and drop[-1] >= table.num_rows:
                    raise RuntimeError(
                        f"row {drop[-1]} of {self.files[shard]} is rejected, but it has {table.num_rows}"
                    )
                keep = np.ones(table.num_rows, dtype=bool)
                keep[drop] = False
                yield self.write_table(shard, table.filter(pa.array(keep)))
