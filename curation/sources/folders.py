"""Image folders with sidecar captions: `a/b/cat.jpg` + `a/b/cat.txt` (or `cat.json`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession

from curation.sources.common import IMAGE_EXTENSIONS, SourcePlan, units_frame, IngestConfig, caption_from_json, make_caption_row, refused, batches_of

CAPTION_EXTENSIONS = (".txt", ".json")


def list_items(root: Path) -> list[str]:
    """Relative paths of the items in a folder: each image, and each caption without an image."""
    images, captions = set(), set()
    for dirpath, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            stem, ext = os.path.splitext(rel)
            if ext.lower() in IMAGE_EXTENSIONS:
                images.add(rel)
            elif ext.lower() in CAPTION_EXTENSIONS:
                captions.add(stem)
    image_stems = {os.path.splitext(p)[0] for p in images}
    orphans = {stem + ".txt" for stem in captions - image_stems}
    return sorted(images | orphans)


def plan(spark: SparkSession, root: str, source: str, cfg: IngestConfig) -> SourcePlan:
    items = list_items(Path(root))
    tasks = max(1, min(len(items) // 64, spark.sparkContext.defaultParallelism * 4))
    units = units_frame(spark, [(i,) for i in items], "item string", tasks)
    sample = items[:: max(1, len(items) // 64)]
    mean = sum(os.path.getsize(os.path.join(root, i)) for i in sample) / max(1, len(sample))
    return SourcePlan(units, _FolderReader(str(Path(root).resolve()), source, cfg), task_bytes=mean * len(items) / tasks)


class _FolderReader:
    def __init__(self, root: str, source: str, cfg: IngestConfig):
        self.root, self.source, self.cfg = root, source, cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = (self.safe_row(item) for item in batch.column("item").to_pylist())
            yield from batches_of(rows, self.cfg.rows_per_batch, self.cfg.batch_bytes)

    def safe_row(self, item: str) -> dict:
        try:
            return self.row(item)
        except OSError as exc:  # vanished or unreadable file: refuse it, keep going
            return refused(self.source, item, "unreadable_file", f"{type(exc).__name__}: {exc}")

    def row(self, item: str) -> dict:
        path = os.path.join(self.root, item)
        stem, ext = os.path.splitext(path)
        image = None
        if ext.lower() in IMAGE_EXTENSIONS:
            with open(path, "rb") as f:
                image = f.read()
        caption = None
        if os.path.exists(stem + ".txt"):
            with open(stem + ".txt", "rb") as f:
                caption = f.read().strip(b"\n\r")
        elif os.path.exists(stem + ".json"):
            with open(stem + ".json", "rb") as f:
                caption = caption_from_json(f.read(), self.cfg.caption_keys)
        return make_caption_row(self.source, item, image, caption, self.cfg.keep_formats)
