"""What every source reader shares: the ingest step's name, turning one found item into a
contract row (or a refusal with its reason), and the row schema sources emit."""

from __future__ import annotations

import base64
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import from_arrow_schema

from curation import schema
from curation.steps import REJECT

STEP = "ingest"

# Rows leave the sources as contract columns plus the reject marker, all as Arrow.
ROW_SCHEMA = pa.schema(
    list(schema.SCHEMA)
    + [pa.field(REJECT, pa.struct([("step", pa.string()), ("reason", pa.string()), ("detail", pa.string())]))]
)

# The same, as the Spark type that mapInArrow needs for its output.
SPARK_ROW_TYPE = from_arrow_schema(ROW_SCHEMA)


def units_frame(spark, units: list[tuple], ddl: str, tasks: int) -> DataFrame:
    """A frame of work units cut into `tasks` partitions of consecutive units (no shuffle: hash
    partitioning a handful of units left some tasks with two and others with none)."""
    tasks = max(1, min(tasks, len(units)))
    return spark.createDataFrame(spark.sparkContext.parallelize(units, tasks), ddl)


@dataclass
class SourcePlan:
    """A source as Spark runs it: a small frame of work units (files, row groups, byte ranges,
    tar shards) and the Python function that turns a task's units into batches of rows
    (ROW_SCHEMA). `frame()` is the rows as a DataFrame; the runner may instead run the reader in
    the same Python task that writes the rows, so no row crosses into the JVM and back."""

    units: DataFrame
    reader: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]
    # Bytes one task reads, about (the largest unit): the runner starts the plans with the largest
    # tasks first, so that no long task is left running alone at the end.
    task_bytes: float = 0.0

    def frame(self) -> DataFrame:
        return self.units.mapInArrow(self.reader, SPARK_ROW_TYPE)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@dataclass
class IngestConfig:
    # JSON / table fields holding the caption, first found wins
    caption_keys: list[str] = field(default_factory=lambda: ["caption", "text", "txt"])
    image_keys: list[str] = field(default_factory=lambda: ["image", "jpg", "png", "img"])
    rows_per_batch: int = 256  # rows a reader hands to Spark at a time, at most ...
    batch_bytes: int = 16 * 2**20  # ... and at most this many bytes of images and text
    jsonl_split_bytes: int = 64 * 2**20  # JSONL files are read in byte ranges of at most this size ...
    unit_bytes: int = 64 * 2**20  # ... holding about this much payload (lines and the images they name)
    # Images in other formats (BMP, GIF, TIFF, ...) are re-encoded losslessly as PNG on the way in.
    keep_formats: list[str] = field(default_factory=lambda: ["JPEG", "PNG", "WEBP"])


def detect_lang(text: str) -> str:
    """'zh' when CJK characters make up a fifth of the letters, else 'en' (a cheap script test)."""
    letters = sum(1 for c in text if c.isalpha())
    return "zh" if letters and len(_CJK.findall(text)) / letters >= 0.2 else "en"


def caption_from_json(raw: bytes, keys: list[str]) -> bytes | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(data, dict):
        for key in keys:
            if isinstance(data.get(key), str):
                return data[key].encode()
    return None


def make_caption_row(
    source: str, origin: str, image: bytes | None, caption: bytes | None, keep_formats: Iterable[str] = ("JPEG", "PNG", "WEBP")
) -> dict:
    """A caption row from raw bytes, or a refused row saying why it could not become one."""
    if image is None:
        return refused(source, origin, "image_missing", "no image for this caption", caption)
    if caption is None:
        return refused(source, origin, "caption_missing", "no caption for this image", image)
    try:
        text = caption.decode("utf-8")
    except UnicodeDecodeError as exc:
        return refused(source, origin, "text_not_utf8", f"caption is not UTF-8: {exc.reason} at byte {exc.start}", image, caption)
    row = schema.caption_row(source, normalise_image(image, keep_formats), text, lang=detect_lang(text), extra={"origin": origin})
    row[REJECT] = None
    return row


def normalise_image(data: bytes, keep_formats: Iterable[str]) -> bytes:
    """The image as found when its format is one of `keep_formats` (or it cannot be read: the
    validation step refuses it with its reason), else re-encoded losslessly as PNG."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            if img.format in keep_formats:
                return data
            frame = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    except Exception:  # unreadable: kept as found for validation to refuse with its reason
        return data
    buf = io.BytesIO()
    frame.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def refused(source: str, origin: str, reason: str, detail: str, *content: bytes | None) -> dict:
    """A row that never became a sample: empty content, an id from what identifies it."""
    row = schema.make_row(
        source, "caption", [], id=schema.raw_id(source, origin, *content), extra={"origin": origin}
    )
    row[REJECT] = {"step": STEP, "reason": reason, "detail": detail}
    return row


def decode_data_uri(value: str) -> bytes | None:
    """`data:image/png;base64,...` strings, so JSONL tables can carry image bytes inline."""
    if value.startswith("data:") and ";base64," in value:
        return base64.b64decode(value.split(";base64,", 1)[1])
    return None


def image_beside(file: str, value: str) -> bytes:
    """The bytes of an image a table or JSONL file names: a `data:` URI, or a path relative to the
    file that must stay inside the file's folder (PermissionError) and exist (FileNotFoundError)."""
    inline = decode_data_uri(value)
    if inline is not None:
        return inline
    folder = os.path.dirname(os.path.realpath(file))
    target = os.path.realpath(os.path.join(folder, value))
    if os.path.commonpath([folder, target]) != folder:
        raise PermissionError(f"image path {value!r} leaves the folder of {os.path.basename(file)}")
    if not os.path.isfile(target):
        raise FileNotFoundError(f"image {value!r} not found next to {os.path.basename(file)}")
    with open(target, "rb") as f:
        return f.read()


def to_batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)


def batches_of(rows: Iterable[dict], size: int, max_bytes: int = 16 * 2**20) -> Iterator[pa.RecordBatch]:
    """Arrow batches of at most `size` rows and about `max_bytes` of image bytes and text, so a
    large shard or table streams through memory whatever its images weigh."""
    chunk, chunk_bytes = [], 0
    for row in rows:
        chunk.append(row)
        chunk_bytes += _payload_bytes(row)
        if len(chunk) == size or chunk_bytes >= max_bytes:
            yield to_batch(chunk)
            chunk, chunk_bytes = [], 0
    if chunk:
        yield to_batch(chunk)


def _payload_bytes(row: dict) -> int:
    images = sum(len(image["bytes"] or b"") for image in row.get("images") or ())
    texts = sum(len(p["text"] or "") for m in row.get("messages") or () for p in m["content"] or ())
    return images + texts + 256
