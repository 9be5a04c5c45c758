"""Rendered OCR data as a source: what a job (render_ocr, build_pretrain) calls.

    from synthesis.ocr_render.source import RenderSourceConfig, rendered_source
    df = rendered_source(spark, RenderSourceConfig(count=1000, seed=7))

The frame has the contract columns plus ``_reject`` (samples that could not be drawn).
``add_rendered(spark, df, cfg)`` appends them to a job's frame (build_pretrain's rendered source).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from curation import schema
from curation.sources.common import SourcePlan
from curation.steps import REJECT, with_reject_column
from synthesis.ocr_render.config import RenderConfig
from synthesis.ocr_render.step import STEP, backgrounds_from, render_plan


@dataclass
class RenderSourceConfig(RenderConfig):
    count: int = 200  # images to render (each gives 1-3 rows)
    partitions: int = 0  # 0: the session's default parallelism
    backgrounds: str = ""  # a shard folder whose images become scene backgrounds
    max_backgrounds: int = 64


def rendered_source(spark: SparkSession, cfg: RenderSourceConfig) -> DataFrame:
    return rendered_plan(spark, cfg).frame()


def rendered_plan(spark: SparkSession, cfg: RenderSourceConfig) -> SourcePlan:
    """The rendered samples as a source plan (what the runner fuses with writing the rows)."""
    if cfg.count < 0:
        raise ValueError(f"count must be >= 0, got {cfg.count}")
    backgrounds = backgrounds_from(spark, cfg.backgrounds, cfg.max_backgrounds) if cfg.backgrounds else []
    return render_plan(spark, cfg.count, cfg, cfg.partitions or None, backgrounds)


def add_rendered(spark: SparkSession, df: DataFrame, cfg: RenderSourceConfig) -> DataFrame:
    """`df` (contract rows, marked or not) with `cfg.count` rendered samples appended; rendering
    refusals carry the step name STEP, so a job lists STEP among its steps for the funnel."""
    rendered = rendered_source(spark, cfg)
    return with_reject_column(df).select(*schema.COLUMNS, REJECT).unionByName(rendered)


__all__ = ["RenderSourceConfig", "rendered_source", "rendered_plan", "add_rendered", "STEP"]
