"""Writing a job's output folder: funnel, stats, rejects, shards, card, and the manifest last.

    OUTPUT/part-00000.parquet ...   kept rows, exactly curation.schema.SCHEMA, sorted by id
    OUTPUT/_rejects/part-*.parquet  refused rows: id, source, step, reason, detail, origin
    OUTPUT/_funnel.json             per step, in pipeline order: in, out, rejected by reason
    OUTPUT/_stats.json              per step: seconds, reused, rows in and out, its own stats
    OUTPUT/card/                    the dataset card (README.md, plots, HTML)
    OUTPUT/_manifest.json           written last (curation.schema.manifest): else incomplete

The frame comes from `curation.runner`: every row, marked, read from materialised files, with
its size in `_bytes`. The funnel and the rejects read only the marks and a few narrow columns.
Determinism: a row's shard is a hash of its id modulo a shard count derived from the kept rows'
bytes, rows inside a shard are sorted by (id, source, extra), and each shard is streamed to
Parquet with row groups cut by bytes (curation.parquet_files): the same rows give the same bytes
whatever the Spark partitioning, cluster or run. Writing the kept rows is the one shuffle of
image bytes in a job; Spark's sort spills to disk, and each writing task holds one row group.

A job that only rejects rows of existing shards (jobs/dedup.py) passes them as `row_files` (the
runner's base files, so `_row` names file and row): its kept shards are those files without the
rejected rows, one per input file, in input row order (`filtered_copy`), without a shuffle.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from curation import schema
from curation.filtered_copy import copy_kept_shards
from curation.parquet_files import ROW_GROUP_BYTES, ParquetSink
from curation.schema.manifest import (
    CARD,
    FUNNEL,
    MANIFEST,
    REJECTS,
    STATS,
    WORK,
    OutputFolderError,
    file_sha256,
    read_manifest,
    write_manifest,
)
from curation.steps import REJECT, ROW, with_reject_column
from curation.workdir import ROW_BYTES, WorkFolder, hash_key

__all__ = ["MANIFEST", "OutputFolderError", "WriterConfig", "prepare_folder", "read_manifest", "write_output", "write_shards"]

REJECT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("step", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("origin", pa.string()),
    ]
)
REJECT_ROW_BYTES = 256  # a reject row's size, for the rejects' shard count
# What a shard writer returns for each file it wrote (Arrow, and as Spark sees it).
_STATS_SCHEMA = pa.schema(
    [("shard", pa.int32()), ("path", pa.string()), ("rows", pa.int64()), ("bytes", pa.int64()), ("sha256", pa.string())]
)
_SHARD_STATS = from_arrow_schema(_STATS_SCHEMA)


@dataclass
class WriterConfig:
    shard_bytes: int = 256 * 2**20  # target size of one shard (before compression)
    row_group_bytes: int = ROW_GROUP_BYTES  # a row group closes at the row that reaches this size
    compression: Literal["zstd", "snappy", "gzip", "lz4", "brotli", "none"] = "zstd"


def write_output(
    df: DataFrame,
    output: str,
    steps: Sequence[str],
    config: dict,
    writer: WriterConfig | None = None,
    card: bool = True,
    title: str | None = None,
    row_files: Sequence[str] = (),
    stats: dict | None = None,
    keep_work: bool = False,
) -> dict:
    """Write the folder for a frame of marked rows (the runner's), `steps` in pipeline order.

    Returns the manifest. `config` is the job's resolved configuration, recorded in the manifest;
    `stats` (the runner's record of the steps) is saved as `_stats.json` with the writer's own
    phases added. `row_files`: see the module doc. The work folder is removed once the manifest
    is written, unless `keep_work`.
    """
    writer = writer or WriterConfig()
    out = Path(output)
    prepare_folder(out)  # what an earlier run left goes (its work folder stays); a foreign folder is refused
    (out / REJECTS).mkdir()
    phases: dict[str, float] = {}
    log = _PhaseLog(out, phases)
    marked = with_reject_column(df)
    if row_files and ROW not in marked.columns:
        raise ValueError(f"row_files needs the runner's frame (column {ROW}: file and row of each row)")
    if not row_files and ROW_BYTES not in marked.columns:  # a frame made by hand: materialise it first
        from curation.runner import run_steps

        with log("rows"):
            key = hash_key("write_output", time.time_ns())
            marked = run_steps(marked.sparkSession, marked, [], WorkFolder(out), key, sources=[], log=lambda _: None).frame

    with log("funnel"):  # one narrow scan counts every step's rejects and sizes the kept rows
        funnel, kept_bytes = _funnel_and_kept_bytes(marked, steps, with_bytes=not row_files)
        (out / FUNNEL).write_text(json.dumps(funnel, indent=2, ensure_ascii=False) + "\n")
    n_rejected = funnel["input_rows"] - funnel["kept_rows"]
    with log("rejects"):
        reject_shards = _write_rejects(_reject_rows(marked), out, writer, n_rejected)
    with log("shards"):
        if row_files:
            sink = _ShardSink(str(out), schema.SCHEMA, writer)
            rejected_rows = marked.where(F.col(REJECT).isNotNull()).select(ROW)
            found = copy_kept_shards(marked.sparkSession, row_files, rejected_rows, n_rejected, sink)
            shards = [_shard_entry(r) for r in found]
        else:
            kept = marked.where(F.col(REJECT).isNull()).select(*schema.COLUMNS)
            shards = write_shards(kept, str(out), schema.SCHEMA, writer, total_size=kept_bytes, sort=("id", "source", "extra"))
    if sum(s["rows"] for s in shards) != funnel["kept_rows"]:  # a row lost or kept twice: never write that
        raise RuntimeError(f"the shards hold {sum(s['rows'] for s in shards)} rows, the funnel keeps {funnel['kept_rows']}")

    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "rows": sum(s["rows"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
        "rejects": {"rows": sum(s["rows"] for s in reject_shards), "shards": reject_shards},
        "config": config,
        "code_version": code_version(),
    }
    if stats is not None:  # the card shows it
        (out / STATS).write_text(json.dumps({**stats, "writer_seconds": phases}, indent=2, ensure_ascii=False, default=str) + "\n")
    if card:
        from curation.card import build_card

        with log("card"):
            build_card(out, manifest=manifest, title=title)
    if stats is not None:  # again, with the card's seconds
        (out / STATS).write_text(json.dumps({**stats, "writer_seconds": phases}, indent=2, ensure_ascii=False, default=str) + "\n")
    write_manifest(out, manifest)
    if not keep_work:
        WorkFolder(out).remove()
    return manifest


def _reject_rows(marked: DataFrame) -> DataFrame:
    return marked.filter(F.col(REJECT).isNotNull()).select(
        "id",
        "source",
        F.col(f"{REJECT}.step").alias("step"),
        F.col(f"{REJECT}.reason").alias("reason"),
        F.col(f"{REJECT}.detail").alias("detail"),
        F.get_json_object("extra", "$.origin").alias("origin"),
    )


def _write_rejects(rejected: DataFrame, out: Path, writer: WriterConfig, n_rejected: int) -> list[dict]:
    return write_shards(
        rejected,
        str(out / REJECTS),
        REJECT_SCHEMA,
        writer,
        total_size=REJECT_ROW_BYTES * n_rejected,
        sort=("step", "reason", "id", "source", "origin", "detail"),
    )


class _PhaseLog:
    """Prints each phase of writing an output and how long it took, and records it."""

    def __init__(self, out: Path, phases: dict[str, float]):
        self.out, self.phases = out, phases

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        print(f"[keyeforge] writing {phase} ...", file=sys.stderr, flush=True)
        yield
        self.phases[phase] = round(time.perf_counter() - start, 3)
        print(f"[keyeforge] writing {phase}: {self.phases[phase]:.1f}s", file=sys.stderr, flush=True)


def prepare_folder(out: Path) -> None:
    """Make `out` a folder a job may write, clearing what an earlier run left except its work
    folder (`_work/`, the persisted step results a re-run resumes from).

    The manifest goes first, so a folder being rewritten is never mistaken for a complete one.
    A non-empty folder that is not a keyeforge output is refused rather than cleared.
    """
    if out.exists():
        entries = {p.name for p in out.iterdir()}
        ours = {MANIFEST, FUNNEL, STATS, REJECTS, CARD, WORK, "_staging"}  # _staging: left by older versions
        foreign = {e for e in entries if e not in ours and not (e.startswith("part-") and e.endswith(".parquet"))}
        foreign -= {name for name in entries if name.startswith(".") and name.endswith(".tmp")}
        if foreign:
            raise OutputFolderError(
                f"output folder {out} holds files that no keyeforge job wrote ({sorted(foreign)[:5]}); "
                "choose an empty or new folder with output=DIR"
            )
        (out / MANIFEST).unlink(missing_ok=True)
        for name in entries - {MANIFEST, WORK}:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _funnel_and_kept_bytes(marked: DataFrame, steps: Sequence[str], with_bytes: bool = True) -> tuple[dict, int]:
    """(the funnel, bytes of the kept rows from their `_bytes`), from one narrow aggregation."""
    size = F.when(F.col(REJECT).isNull(), F.col(ROW_BYTES)) if with_bytes else F.lit(0)
    groups = marked.groupBy(F.col(f"{REJECT}.step").alias("step"), F.col(f"{REJECT}.reason").alias("reason"))
    counts = groups.agg(F.count(F.lit(1)).alias("count"), F.sum(size).alias("bytes")).collect()
    return funnel_of(counts, steps), sum(r["bytes"] or 0 for r in counts if r["step"] is None)


def funnel_of(counts: list, steps: Sequence[str]) -> dict:
    """The funnel from (step, reason, count) rows (step None: kept), steps in pipeline order."""
    total = sum(r["count"] for r in counts)
    by_step: dict[str, dict[str, int]] = {}
    for r in counts:
        if r["step"] is not None:
            by_step.setdefault(r["step"], {})[r["reason"]] = r["count"]
    unknown = set(by_step) - set(steps)
    if unknown:
        raise ValueError(f"rows rejected by steps {sorted(unknown)} that are not in the pipeline {list(steps)}")
    funnel, remaining = [], total
    for step in steps:
        rejected = dict(sorted(by_step.get(step, {}).items()))
        out = remaining - sum(rejected.values())
        funnel.append({"step": step, "in": remaining, "out": out, "rejected": rejected})
        remaining = out
    return {"input_rows": total, "kept_rows": remaining, "steps": funnel}


def write_shards(
    df: DataFrame,
    folder: str,
    arrow_schema: pa.Schema,
    writer: WriterConfig,
    total_size: int,
    sort: Sequence[str] = ("id",),
) -> list[dict]:
    """Write `df` as part-NNNNN.parquet files in `folder`; deterministic for the same rows.

    `total_size` (bytes of all rows) sets the shard count: ceil(total / shard_bytes).
    """
    n_shards = max(1, math.ceil(total_size / writer.shard_bytes))
    # A row's shard is the partition its id hashes to (hash partitioning is pmod of Murmur3 `hash`),
    # so each shard is written by a task of its own; hashing the shard number instead made some
    # tasks write several shards one after another while others had none.
    keyed = df.withColumn("_shard", F.pmod(F.hash("id"), F.lit(n_shards)).cast("int"))
    keyed = keyed.repartition(n_shards, "id").sortWithinPartitions("_shard", *sort)
    sink = _ShardSink(folder, arrow_schema, writer)
    stats = [r.asDict() for r in keyed.mapInArrow(_ShardJob(sink), _SHARD_STATS).collect()]
    if not stats:  # nothing kept: still one (empty) shard, so readers find the schema
        stats = [sink.write(0, [arrow_schema.empty_table()])]
    return [_shard_entry(r) for r in sorted(stats, key=lambda r: r["shard"])]


class _ShardSink:
    """Writes shard `n` of a folder from a stream of Arrow data (`ParquetSink`: row groups cut by
    bytes, fixed settings, so the same rows give the same bytes)."""

    stats_schema = _SHARD_STATS
    arrow_stats_schema = _STATS_SCHEMA

    def __init__(self, folder: str, arrow_schema: pa.Schema, writer: WriterConfig):
        self.folder, self.schema = folder, arrow_schema
        self.row_group_bytes = writer.row_group_bytes
        self.compression = writer.compression

    def open(self, shard: int) -> ParquetSink:
        path = os.path.join(self.folder, f"part-{shard:05d}.parquet")
        return ParquetSink(path, self.schema, self.row_group_bytes, self.compression)

    def close(self, shard: int, sink: ParquetSink) -> dict:
        written = sink.close()
        return {"shard": shard, "path": written["path"], "rows": written["rows"], "bytes": written["bytes"],
                "sha256": file_sha256(written["path"])}

    def write(self, shard: int, parts) -> dict:
        """Shard `shard` from an iterable of batches or tables; its stats."""
        sink = self.open(shard)
        try:
            for part in parts:
                sink.write(part)
        except BaseException:
            sink.abort()
            raise
        return self.close(shard, sink)


class _ShardJob:
    """Runs on executors: receives rows sorted by (_shard, sort keys), streams one file per shard
    (one row group in memory at a time) and yields each file's stats."""

    def __init__(self, sink: _ShardSink):
        self.sink = sink

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        shard, open_file = None, None
        for batch in batches:
            shard_ids = batch.column("_shard").to_numpy(zero_copy_only=False)
            cuts = [0, *(i for i in range(1, len(shard_ids)) if shard_ids[i] != shard_ids[i - 1]), len(shard_ids)]
            for start, stop in zip(cuts, cuts[1:]):
                if open_file is None or int(shard_ids[start]) != shard:
                    if open_file is not None:
                        yield pa.RecordBatch.from_pylist([self.sink.close(shard, open_file)], schema=_STATS_SCHEMA)
                    shard = int(shard_ids[start])
                    open_file = self.sink.open(shard)
                open_file.write(batch.slice(start, stop - start).drop_columns(["_shard"]))
        if open_file is not None:
            yield pa.RecordBatch.from_pylist([self.sink.close(shard, open_file)], schema=_STATS_SCHEMA)


def _shard_entry(stats: dict) -> dict:
    """A shard's manifest entry from its writer stats."""
    return {"path": Path(stats["path"]).name, "rows": stats["rows"], "bytes": stats["bytes"], "sha256": stats["sha256"]}


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("keyeforge")
    except PackageNotFoundError:
        ver = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{ver}+g{commit}" if commit else ver
