"""Writing a job's output folder: shards, rejects, funnel, card, and the manifest last.

    OUTPUT/part-00000.parquet ...   kept rows, exactly curation.schema.SCHEMA, sorted by id
    OUTPUT/_rejects/part-*.parquet  refused rows: id, source, step, reason, detail, origin
    OUTPUT/_funnel.json             per step, in pipeline order: in, out, rejected by reason
    OUTPUT/card/                    the dataset card (README.md, plots, HTML)
    OUTPUT/_manifest.json           written last: a folder without it is incomplete

Determinism: a row's shard is a hash of its id modulo a shard count derived from the total size,
rows inside a shard are sorted by id and cut into row groups of a fixed row count, and shards are
written by pyarrow with fixed settings. The same rows therefore give the same bytes whatever the
Spark partitioning, cluster or run.

The marked frame is computed once: it is staged to `_staging/` (so model scores are not
recomputed), then shards, rejects and the funnel are all read from the staged copy.

A job that only rejects rows of existing shards (jobs/dedup.py) reads them `with_row_positions` and
passes them as `row_files`: its kept shards are then those files without the rejected rows, one
per input file, in input row order (`filtered_copy`), equally reproducible and without shuffling
every row.
"""

from __future__ import annotations

import contextlib
import hashlib
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

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from curation import schema
from curation.filtered_copy import POSITIONS, copy_kept_shards
from curation.spark import checkpoint
from curation.steps import REJECT, with_reject_column

MANIFEST = "_manifest.json"
FUNNEL = "_funnel.json"
REJECTS = "_rejects"
STAGING = "_staging"
CARD = "card"

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
    row_group_rows: int = 256
    compression: str = "zstd"


class OutputFolderError(RuntimeError):
    pass


def write_output(
    df: DataFrame,
    output: str,
    steps: Sequence[str],
    config: dict,
    writer: WriterConfig | None = None,
    card: bool = True,
    title: str | None = None,
    stage: bool = True,
    row_files: Sequence[str] = (),
) -> dict:
    """Write the folder for a frame of contract rows marked by `steps` (in pipeline order).

    Returns the manifest. `config` is the job's resolved configuration, recorded in the manifest.
    `stage=False` reads the marked frame itself three times instead of a staged copy: for steps
    whose own work is already materialised (what remains is a scan and a broadcast join), it
    saves writing and reading back every row once.

    `row_files`: Parquet files holding exactly the frame's rows, unchanged (a filtering job's
    input shards, in order), which the frame was read from `with_row_positions`. The kept shards
    are then those files without their rejected rows, one output shard per input file
    (`filtered_copy`), and the marks are evaluated once, for the rejects; `stage` does not apply.
    """
    writer = writer or WriterConfig()
    if row_files and not set(POSITIONS) <= set(df.columns):
        raise ValueError(f"row_files needs the frame read with_row_positions (columns {POSITIONS})")
    out = Path(output)
    prepare_folder(out)
    log = _PhaseLog(out)
    marked = with_reject_column(df).select(*schema.COLUMNS, REJECT, *(POSITIONS if row_files else ()))
    (out / REJECTS).mkdir(exist_ok=True)
    if row_files:
        shards, reject_shards = _write_filtered_copy(marked, out, steps, writer, row_files, log)
    else:
        shards, reject_shards = _write_marked(marked, out, steps, writer, stage, log)
    shutil.rmtree(out / STAGING, ignore_errors=True)

    manifest = {
        "schema_version": schema.SCHEMA_VERSION,
        "rows": sum(s["rows"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "shards": shards,
        "rejects": {"rows": sum(s["rows"] for s in reject_shards), "shards": reject_shards},
        "config": config,
        "code_version": code_version(),
    }
    if card:
        from curation.card import build_card

        with log("card"):
            build_card(out, manifest=manifest, title=title)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n")
    return manifest


def _write_marked(marked: DataFrame, out: Path, steps: Sequence[str], writer: WriterConfig, stage: bool, log):
    """(kept shards, reject shards), every kept row hash-sharded by id (`write_shards`); writes the funnel."""
    if stage:
        with log(f"running {' -> '.join(steps)}"):
            staged = _stage(marked, out)
    else:
        staged = marked
    with log("funnel"):  # one scan counts every step's rejects and sizes the kept rows
        funnel, kept_bytes = _funnel_and_kept_bytes(staged, steps)
        (out / FUNNEL).write_text(json.dumps(funnel, indent=2, ensure_ascii=False) + "\n")
    with log("shards"):
        kept = staged.filter(F.col(REJECT).isNull()).drop(REJECT)
        shards = write_shards(kept, str(out), schema.SCHEMA, writer, total_size=kept_bytes)
    with log("rejects"):
        reject_shards = _write_rejects(_reject_rows(staged), out, writer, funnel["input_rows"] - funnel["kept_rows"])
    return shards, reject_shards


def _write_filtered_copy(
    marked: DataFrame, out: Path, steps: Sequence[str], writer: WriterConfig, row_files: Sequence[str], log
):
    """(kept shards, reject shards) when the kept rows are `row_files` without the rejects; writes the
    funnel."""
    with log("funnel"):  # the marks are evaluated here, once
        rejected = checkpoint(_reject_rows(marked, *POSITIONS))
        counts = [r.asDict() for r in rejected.groupBy("step", "reason").count().collect()]
        n_rejected = sum(r["count"] for r in counts)
        input_rows = sum(pq.read_metadata(f).num_rows for f in row_files)
        if n_rejected > input_rows:
            raise ValueError(f"{n_rejected} rows rejected but the row files hold {input_rows}: not the frame's rows")
        funnel = _funnel([*counts, {"step": None, "reason": None, "count": input_rows - n_rejected}], steps)
        (out / FUNNEL).write_text(json.dumps(funnel, indent=2, ensure_ascii=False) + "\n")
    with log("rejects"):
        reject_shards = _write_rejects(rejected.drop(*POSITIONS), out, writer, n_rejected)
    with log("shards"):
        table_writer = _TableWriter(str(out), schema.SCHEMA, writer.row_group_rows, writer.compression)
        stats = copy_kept_shards(marked.sparkSession, row_files, rejected, n_rejected, table_writer)
    shards = [_shard_entry(r) for r in stats]
    if sum(s["rows"] for s in shards) != funnel["kept_rows"]:  # a row lost or kept twice: never write that
        raise RuntimeError(
            f"the copied shards hold {sum(s['rows'] for s in shards)} rows, the funnel keeps {funnel['kept_rows']}"
        )
    return shards, reject_shards


def _stage(df: DataFrame, out: Path) -> DataFrame:
    """`df` written to `out/_staging/` and read back: later readers do not recompute it."""
    df.write.mode("overwrite").parquet(str(out / STAGING))
    # Read the files, not the folder: Spark skips folders whose names start with "_".
    return df.sparkSession.read.parquet(*sorted(str(p) for p in (out / STAGING).glob("*.parquet")))


def _reject_rows(marked: DataFrame, *extra: str) -> DataFrame:
    return marked.filter(F.col(REJECT).isNotNull()).select(
        "id",
        "source",
        F.col(f"{REJECT}.step").alias("step"),
        F.col(f"{REJECT}.reason").alias("reason"),
        F.col(f"{REJECT}.detail").alias("detail"),
        F.get_json_object("extra", "$.origin").alias("origin"),
        *extra,
    )


def _write_rejects(rejected: DataFrame, out: Path, writer: WriterConfig, n_rejected: int) -> list[dict]:
    return write_shards(
        rejected,
        str(out / REJECTS),
        REJECT_SCHEMA,
        writer,
        total_size=REJECT_ROW_BYTES * n_rejected,
        sort=("step", "reason", "id"),
    )


class _PhaseLog:
    """Prints each phase of writing an output and how long it took (long jobs show progress)."""

    def __init__(self, out: Path):
        self.out = out

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.time()
        print(f"[{self.out}] {phase} ...", file=sys.stderr, flush=True)
        yield
        print(f"[{self.out}] {phase}: {time.time() - start:.1f}s", file=sys.stderr, flush=True)


def prepare_folder(out: Path) -> None:
    """Make `out` an empty output folder, clearing what an earlier (possibly killed) run left.

    The manifest goes first, so a folder being rewritten is never mistaken for a complete one.
    A non-empty folder that is not a keyeforge output is refused rather than cleared.
    """
    if out.exists():
        entries = {p.name for p in out.iterdir()}
        ours = {MANIFEST, FUNNEL, REJECTS, STAGING, CARD}
        foreign = {e for e in entries if e not in ours and not (e.startswith("part-") and e.endswith(".parquet"))}
        foreign -= {name for name in entries if name.startswith(".") and name.endswith(".tmp")}
        if foreign:
            raise OutputFolderError(
                f"output folder {out} holds files that no keyeforge job wrote ({sorted(foreign)[:5]}); "
                "choose an empty or new folder with output=DIR"
            )
        (out / MANIFEST).unlink(missing_ok=True)
        for name in entries - {MANIFEST}:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def compute_funnel(marked: DataFrame, steps: Sequence[str]) -> dict:
    """Per step, in pipeline order: rows in, rows out, rows rejected by reason."""
    return _funnel_and_kept_bytes(marked, steps, with_bytes=False)[0]


def _funnel_and_kept_bytes(marked: DataFrame, steps: Sequence[str], with_bytes: bool = True) -> tuple[dict, int]:
    """(the funnel, approximate bytes of the kept rows), from one aggregation."""
    size = F.when(F.col(REJECT).isNull(), _row_size()) if with_bytes else F.lit(0)
    groups = marked.groupBy(F.col(f"{REJECT}.step").alias("step"), F.col(f"{REJECT}.reason").alias("reason"))
    counts = groups.agg(F.count(F.lit(1)).alias("count"), F.sum(size).alias("bytes")).collect()
    return _funnel(counts, steps), sum(r["bytes"] or 0 for r in counts if r["step"] is None)


def _funnel(counts: list, steps: Sequence[str]) -> dict:
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

    `total_size` (approximate bytes of all rows) sets the shard count: ceil(total / shard_bytes).
    """
    n_shards = max(1, math.ceil(total_size / writer.shard_bytes))
    # A row's shard is the partition its id hashes to (hash partitioning is pmod of Murmur3 `hash`),
    # so each shard is written by a task of its own; hashing the shard number instead made some
    # tasks write several shards one after another while others had none.
    keyed = df.withColumn("_shard", F.pmod(F.hash("id"), F.lit(n_shards)).cast("int"))
    keyed = keyed.repartition(n_shards, "id").sortWithinPartitions("_shard", *sort)
    write_table = _TableWriter(folder, arrow_schema, writer.row_group_rows, writer.compression)
    stats = [r.asDict() for r in keyed.mapInArrow(_ShardJob(write_table), _SHARD_STATS).collect()]
    if not stats:  # nothing kept: still one (empty) shard, so readers find the schema
        stats = write_table(0, arrow_schema.empty_table()).to_pylist()
    return [_shard_entry(r) for r in sorted(stats, key=lambda r: r["shard"])]


def _row_size():
    """Approximate in-memory bytes of a contract row, for choosing the shard count."""
    image_bytes = F.aggregate("images", F.lit(0).cast("long"), lambda acc, x: acc + F.octet_length(x["bytes"]))
    frame_bytes = F.aggregate(
        "videos",
        F.lit(0).cast("long"),
        lambda acc, v: acc + F.aggregate(v["frames"], F.lit(0).cast("long"), lambda a, f: a + F.octet_length(f)),
    )
    # Text bytes plus a little per part and message (role, type, index): ~2x cheaper than the
    # length of the messages as JSON, which it approximates.
    message_bytes = F.aggregate(
        F.coalesce("messages", F.array()),
        F.lit(0).cast("long"),
        lambda acc, m: (
            acc
            + F.lit(32)
            + F.aggregate(
                m["content"],
                F.lit(0).cast("long"),
                lambda a, p: a + F.lit(32) + F.coalesce(F.octet_length(p["text"]), F.lit(0)),
            )
        ),
    )
    return image_bytes + frame_bytes + message_bytes + F.lit(128)


class _TableWriter:
    """Writes one shard file from an Arrow table with the fixed settings that make its bytes
    reproducible; returns its stats as a one-row batch (`stats_schema`)."""

    stats_schema = _SHARD_STATS

    def __init__(self, folder: str, arrow_schema: pa.Schema, row_group_rows: int, compression: str):
        self.folder = folder
        self.schema = arrow_schema
        self.row_group_rows = row_group_rows
        self.compression = compression

    def __call__(self, shard: int, table: pa.Table) -> pa.RecordBatch:
        table = table.select(self.schema.names).cast(self.schema)
        path = os.path.join(self.folder, f"part-{shard:05d}.parquet")
        tmp = os.path.join(self.folder, f".part-{shard:05d}.parquet.tmp")
        pq.write_table(
            table,
            tmp,
            row_group_size=self.row_group_rows,
            compression=self.compression,
            use_dictionary=False,
            write_statistics=True,
        )
        os.replace(tmp, path)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        stats = {"shard": shard, "path": path, "rows": table.num_rows, "bytes": os.path.getsize(path)}
        return pa.RecordBatch.from_pylist([{**stats, "sha256": digest.hexdigest()}], schema=_STATS_SCHEMA)


class _ShardJob:
    """Runs on executors: receives rows sorted by (_shard, sort keys), writes one file per shard."""

    def __init__(self, write_table: _TableWriter):
        self.write_table = write_table

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        current, pending = None, []
        for batch in batches:
            shard_ids = batch.column("_shard").to_pylist()
            start = 0
            for i in range(1, len(shard_ids) + 1):
                if i == len(shard_ids) or shard_ids[i] != shard_ids[start]:
                    if shard_ids[start] != current and pending:
                        yield self._write(current, pending)
                        pending = []
                    current = shard_ids[start]
                    pending.append(batch.slice(start, i - start))
                    start = i
        if pending:
            yield self._write(current, pending)

    def _write(self, shard: int, batches: list[pa.RecordBatch]) -> pa.RecordBatch:
        return self.write_table(shard, pa.Table.from_batches(batches).drop_columns(["_shard"]))


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


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a complete output folder; a clear error for an incomplete one."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise OutputFolderError(f"{folder} has no {MANIFEST}: it is not a complete keyeforge output")
    return json.loads(path.read_text())
