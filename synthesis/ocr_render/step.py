"""The Spark side of rendering: sample indices in, contract rows (plus ``_reject``) out.

``render_plan(spark, count, cfg, partitions, backgrounds)`` plans ``spark.range(count)`` and
renders every index inside ``mapInArrow``; partitions render in parallel. Fonts are discovered
once on the driver and the same sorted list goes to every task; glyph coverage and loaded fonts
are cached per Python worker. A sample no font can draw becomes a rejected row with a reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from curation import schema
from curation.sources.common import SourcePlan
from curation.steps import REJECT, REJECT_TYPE
from synthesis.ocr_render import fonts as fontlib
from synthesis.ocr_render import sample as samplelib
from synthesis.ocr_render import truth
from synthesis.ocr_render.config import RenderConfig

STEP = "render_ocr"
REJECT_ARROW = pa.struct([("step", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
OUT_SCHEMA = schema.SCHEMA.append(pa.field(REJECT, REJECT_ARROW))


def spark_schema():
    out = from_arrow_schema(schema.SCHEMA)
    return out.add(REJECT, REJECT_TYPE)


def discover_fonts(cfg: RenderConfig) -> list[fontlib.Face]:
    faces = fontlib.discover(cfg.fonts.folders, cfg.fonts.use_system)
    if not faces:
        raise RuntimeError(
            f"no usable fonts found in {cfg.fonts.folders or 'no configured folders'}"
            f"{' or the system' if cfg.fonts.use_system else ''}; install fonts (e.g. apt-get install "
            "fonts-noto-cjk fonts-dejavu-core) or set fonts.folders=DIR"
        )
    return faces


def render_rows(index: int, cfg: RenderConfig, pool: fontlib.FontPool, backgrounds: list[bytes]) -> list[dict]:
    """Rows for one sample index: its ground-truth rows, or one rejected row saying why."""
    try:
        sample = samplelib.render(index, cfg, pool, backgrounds)
        out = truth.rows(sample, cfg)
    except samplelib.RenderRefused as exc:
        return [refused_row(index, cfg, exc.reason, exc.detail)]
    except Exception as exc:  # one odd font or background must not sink the job: recorded as a reject
        return [refused_row(index, cfg, "render_error", f"{type(exc).__name__}: {exc}")]
    for row in out:
        row[REJECT] = None
    return out


def refused_row(index: int, cfg: RenderConfig, reason: str, detail: str) -> dict:
    origin = f"ocr_render:{cfg.seed}:{index}"
    row = schema.make_row(
        cfg.source, "ocr", [schema.message("user", "")], extra={"origin": origin, "index": index},
        id=schema.raw_id("ocr_render", str(cfg.seed), str(index)),
    )
    row[REJECT] = {"step": STEP, "reason": reason, "detail": detail[:500]}
    return row


class _Renderer:
    """The mapInArrow function: picklable state only (config, font list, background bytes)."""

    def __init__(self, cfg: RenderConfig, faces: list[fontlib.Face], backgrounds: list[bytes]):
        self.cfg, self.faces, self.backgrounds = cfg, faces, backgrounds

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        pool = fontlib.FontPool(self.faces)
        for batch in batches:
            rows: list[dict] = []
            for index in batch.column("id").to_pylist():
                rows.extend(render_rows(int(index), self.cfg, pool, self.backgrounds))
            if rows:
                yield pa.RecordBatch.from_pylist(rows, schema=OUT_SCHEMA)


def render_plan(
    spark: SparkSession,
    count: int,
    cfg: RenderConfig,
    partitions: int | None = None,
    backgrounds: list[bytes] | None = None,
    faces: list[fontlib.Face] | None = None,
) -> SourcePlan:
    """Samples 0..count-1 as a source plan: sample numbers, and the renderer that draws them."""
    # Only the renderer's own settings travel to executors (a job's subclass may live in a module
    # that executors cannot import).
    cfg = RenderConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(RenderConfig)})
    faces = faces if faces is not None else discover_fonts(cfg)
    parts = partitions or spark.sparkContext.defaultParallelism
    ids = spark.range(0, count, 1, numPartitions=max(1, min(parts, count or 1)))
    return SourcePlan(ids, _Renderer(cfg, faces, list(backgrounds or [])))


def backgrounds_from(spark: SparkSession, path: str, limit: int) -> list[bytes]:
    """The first image of up to `limit` rows of the shards at `path`, ordered by id."""
    df = spark.read.parquet(path).where(F.size("images") > 0).orderBy("id").limit(limit)
    return [r["b"] for r in df.select(F.col("images")[0]["bytes"].alias("b")).collect() if r["b"]]
