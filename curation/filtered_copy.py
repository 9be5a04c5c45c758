"""The kept shards of a job that only rejects rows: each input shard copied without its rejects.

A filtering job (jobs/dedup.py) changes no row; it marks some rejected. Its kept rows are then the
input shards minus those rows, and they are written that way: one output shard per input shard
(same order and numbering, rows in their input order), read, filtered and written by pyarrow in
one task per shard, streamed by row group. No row's content goes through a Spark shuffle, which is
most of the cost of hash-sharding every row again (`writer.write_shards`).

Which rows to drop is known by position: the runner names every row of its input files by `_row`
(file number << 32 | row index, `curation.workdir.with_row_key`); the rejected rows' keys are
collected (8 bytes a row), grouped per file and broadcast to the copy tasks. Positions, not ids:
exact copies share an id, and only one of them may be kept. The output depends on the input files
and the rejected positions only: the same bytes whatever Spark's partitioning.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from curation.parquet_files import bytes_per_row
from curation.workdir import ROW_KEY, file_and_index

COPY_BATCH_BYTES = 16 * 2**20


def copy_kept_shards(spark: SparkSession, files: Sequence[str], rejected: DataFrame, n_rejected: int, sink) -> list[dict]:
    """Copy every file of `files` without the rows whose keys are in `rejected` (column `_row`,
    `n_rejected` rows).

    `sink.write(shard, parts) -> stats` writes output shard `shard` (the file's position in
    `files`) from a stream of Arrow batches; the stats of every shard are returned in shard order.
    """
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError("the input shards of a filtered copy need distinct file names")
    drop = _positions_by_file(rejected, len(files), n_rejected)
    tasks = min(len(files), 4 * spark.sparkContext.defaultParallelism)
    shard_numbers = spark.range(len(files), numPartitions=tasks)
    shared = spark.sparkContext.broadcast(drop)
    try:
        copies = shard_numbers.mapInArrow(_CopyShards([str(f) for f in files], shared, sink), sink.stats_schema)
        found = sorted((r.asDict() for r in copies.collect()), key=lambda r: r["shard"])
    finally:
        shared.unpersist()
    if [r["shard"] for r in found] != list(range(len(files))):
        raise RuntimeError(f"filtered copy wrote {len(found)} of {len(files)} shards")
    return found


def _positions_by_file(rejected: DataFrame, n_files: int, n_rejected: int) -> list[np.ndarray]:
    """Per file, the sorted row indices to drop; every rejected key checked."""
    keys = rejected.select(ROW_KEY).toArrow().column(ROW_KEY).to_numpy()
    if len(keys) != n_rejected:
        raise RuntimeError(f"{len(keys)} rejected positions for {n_rejected} rejected rows")
    files, rows = file_and_index(np.sort(keys))
    if len(files) and (files.min() < 0 or files.max() >= n_files):
        raise ValueError("a rejected row comes from a file that is not one of the job's input shards")
    if np.any(np.diff(np.sort(keys)) == 0):
        raise RuntimeError("a row is rejected twice: not a position per row")
    bounds = np.searchsorted(files, np.arange(n_files + 1))
    return [rows[bounds[i] : bounds[i + 1]] for i in range(n_files)]


class _CopyShards:
    """mapInArrow function: shard numbers -> the stats of each shard written."""

    def __init__(self, files: list[str], drop, sink):
        self.files, self.drop, self.sink = files, drop, sink

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for shard in batch.column(0).to_pylist():
                stats = self.sink.write(shard, self._kept(shard))
                yield pa.RecordBatch.from_pylist([stats], schema=self.sink.arrow_stats_schema)

    def _kept(self, shard: int) -> Iterator[pa.RecordBatch]:
        path = self.files[shard]
        drop = self.drop.value[shard]
        parquet = pq.ParquetFile(path)
        if len(drop) and drop[-1] >= parquet.metadata.num_rows:
            raise RuntimeError(f"row {drop[-1]} of {path} is rejected, but it has {parquet.metadata.num_rows}")
        batch_rows = max(1, int(COPY_BATCH_BYTES // max(1.0, bytes_per_row([path]))))
        start = 0
        for part in parquet.iter_batches(batch_size=batch_rows, use_threads=False):
            keep = np.ones(part.num_rows, dtype=bool)
            inside = drop[(drop >= start) & (drop < start + part.num_rows)] - start
            keep[inside] = False
            start += part.num_rows
            yield part.filter(pa.array(keep))
