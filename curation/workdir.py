"""A job's work folder (`OUTPUT/_work/`): step results persisted so that a killed job resumes.

Every result is stored under `NAME-KEY/`, where KEY hashes everything the result depends on: the
key of its input (which hashes the sources and every step before) and its own settings. A result
is complete once its `_complete.json` exists (written last, atomically); anything else in the
folder is an interrupted attempt and is overwritten. A re-run computes the same keys, so it finds
what the killed run finished and recomputes only the rest; a changed setting changes the keys of
exactly the results that depend on it.

Two kinds of result:

* rows (`write_rows`): whole rows, written by the Python workers as Parquet files with
  byte-bounded row groups (`curation.parquet_files`), one file per task; this is where a job's
  input rows are materialised once (the "base" every step reads);
* frames (`write_frame`): narrow results (ids, marks, scores), written by Spark.

The writer removes the whole folder when the output's manifest is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

from curation import parquet_files
from curation.schema.manifest import WORK

COMPLETE = "_complete.json"
FILE_SHIFT = 32  # a row key is file number << 32 | row index in the file
ROW_KEY = "_row"
ROW_BYTES = "_bytes"  # materialised rows carry their size (parquet_files.row_bytes): shard counts read it
# (sha256, phash) of images a step decoded (validation): any step may use them, whatever the rows,
# since a pHash is a function of the image bytes alone.
PHASHES = "image_phash"
_FILE_STATS = pa.schema([("file", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64())])


def hash_key(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (dataclass configs as dicts)."""
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class WorkFolder:
    def __init__(self, output: str | Path):
        self.root = Path(output) / WORK

    def path(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}"

    def find(self, name: str, key: str) -> dict | None:
        """The record of a complete result, or None."""
        marker = self.path(name, key) / COMPLETE
        return json.loads(marker.read_text()) if marker.is_file() else None

    def find_all(self, name: str) -> list[dict]:
        """The records of every complete result named `name`, whatever its key."""
        found = []
        for marker in sorted(self.root.glob(f"{name}-*/{COMPLETE}")) if self.root.exists() else ():
            found.append(json.loads(marker.read_text()))
        return found

    def _start(self, name: str, key: str) -> Path:
        folder = self.path(name, key)
        shutil.rmtree(folder, ignore_errors=True)  # an interrupted attempt
        folder.mkdir(parents=True)
        return folder

    def _complete(self, folder: Path, record: dict) -> dict:
        tmp = folder / f".{COMPLETE}.tmp"
        tmp.write_text(json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")
        tmp.replace(folder / COMPLETE)
        return record

    def annotate(self, name: str, key: str, values: dict) -> dict:
        """Add `values` to a complete result's record (e.g. how long it took); the record."""
        folder = self.path(name, key)
        return self._complete(folder, {**json.loads((folder / COMPLETE).read_text()), **values})

    # --- narrow frames ----------------------------------------------------------------------------

    def write_frame(self, name: str, key: str, df: DataFrame, record: dict | None = None) -> dict:
        folder = self._start(name, key)
        df.write.parquet(str(folder / "data"))
        files = sorted(str(p) for p in (folder / "data").glob("*.parquet"))
        counts = _counts(files, "_reject" in df.columns)  # from the files, without another Spark job
        return self._complete(folder, {**(record or {}), "files": files, **counts, "schema": df.schema.json()})

    def read_frame(self, spark: SparkSession, record: dict) -> DataFrame:
        from pyspark.sql.types import StructType

        schema = StructType.fromJson(json.loads(record["schema"]))
        if not record["files"]:
            return spark.createDataFrame([], schema)
        return spark.read.schema(schema).parquet(*record["files"])

    def persisted(self, spark: SparkSession, name: str, key: str, compute: Callable[[], DataFrame]) -> tuple[DataFrame, bool]:
        """(the frame `compute()` gives, whether it was found already persisted); computed and
        persisted the first time."""
        record = self.find(name, key)
        reused = record is not None
        if record is None:
            record = self.write_frame(name, key, compute())
        return self.read_frame(spark, record), reused

    # --- whole rows -------------------------------------------------------------------------------

    def write_rows(self, name: str, key: str, df: DataFrame, record: dict | None = None,
                   row_group_bytes: int = parquet_files.ROW_GROUP_BYTES) -> dict:
        """Materialise every row of `df` as Parquet files written by the Python workers, each row
        with its size in `_bytes` (its key comes from its place in the files, not stored)."""
        folder = self._start(name, key)
        df = df.drop(ROW_KEY, ROW_BYTES)
        arrow_schema = to_arrow_schema(df.schema).append(pa.field(ROW_BYTES, pa.int64()))
        writer = _WriteRows(str(folder), arrow_schema, row_group_bytes)
        stats = df.mapInArrow(writer, from_arrow_schema(_FILE_STATS)).collect()
        files = sorted(r["file"] for r in stats)
        return self._complete(folder, {
            **(record or {}),
            "files": files,
            **_counts(files, "_reject" in df.columns),
            "bytes": sum(r["bytes"] for r in stats),
            "schema": from_arrow_schema(arrow_schema).json(),
        })

    def read_rows(self, spark: SparkSession, record: dict) -> DataFrame:
        """The materialised rows, each with its row key (`with_row_key`)."""
        return with_row_key(self.read_frame(spark, record), record["files"])

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) if self.root.exists() else 0


def _counts(files: Sequence[str], marked: bool) -> dict:
    """{"rows"} of Parquet files from their footers, and {"rejected"} (rows whose `_reject` is set)
    when `marked`, reading that narrow column only."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts = {"rows": sum(pq.read_metadata(f).num_rows for f in files)}
    if marked:
        counts["rejected"] = sum(
            int(pc.sum(pc.is_valid(pq.read_table(f, columns=["_reject"]).column("_reject"))).as_py() or 0) for f in files
        )
    return counts


class _WriteRows:
    """mapInArrow function: the task's rows -> one Parquet file (part-PPPPP.parquet, P = the task's
    partition), streamed with byte-bounded row groups; yields its (file, rows, bytes)."""

    def __init__(self, folder: str, arrow_schema: pa.Schema, row_group_bytes: int):
        self.folder, self.schema, self.row_group_bytes = folder, arrow_schema, row_group_bytes

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        partition = TaskContext.get().partitionId()
        path = os.path.join(self.folder, f"part-{partition:05d}.parquet")
        sink = None
        for batch in batches:
            if batch.num_rows:
                sink = sink or parquet_files.ParquetSink(path, self.schema, self.row_group_bytes)
                sink.write(batch.append_column(ROW_BYTES, pa.array(parquet_files.row_bytes(batch), pa.int64())))
        if sink is not None:
            stats = sink.close()
            yield pa.RecordBatch.from_pylist([{"file": stats["path"], "rows": stats["rows"], "bytes": stats["bytes"]}], schema=_FILE_STATS)


def with_row_key(df: DataFrame, files: Sequence[str], column: str = ROW_KEY) -> DataFrame:
    """`df` (a scan of exactly `files`) with `column` = file number << 32 | row index in the file:
    a key unique within the files, from Spark's file metadata (nothing stored)."""
    names = [Path(f).name for f in files]
    if len(set(names)) != len(names):
        raise ValueError("row keys need the files' names to be distinct")
    if not names:
        return df.withColumn(column, F.lit(None).cast("long"))
    number = F.create_map(*[v for i, name in enumerate(names) for v in (F.lit(name), F.lit(i))])
    # Spark reports file names URL-encoded; url_decode reads "+" as a space, so protect it first.
    name = F.url_decode(F.regexp_replace(F.col("_metadata.file_name"), r"\+", "%2B"))
    key = F.shiftleft(F.element_at(number, name).cast("long"), FILE_SHIFT) + F.col("_metadata.row_index")
    return df.withColumn(column, key)


def file_and_index(row_keys) -> tuple[Any, Any]:
    """(file numbers, row indices) of row keys (numpy arrays)."""
    return row_keys >> FILE_SHIFT, row_keys & ((1 << FILE_SHIFT) - 1)
