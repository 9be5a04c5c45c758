"""Curation steps: objects that mark rows rejected, never drop them.

A step is a small object (learned from datatrove's pipeline steps): a `name`, a typed `config`
dataclass, the optional packages it `requires` (checked when it is built, so a missing package is
an error before any work), a `DataFrame -> DataFrame` call, and `stats` it fills while it runs
(candidate pairs, score quantiles, decoded counts, ...). `curation.runner` runs any list of them
for every job: it times each, persists its result for resume, and saves the stats beside the
funnel.

Rows carry a `_reject` column (struct of step, reason, detail), null while a row is kept. A step
looks only at rows still kept and may set `_reject` on some of them; it never removes a row. So
every row that came in is still there at the end, either kept or rejected with the step and
reason that refused it, and the funnel (in = kept + rejected, per step) follows from one
aggregation. Rows also carry `_row`, a key unique within the job's materialised rows (see
`curation.runner`): a step that decides about single rows, where ids (content hashes) repeat,
names them by it.

Heavy work reads narrow columns: a step computes its verdicts from the columns it needs (ids,
texts, one image) and `mark` joins the verdicts back, so image bytes never travel through a
shuffle or a window for a decision that needs only ids.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from curation.spark import checkpoint, small_side
from curation.workdir import ROW_KEY as ROW

if TYPE_CHECKING:
    from curation.workdir import WorkFolder

REJECT = "_reject"
REJECT_TYPE = T.StructType(
    [
        T.StructField("step", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("detail", T.StringType()),
    ]
)
# A step's verdicts: the rows it refuses (by `_row` or by `id`) with reason and detail.
VERDICTS = "reason string, detail string"


class StepDependencyError(RuntimeError):
    """A step is switched on but a package it needs is not installed."""


@dataclass
class StepContext:
    """What the runner tells a step about the frame it gets."""

    work: WorkFolder | None = None  # where the step may persist an expensive part of its work
    input_key: str = ""  # identifies the step's input rows (and everything that made them)
    base_files: Sequence[str] = ()  # Parquet files holding the frame's rows as they are (marks aside)
    stats: dict[str, Any] = field(default_factory=dict)


class Step:
    """One curation step. Subclasses set `name` and implement `__call__`; see the module doc.

    `writes`: columns besides `_reject` the step sets on kept rows (persisted with its marks), or
    `ALL_COLUMNS` for a step that rewrites rows (its output is materialised whole).
    `cache_fields`: when not None, only these config fields key the persisted result (e.g. a
    filter threshold that is applied after an expensive, persisted score is left out of it).
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    writes: ClassVar[tuple[str, ...] | str] = ()

    def __init__(self, config: Any):
        self.config = config
        self.context = StepContext()
        self.stats: dict[str, Any] = {}
        if self.enabled:
            missing = [module for module in self.requires if importlib.util.find_spec(module) is None]
            if missing:
                raise StepDependencyError(
                    f"step {self.name} needs {', '.join(missing)}, which is not installed; install it or set "
                    f"{self.name}.enabled=false"
                )

    @property
    def enabled(self) -> bool:
        return bool(getattr(self.config, "enabled", True))

    def preflight(self) -> None:
        """Fail now, before any work, on what would fail later (missing weights, files): the
        runner calls it for every enabled step before it reads the sources."""

    def cache_key(self) -> dict:
        """What, besides its input, the step's result depends on (the runner hashes it)."""
        return dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else {"config": repr(self.config)}

    def __call__(self, df: DataFrame) -> DataFrame:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


ALL_COLUMNS = "*"


class RowStep(Step):
    """A step that decides about each row from the row alone (no other row, no model): `check`.

    The runner runs a job's leading row steps inside the pass that materialises its rows, so each
    row is read (and its images decoded) once; called on a frame, the step runs the same check
    over the kept rows in `mapInArrow` and joins the refusals back. A row step may record facts
    about what it saw (`facts`: a work-folder result name, rows of `facts_schema`; validation
    records each image's pHash), for later steps to use instead of looking again.
    """

    facts: ClassVar[str | None] = None
    facts_schema: ClassVar[pa.Schema | None] = None

    def check(self, row: dict, facts: list[dict] | None) -> tuple[str, str] | None:
        """(reason, detail) when the kept `row` (a dict of contract columns) is refused, else None;
        appends fact rows to `facts` when given."""
        raise NotImplementedError

    def check_or_refuse(self, row: dict, facts: list[dict] | None) -> tuple[str, str] | None:
        try:
            return self.check(row, facts)
        except Exception as exc:  # a malformed row must not stop the job: refuse it
            return "row_malformed", f"{type(exc).__name__}: {exc}"[:300]

    def __call__(self, df: DataFrame) -> DataFrame:
        from curation import schema
        from curation.workdir import hash_key

        df = with_reject_column(df)
        work = self.context.work
        extra = list(self.facts_schema) if (self.facts and work is not None) else []
        out_schema = pa.schema([(ROW, pa.int64()), ("reason", pa.string()), ("detail", pa.string()), *extra])
        kept = df.where(is_kept()).select(ROW, *schema.COLUMNS)
        out = checkpoint(kept.mapInArrow(_CheckRows(self, bool(extra), out_schema), from_arrow_schema(out_schema)))
        verdicts = out.where(F.col("reason").isNotNull())
        refused = reason_counts(verdicts)
        self.stats.update({"refused": sum(refused.values()), "refused_by_reason": refused})
        if extra:
            names = [f.name for f in self.facts_schema]
            recorded = out.where(F.col(names[0]).isNotNull()).select(*names).dropDuplicates([names[0]])
            record = work.write_frame(self.facts, hash_key(self.context.input_key, self.cache_key()), recorded)
            self.stats[f"{self.facts}_rows"] = record["rows"]
        return mark(df, verdicts, self.name, rows=sum(refused.values()))


class _CheckRows:
    """mapInArrow function: kept rows -> a row per refusal (row key, reason, detail) and a row per
    fact (the facts' columns)."""

    def __init__(self, step: RowStep, with_facts: bool, out_schema: pa.Schema):
        self.step, self.with_facts, self.schema = step, with_facts, out_schema

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            out: list[dict] = []
            for row in batch.to_pylist():
                key = row.pop(ROW)
                facts: list[dict] | None = [] if self.with_facts else None
                problem = self.step.check_or_refuse(row, facts)
                if problem:
                    out.append({ROW: key, "reason": problem[0], "detail": problem[1]})
                out.extend(facts or ())
            yield pa.RecordBatch.from_pylist(out, schema=self.schema)


def with_reject_column(df: DataFrame) -> DataFrame:
    """Add an all-null `_reject` column if the frame has none (e.g. rows read from shards), and give
    it the one canonical type (all fields nullable) that Arrow-based steps declare as output."""
    if REJECT in df.columns:
        return df.withColumn(REJECT, F.col(REJECT).cast(REJECT_TYPE))
    return df.withColumn(REJECT, F.lit(None).cast(REJECT_TYPE))


def is_kept() -> Column:
    return F.col(REJECT).isNull()


def reject_where(df: DataFrame, condition: Column, step: str, reason: str | Column, detail: Column | str | None = None) -> DataFrame:
    """Mark kept rows matching `condition` as rejected by `step` for `reason`."""
    reason_col = reason if isinstance(reason, Column) else F.lit(reason)
    if detail is None:
        detail_col = F.lit(None).cast("string")
    elif isinstance(detail, Column):
        detail_col = detail.cast("string")
    else:
        detail_col = F.lit(detail)
    verdict = F.struct(F.lit(step).alias("step"), reason_col.alias("reason"), detail_col.alias("detail"))
    marked = F.when(is_kept() & condition, verdict).otherwise(F.col(REJECT))
    return df.withColumn(REJECT, marked.cast(REJECT_TYPE))


def mark(df: DataFrame, verdicts: DataFrame, step: str, on: str = ROW, rows: int | None = None) -> DataFrame:
    """Reject the kept rows of `df` named in `verdicts` (columns `on`, reason, detail; one row per
    key). The verdicts are joined back by broadcast while they are small, so `df`'s rows (and their
    image bytes) are not shuffled. `rows`: their count when they are already materialised
    (checkpointed or persisted); otherwise they are materialised here, computed once."""
    if rows is None:
        verdicts = checkpoint(verdicts)
        rows = verdicts.count()
    renamed = verdicts.select(F.col(on).alias("_v_key"), F.col("reason").alias("_v_reason"), F.col("detail").alias("_v_detail"))
    joined = with_reject_column(df).join(small_side(renamed, rows), F.col(on) == F.col("_v_key"), "left")
    marked = reject_where(joined, F.col("_v_key").isNotNull(), step, F.col("_v_reason"), F.col("_v_detail"))
    return marked.drop("_v_key", "_v_reason", "_v_detail")


def reason_counts(verdicts: DataFrame) -> dict[str, int]:
    """{reason: rows} of a (materialised) verdict frame."""
    return dict(sorted((r["reason"], r["count"]) for r in verdicts.groupBy("reason").count().collect()))


def split(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(kept rows without the marker column, rejected rows with it)."""
    return df.filter(is_kept()).drop(REJECT), df.filter(~is_kept())
