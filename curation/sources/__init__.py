"""Sources: where raw image-caption data comes in, each format told from its path.

    folder of images with sidecar .txt/.json    -> curation.sources.folders
    .tar WebDataset shard, or a folder of them  -> curation.sources.webdataset
    .parquet / .jsonl table (or a folder of)    -> curation.sources.tables

Every reader yields contract rows plus the `_reject` marker: what could not become a row (unsafe
tar member, missing image, caption that is not UTF-8, ...) is refused by the `ingest` step with
its reason, so nothing found is lost silently.
"""

from __future__ import annotations

import hashlib
import os
from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from curation.sources import folders, tables, webdataset
from curation.sources.common import STEP, IngestConfig, SourcePlan

__all__ = [
    "STEP", "IngestConfig", "SourcePlan", "detect_format", "fingerprint", "read_source", "read_sources", "source_name",
    "source_plans",
]

PLANNERS = {"folder": folders.plan, "webdataset": webdataset.plan, "table": tables.plan}


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"source {path} does not exist")
    if p.is_file():
        if p.suffix == ".tar":
            return "webdataset"
        if p.suffix in tables.TABLE_EXTENSIONS:
            return "table"
        raise ValueError(f"source {path}: cannot tell the format of a {p.suffix or 'extension-less'} file "
                         "(expected .tar, .parquet, .jsonl or a folder)")
    names = [q.suffix for q in p.iterdir() if q.is_file()]
    if names and all(s == ".tar" for s in names):
        return "webdataset"
    if names and all(s in tables.TABLE_EXTENSIONS for s in names):
        return "table"
    return "folder"


def source_name(path: str | Path) -> str:
    p = Path(path)
    return p.stem if p.is_file() else p.name


def source_plan(spark: SparkSession, path: str, cfg: IngestConfig, name: str | None = None) -> SourcePlan:
    return PLANNERS[detect_format(path)](spark, str(path), name or source_name(path), cfg)


def source_plans(spark: SparkSession, paths: list[str], cfg: IngestConfig) -> list[SourcePlan]:
    """A plan per source (`name=path` entries set the source name explicitly)."""
    plans = []
    for entry in paths:
        name, sep, path = entry.partition("=")
        plans.append(source_plan(spark, path, cfg, name) if sep else source_plan(spark, entry, cfg))
    if not plans:
        raise ValueError("no sources given: set sources=PATH[,PATH...]")
    return plans


def read_source(spark: SparkSession, path: str, cfg: IngestConfig, name: str | None = None) -> DataFrame:
    return source_plan(spark, path, cfg, name).frame()


def read_sources(spark: SparkSession, paths: list[str], cfg: IngestConfig) -> DataFrame:
    """One frame over all sources. `name=path` entries set the source name explicitly."""
    return reduce(DataFrame.unionByName, [plan.frame() for plan in source_plans(spark, paths, cfg)])


def fingerprint(paths: list[str]) -> str:
    """A hash of what the sources hold now: every file's path, size and modification time (no
    content is read). A resumed job reuses its persisted work only while this is unchanged. Images
    that a table names by path are outside it: a table's own file changes when it is rewritten,
    but replacing an image file in place under the same name is not noticed."""
    digest = hashlib.sha256()
    for entry in paths:
        _, sep, path = entry.partition("=")
        path = path if sep else entry
        digest.update(f"\0{entry}".encode())
        root = Path(path)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for file in files:
            stat = os.stat(file)
            digest.update(f"\0{file.relative_to(root) if file != root else file.name}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]
