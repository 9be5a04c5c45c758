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
_FILE_STATS = pa.schema([("file", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64()), ("steps", pa.string())])


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

    def write_rows(self, name: str, key: str, source, record: dict | None = None,
                   row_group_bytes: int = parquet_files.ROW_GROUP_BYTES, row_steps: Sequence = ()) -> dict:
        """Materialise every row of `source` as Parquet files written by the Python workers, each
        row with its size in `_bytes` (its key comes from its place in the files, not stored).

        `source` is a DataFrame, or source plans (curation.sources.SourcePlan: units and a reader
        of rows with the contract's columns and `_reject`), whose readers then run in the task
        that writes the rows, so no row crosses into the JVM and back.
        `row_steps` (curation.steps.RowStep) run on each kept row in the same pass, before it is
        written: their refusals are in the rows' `_reject`, their facts are recorded as results
        of their own (`facts` name, this key), and the record gets each one's seconds (summed over
        tasks) and its facts' row count under `row_steps`.
        """
        folder = self._start(name, key)
        if isinstance(source, DataFrame):
            df = source.drop(ROW_KEY, ROW_BYTES)
            arrow_schema = to_arrow_schema(df.schema).append(pa.field(ROW_BYTES, pa.int64()))
            runs = [df.mapInArrow(_WriteRows(str(folder), arrow_schema, row_group_bytes, list(row_steps)), from_arrow_schema(_FILE_STATS))]
        else:
            from curation.sources.common import ROW_SCHEMA

            arrow_schema = ROW_SCHEMA.append(pa.field(ROW_BYTES, pa.int64()))
            runs = [
                plan.units.mapInArrow(
                    _WriteRows(str(folder), arrow_schema, row_group_bytes, list(row_steps), plan.reader, f"{i:03d}-"),
                    from_arrow_schema(_FILE_STATS),
                )
                # the plans with the largest tasks first: Spark starts a stage's tasks in order, and a
                # long task started last would run alone at the end
                for i, plan in sorted(enumerate(source), key=lambda item: -item[1].task_bytes)
            ]
        stats_frame = runs[0]
        for more in runs[1:]:
            stats_frame = stats_frame.unionByName(more)
        stats = [r.asDict() for r in stats_frame.collect()]
        files = sorted(r["file"] for r in stats)
        steps_done = {}
        for step in row_steps:
            seconds = sum(json.loads(r["steps"]).get(step.name, {}).get("seconds", 0.0) for r in stats)
            facts = sorted(f for r in stats for f in json.loads(r["steps"]).get(step.name, {}).get("facts", []))
            steps_done[step.name] = {"seconds": round(seconds, 3)}
            if step.facts and facts:
                facts_record = self._register(step.facts, key, facts, from_arrow_schema(step.facts_schema))
                steps_done[step.name][f"{step.facts}_rows"] = facts_record["rows"]
        return self._complete(folder, {
            **(record or {}),
            "files": files,
            **_counts(files, "_reject" in arrow_schema.names),
            "bytes": sum(r["bytes"] for r in stats),
            "schema": from_arrow_schema(arrow_schema).json(),
            "row_steps": steps_done,
        })

    def _register(self, name: str, key: str, files: list[str], spark_schema) -> dict:
        """Record Parquet files written elsewhere (by row steps, beside the rows) as a complete result."""
        folder = self._start(name, key)
        return self._complete(folder, {"files": files, **_counts(files, False), "schema": spark_schema.json()})

    def read_rows(self, spark: SparkSession, record: dict) -> DataFrame:
        """The materialised rows, each with its row key (`with_row_key`)."""
        return with_row_key(self.read_frame(spark, record), record["files"])

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) if self.root.exists() else 0


def _counts(files: Sequence[str], marked: bool) -> dict:
    """{"rows"} of Parquet files from their footers and, when `marked`, {"rejected",
    "rejected_by_step"} from their `_reject` column alone."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    counts: dict[str, Any] = {"rows": sum(pq.read_metadata(f).num_rows for f in files)}
    if marked:
        by_step: dict[str, int] = {}
        for f in files:
            steps = pc.struct_field(pq.read_table(f, columns=["_reject"]).column("_reject").combine_chunks(), "step")
            for item in pc.value_counts(steps.drop_null()).to_pylist():
                by_step[item["values"]] = by_step.get(item["values"], 0) + item["counts"]
        counts["rejected"] = sum(by_step.values())
        counts["rejected_by_step"] = dict(sorted(by_step.items()))
    return counts


class _WriteRows:
    """mapInArrow function: the task's rows -> one Parquet file (part-PPPPP.parquet, P = the task's
    partition), streamed with byte-bounded row groups, after its row steps checked each kept row;
    yields (file, rows, bytes, per step: seconds and fact files)."""

    def __init__(self, folder: str, arrow_schema: pa.Schema, row_group_bytes: int, row_steps: list,
                 reader: Callable | None = None, prefix: str = ""):
        self.folder, self.schema, self.row_group_bytes = folder, arrow_schema, row_group_bytes
        self.row_steps, self.reader, self.prefix = row_steps, reader, prefix

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import time

        if self.reader is not None:  # a source's units in, its rows out: read here, in this task
            batches = self.reader(batches)
        partition = TaskContext.get().partitionId()
        path = os.path.join(self.folder, f"part-{self.prefix}{partition:05d}.parquet")
        sink = None
        seconds = {step.name: 0.0 for step in self.row_steps}
        facts_sinks: dict[str, parquet_files.ParquetSink] = {}
        for batch in batches:
            if not batch.num_rows:
                continue
            if self.row_steps:
                rows = batch.to_pylist()
                for row in rows:
                    for step in self.row_steps:
                        if row["_reject"] is not None:
                            break
                        facts: list[dict] | None = [] if step.facts else None
                        start = time.perf_counter()
                        problem = step.check_or_refuse(row, facts)
                        seconds[step.name] += time.perf_counter() - start
                        if problem:
                            row["_reject"] = {"step": step.name, "reason": problem[0], "detail": problem[1]}
                        if facts:
                            if step.name not in facts_sinks:
                                facts_path = os.path.join(self.folder, f"{step.facts}-{self.prefix}{partition:05d}.parquet")
                                facts_sinks[step.name] = parquet_files.ParquetSink(facts_path, step.facts_schema)
                            facts_sinks[step.name].write(pa.RecordBatch.from_pylist(facts, schema=step.facts_schema))
                batch = pa.RecordBatch.from_pylist(rows, schema=batch.schema)
            sink = sink or parquet_files.ParquetSink(path, self.schema, self.row_group_bytes)
            sink.write(batch.append_column(ROW_BYTES, pa.array(parquet_files.row_bytes(batch), pa.int64())))
        if sink is not None:
            stats = sink.close()
            steps = {name: {"seconds": seconds[name], "facts": []} for name in seconds}
            for name, facts_sink in facts_sinks.items():
                steps[name]["facts"].append(facts_sink.close()["path"])
            yield pa.RecordBatch.from_pylist(
                [{"file": stats["path"], "rows": stats["rows"], "bytes": stats["bytes"], "steps": json.dumps(steps)}],
                schema=_FILE_STATS,
            )


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
