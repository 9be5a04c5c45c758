"""What every source reader shares: the ingest step's name, turning one found item into a
contract row (or a refusal with its reason), and the row schema sources emit."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
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

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")


@dataclass
class IngestConfig:
    # JSON / table fields holding the caption, first found wins
    caption_keys: list[str] = field(default_factory=lambda: ["caption", "text", "txt"])
    image_keys: list[str] = field(default_factory=lambda: ["image", "jpg", "png", "img"])
    rows_per_batch: int = 256  # rows a reader hands to Spark at a time
    jsonl_split_bytes: int = 64 * 2**20  # JSONL files are read in byte ranges of this size


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


def make_caption_row(source: str, origin: str, image: bytes | None, caption: bytes | None) -> dict:
    """A caption row from raw bytes, or a refused row saying why it could not become one."""
    if image is None:
        return refused(source, origin, "image_missing", "no image for this caption", caption)
    if caption is None:
        return refused(source, origin, "caption_missing", "no caption for this image", image)
    try:
        text = caption.decode("utf-8")
    except UnicodeDecodeError as exc:
        return refused(source, origin, "text_not_utf8", f"caption is not UTF-8: {exc.reason} at byte {exc.start}", image, caption)
    row = schema.caption_row(source, image, text, lang=detect_lang(text), extra={"origin": origin})
    row[REJECT] = None
    return row


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


def to_batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)


def batches_of(rows: Iterable[dict], size: int) -> Iterator[pa.RecordBatch]:
    """Arrow batches of at most `size` rows, so a large shard or table streams through memory."""
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield to_batch(chunk)
            chunk = []
    if chunk:
        yield to_batch(chunk)
