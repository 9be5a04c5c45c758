"""Sources: where raw image-caption data comes in, each format told from its path.

    folder of images with sidecar .txt/.json    -> curation.sources.folders
    .tar WebDataset shard, or a folder of them  -> curation.sources.webdataset
    .parquet / .jsonl table (or a folder of)    -> curation.sources.tables

Every reader yields contract rows plus the `_reject` marker: what could not become a row (unsafe
tar member, missing image, caption that is not UTF-8, ...) is refused by the `ingest` step with
its reason, so nothing found is lost silently.
"""

from __future__ import annotations

from functools import reduce
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from curation.sources import folders, tables, webdataset
from curation.sources.common import STEP, IngestConfig

__all__ = ["STEP", "IngestConfig", "detect_format", "read_source", "read_sources", "source_name"]

READERS = {"folder": folders.read, "webdataset": webdataset.read, "table": tables.read}


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


def read_source(spark: SparkSession, path: str, cfg: IngestConfig, name: str | None = None) -> DataFrame:
    return READERS[detect_format(path)](spark, str(path), name or source_name(path), cfg)


def read_sources(spark: SparkSession, paths: list[str], cfg: IngestConfig) -> DataFrame:
    """One frame over all sources. `name=path` entries set the source name explicitly."""
    frames = []
    for entry in paths:
        name, sep, path = entry.partition("=")
        frames.append(read_source(spark, path, cfg, name) if sep else read_source(spark, entry, cfg))
    if not frames:
        raise ValueError("no sources given: set sources=PATH[,PATH...]")
    return reduce(DataFrame.unionByName, frames)
