"""The one runner every curation job uses: materialise the input rows, run the steps, persist each
step's result, and record what each step did.

    result = run_steps(spark, frame, steps, work, input_key, sources=["ingest"])
    write_output(result.frame, output, result.step_names, config, stats=result.stats)

1. The input rows are written once to the work folder (`base`): whole rows, Parquet with
   byte-bounded row groups, each row then named by its `_row` key (file number and row index).
   A job whose input already is Parquet shards passes their files instead (`base_files`).
   Leading row steps (`curation.steps.RowStep`: validation) run inside that pass, on each row
   before it is written, so every row is read and its images decoded once.
2. Each other enabled step gets the current frame, base rows with the marks so far, and returns it
   marked. Its result is persisted under a key that hashes its input's key and its config: the
   marks (`_row`, `_reject` and the columns steps `write`, for the rows they touched: narrow) or,
   for a step that rewrites rows, the rows themselves (a new base). The next step's frame is the
   base with those marks joined back by `_row`.
3. A re-run after a kill finds the complete results by their keys and reuses them; what a changed
   setting affects has a new key and is recomputed.

Per step the runner records its seconds, whether it was reused, rows in and out, and the step's
own `stats`; the writer saves them as `_stats.json` and the card shows them. Long steps show
progress (curation.progress).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation import parquet_files
from curation.progress import track
from curation.spark import bound_memory, small_side
from curation.steps import ALL_COLUMNS, REJECT, ROW, RowStep, Step, StepContext, with_reject_column
from curation.workdir import WorkFolder, hash_key, with_row_key


@dataclass
class PipelineResult:
    frame: DataFrame  # every row, marked: base columns, `_row`, `_reject`, written columns
    step_names: list[str]  # the sources' step names, then the steps that ran (for the funnel)
    records: list[dict]  # per step: step, seconds, reused, rows_in, rows_out, stats
    base_files: list[str]  # the Parquet files the frame's rows come from
    rows: int  # all rows, kept or not
    seconds: float = 0.0
    base: dict = field(default_factory=dict)  # how the input rows were materialised
    spark: dict = field(default_factory=dict)  # the memory settings the steps ran with

    @property
    def stats(self) -> dict:
        return {"seconds": round(self.seconds, 3), "spark": self.spark, "base": self.base, "steps": self.records}


def run_steps(
    spark: SparkSession,
    source,
    steps: Sequence[Step],
    work: WorkFolder,
    input_key: str,
    sources: Sequence[str] = ("ingest",),
    base_files: Sequence[str] = (),
    base_schema=None,
    log=None,
) -> PipelineResult:
    """Run `steps` over `source` (a frame of contract rows, marked or not, or source plans whose
    readers then run in the tasks that write the rows: curation.sources.SourcePlan) or over the
    Parquet `base_files` (rows as they are; `base_schema`, when known, spares reading every footer);
    see the module doc."""
    started = time.perf_counter()
    steps = [step for step in steps if step.enabled]
    for step in steps:
        step.preflight()  # missing weights or files: an error now, before any work
    run = _Run(spark, work, log or _log, list(sources))
    if base_files:
        run.open_files(list(base_files), base_schema, input_key)
        fused: list[RowStep] = []
    else:
        fused = _leading_row_steps(steps)  # validation runs while the rows are written: one decode
        run.materialise(source, input_key, fused)
    for step in steps[len(fused):]:
        run.step(step)
    return PipelineResult(run.frame, run.names, run.records, run.files, run.rows, time.perf_counter() - started,
                          run.base_record, run.spark_info)


def _leading_row_steps(steps: Sequence[Step]) -> list[RowStep]:
    fused: list[RowStep] = []
    while len(fused) < len(steps) and isinstance(steps[len(fused)], RowStep):
        fused.append(steps[len(fused)])
    return fused


class _Run:
    """The state of one pipeline run: the base rows, the marks so far, the records."""

    def __init__(self, spark: SparkSession, work: WorkFolder, log, names: list[str]):
        self.spark, self.work, self.log, self.names = spark, work, log, names
        self.records: list[dict] = []
        self.written: list[str] = []  # columns the steps so far set (carried in their marks)

    def open_files(self, files: list[str], schema, key: str) -> None:
        """The rows are these Parquet files as they are (none refused yet)."""
        reader = self.spark.read.schema(schema) if schema is not None else self.spark.read
        self._set_base(with_row_key(with_reject_column(reader.parquet(*files)), files, ROW), files, None, key)
        self.base_record = {"files": len(files), "materialised": False}
        self.rows = self.base.count() if self.rows is None else self.rows
        self.kept = self.rows

    def materialise(self, source, key: str, fused: list[RowStep]) -> None:
        key = hash_key(key, [(step.name, step.cache_key()) for step in fused])
        base, files, rows, self.base_record = _materialise(self.spark, source, self.work, key, fused, self.log)
        self._set_base(base, files, rows, key)
        rejected = self.base_record["rejected_by_step"]
        self.kept = rows - sum(n for name, n in rejected.items() if name not in {step.name for step in fused})
        for step in fused:  # their work was done in the materialising pass
            rows_out = self.kept - rejected.get(step.name, 0)
            done = self.base_record["row_steps"].get(step.name, {})
            refused = self.base_record["refused_by_reason"].get(step.name, {})
            stats = {"in_pass": "with the sources' materialisation (seconds: summed over its tasks)",
                     "refused": sum(refused.values()), "refused_by_reason": refused,
                     **{k: v for k, v in done.items() if k != "seconds"}}
            self._record(step, done.get("seconds", 0.0), self.base_record["reused"], done.get("seconds"), rows_out, stats)
            self.log(f"{step.name}: {rows_out:,} rows kept of {self.kept:,} (checked while the rows were written)")
            self.kept = rows_out

    def _set_base(self, base: DataFrame, files: list[str], rows: int | None, key: str) -> None:
        self.base, self.frame, self.files, self.rows, self.key = base, base, files, rows, key
        self.written = []
        reader_rows = bound_memory(self.spark, parquet_files.bytes_per_row(files))
        self.spark_info = {
            "master": self.spark.sparkContext.master,
            "driver_heap_mb": int(self.spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()) // 2**20,
            "reader_batch_rows": reader_rows,
            "arrow_batch_bytes": self.spark.conf.get("spark.sql.execution.arrow.maxBytesPerBatch"),
        }

    def step(self, step: Step) -> None:
        """Run `step` (or find its persisted result), then join its marks back."""
        step.context = StepContext(work=self.work, input_key=self.key, base_files=self.files)
        self.key = hash_key(self.key, step.name, step.cache_key())
        step.stats = {}
        t0 = time.perf_counter()
        record = self.work.find(step.name, self.key)
        reused = record is not None
        if record is None:
            self.log(f"{step.name}: {self.kept:,} rows in")
            with track(self.spark, step.name, self.kept, self.log):
                out = step(self.frame)
                if step.writes == ALL_COLUMNS:  # the step rewrote rows: they become the new base
                    record = self.work.write_rows(step.name, self.key, out, {"stats": step.stats})
                else:
                    written = sorted(set(self.written) | set(step.writes))
                    marks = _changes(out, written)
                    record = self.work.write_frame(step.name, self.key, marks, {"stats": step.stats, "written": written})
            record = self.work.annotate(step.name, self.key, {"seconds": round(time.perf_counter() - t0, 3)})
        if step.writes == ALL_COLUMNS:
            self._set_base(self.work.read_rows(self.spark, record), record["files"], record["rows"], self.key)
        else:
            self.written = record.get("written", self.written)
            self.frame = _apply(self.base, self.work.read_frame(self.spark, record), self.written, record["rows"])
        rows_out = self.rows - record.get("rejected", 0)
        seconds = round(time.perf_counter() - t0, 3) if reused else record.get("seconds", 0.0)
        self._record(step, seconds, reused, record.get("seconds"), rows_out, record.get("stats") or {})
        self.log(f"{step.name}: {rows_out:,} rows kept of {self.kept:,}" + (" (reused)" if reused else f" in {seconds:.1f}s"))
        self.kept = rows_out

    def _record(self, step: Step, seconds: float, reused: bool, computed: float | None, rows_out: int, stats: dict) -> None:
        self.records.append({"step": step.name, "seconds": seconds, "reused": reused, "computed_seconds": computed,
                             "rows_in": self.kept, "rows_out": rows_out, "stats": stats})
        self.names.append(step.name)


def _materialise(spark, source, work: WorkFolder, key: str, row_steps: list, log):
    """Write the source rows once (whole, byte-bounded), `row_steps` checking each on the way, and
    read them back with their row keys."""
    record = work.find("base", key)
    if record is None:
        log("reading the sources into the work folder" + "".join(f", {s.name} on the way" for s in row_steps) + " ...")
        t0 = time.perf_counter()
        with track(spark, "ingest", None, log):
            rows = with_reject_column(source) if isinstance(source, DataFrame) else source
            record = work.write_rows("base", key, rows, row_steps=row_steps)
        record = work.annotate("base", key, {"seconds": round(time.perf_counter() - t0, 3)})
        log(f"sources: {record['rows']:,} rows, {record['bytes'] / 2**20:,.1f} MiB in {record['seconds']:.1f}s")
        reused = False
    else:
        reused = True
        log(f"sources: {record['rows']:,} rows reused from the work folder")
    base = work.read_rows(spark, record)
    info = {"rows": record["rows"], "rejected": record.get("rejected", 0), "rejected_by_step": record.get("rejected_by_step", {}),
            "bytes": record["bytes"], "files": len(record["files"]), "seconds": record.get("seconds"), "reused": reused,
            "materialised": True, "row_steps": record.get("row_steps", {}),
            "refused_by_reason": _refused_by_reason(record["files"]) if row_steps else {}}
    return base, list(record["files"]), record["rows"], info


def _refused_by_reason(files: list[str]) -> dict:
    """{step: {reason: rows}} of the refusals in materialised rows (their `_reject` column only)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found: dict[str, dict[str, int]] = {}
    for f in files:
        marks = pq.read_table(f, columns=["_reject"]).column("_reject").combine_chunks()
        pairs = pc.binary_join_element_wise(pc.struct_field(marks, "step"), pc.struct_field(marks, "reason"), "\t")
        for item in pc.value_counts(pairs.drop_null()).to_pylist():
            step, reason = item["values"].split("\t", 1)
            found.setdefault(step, {})[reason] = found.setdefault(step, {}).get(reason, 0) + item["counts"]
    return {step: dict(sorted(reasons.items())) for step, reasons in found.items()}


def _changes(out: DataFrame, written: Sequence[str]) -> DataFrame:
    """The marks a step's output carries: `_row`, `_reject` and the written columns, for the rows
    where any is set (rejected so far, or given a value)."""
    touched = F.col(REJECT).isNotNull()
    for name in written:
        touched = touched | F.col(name).isNotNull()
    return out.select(ROW, REJECT, *written).where(touched)


def _apply(base: DataFrame, marks: DataFrame, written: Sequence[str], rows: int) -> DataFrame:
    """The base rows with `marks` (cumulative: every mark so far) joined back by `_row`."""
    renamed = marks.select(
        F.col(ROW).alias("_m_row"), F.col(REJECT).alias("_m_reject"), *[F.col(c).alias(f"_m_{c}") for c in written]
    )
    joined = base.join(small_side(renamed, rows), F.col(ROW) == F.col("_m_row"), "left")
    columns = []
    for name in base.columns:
        if name == REJECT:
            columns.append(F.coalesce(F.col("_m_reject"), F.col(REJECT)).alias(REJECT))
        elif name in written:
            columns.append(F.coalesce(F.col(f"_m_{name}"), F.col(name)).alias(name))
        else:
            columns.append(F.col(name))
    return joined.select(*columns)


def _log(message: str) -> None:
    print(f"[keyeforge] {message}", file=sys.stderr, flush=True)
