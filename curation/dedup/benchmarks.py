"""Reading evaluation benchmarks for decontamination: items with images and text.

A benchmark is named in the config with a path and a format:

* ``parquet``: a file or folder of Parquet files. Rows in the keyeforge contract (``messages``,
  ``images``) are read as such; otherwise an ``id``-like column (id, item_id, question_id, index,
  else the row number), an image column (``image`` / ``images``: bytes, or {bytes, path} structs as
  Hugging Face datasets writes them) and text columns (question, text, prompt, caption, ...).
* ``jsonl``: one JSON object per line with the same field names; images are file paths relative to
  the JSONL file (or absolute).
* ``folder``: image files under a folder (recursively); the item id is the relative path.
* ``auto`` (default): by the path (folder of images, *.jsonl, else Parquet).

Benchmarks are small (thousands of items), so they are read on the driver and their fingerprints
shipped to the executors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq

from curation import schema

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
ID_FIELDS = ("id", "item_id", "question_id", "qid", "index", "idx")
TEXT_FIELDS = ("question", "text", "prompt", "query", "caption", "instruction", "hint", "options", "choices")
IMAGE_FIELDS = ("image", "images", "image_path", "image_paths", "img")


@dataclass
class BenchmarkConfig:
    name: str = ""
    path: str = ""
    format: Literal["auto", "parquet", "jsonl", "folder"] = "auto"


@dataclass
class BenchmarkItem:
    benchmark: str
    item: str
    images: list[bytes] = field(default_factory=list)
    text: str = ""


class BenchmarkError(ValueError):
    pass


def load_benchmark(cfg: BenchmarkConfig) -> list[BenchmarkItem]:
    path = Path(cfg.path)
    name = cfg.name or path.stem
    if not path.exists():
        raise BenchmarkError(f"benchmark {name!r}: {path} does not exist (decontam.benchmarks[].path)")
    fmt = cfg.format
    if fmt == "auto":
        if path.is_dir() and not any(path.rglob("*.parquet")):
            fmt = "folder"
        elif path.suffix in (".jsonl", ".json"):
            fmt = "jsonl"
        else:
            fmt = "parquet"
    if fmt == "folder":
        items = _from_folder(name, path)
    elif fmt == "jsonl":
        items = _from_jsonl(name, path)
    elif fmt == "parquet":
        items = _from_parquet(name, path)
    else:
        raise BenchmarkError(f"benchmark {name!r}: format {cfg.format!r} is not auto, parquet, jsonl or folder")
    return sorted(items, key=lambda it: it.item)


def _from_folder(name: str, root: Path) -> list[BenchmarkItem]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [BenchmarkItem(name, p.relative_to(root).as_posix(), [p.read_bytes()]) for p in files]


def _from_jsonl(name: str, path: Path) -> list[BenchmarkItem]:
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            items.append(_from_record(name, json.loads(line), n, base=path.parent))
    return items


def _from_parquet(name: str, path: Path) -> list[BenchmarkItem]:
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    items, n = [], 0
    for file in files:
        for record in pq.read_table(file).to_pylist():
            items.append(_from_record(name, record, n, base=file.parent))
            n += 1
    return items


def _from_record(name: str, record: dict, n: int, base: Path) -> BenchmarkItem:
    if "messages" in record and "images" in record:  # a keyeforge contract row
        images = [im["bytes"] for im in record["images"] or () if im and im.get("bytes")]
        return BenchmarkItem(name, str(record.get("id") or n), images, schema.row_text(record) or "")
    item_id = next((str(record[f]) for f in ID_FIELDS if record.get(f) is not None), str(n))
    images = []
    for f in IMAGE_FIELDS:
        value = record.get(f)
        for v in value if isinstance(value, list) else [value]:
            data = _image_bytes(v, base)
            if data:
                images.append(data)
    texts = []
    for f in TEXT_FIELDS:
        value = record.get(f)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts.extend(str(v) for v in value if v is not None)
    return BenchmarkItem(name, item_id, images, "\n".join(texts))


def _image_bytes(value, base: Path) -> bytes | None:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):  # Hugging Face Image feature: {"bytes": ..., "path": ...}
        return value.get("bytes") or _image_bytes(value.get("path"), base)
    if isinstance(value, str) and value:
        file = Path(value) if Path(value).is_absolute() else base / value
        return file.read_bytes() if file.is_file() else None
    return None
