"""Validation: every image decodes and has a usable size; every text is clean and not too long.

Images are checked from their header first (size, pixel count: a decompression bomb is refused
before any pixel is decoded), then decoded in full. Texts are checked for emptiness, length,
control characters and mojibake. Each refusal has its own reason:

    image_empty, image_decode_error, image_truncated, image_too_many_pixels, image_too_small,
    aspect_ratio_too_extreme, text_empty, text_too_long, text_control_chars, text_mojibake,
    row_malformed

Images in formats outside `keep_formats` are re-encoded losslessly as PNG.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
from pyspark.sql import DataFrame

from curation import schema
from curation.steps import REJECT, with_reject_column

STEP = "validate"


@dataclass
class ValidateConfig:
    enabled: bool = True
    min_side: int = 28
    max_pixels: int = 64_000_000
    max_aspect_ratio: float = float(schema.MAX_ASPECT_RATIO)
    min_text_chars: int = 1
    max_text_chars: int = 16384
    max_bad_char_fraction: float = 0.1  # control / replacement / mojibake characters per character
    keep_formats: list[str] = field(default_factory=lambda: ["JPEG", "PNG", "WEBP"])


# A UTF-8 lead byte read as Latin-1/CP1252 (Ã, Â, â, Ð, Ñ...) followed by a continuation byte read
# the same way: the signature of UTF-8 text decoded with the wrong codec.
_MOJIBAKE = re.compile(r"[\u00c2-\u00f4][\u0080-\u00bf\u2018-\u203a\u20ac\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2122]")


def validate(df: DataFrame, cfg: ValidateConfig) -> DataFrame:
    df = with_reject_column(df)
    return df.mapInArrow(_Validator(cfg), df.schema)


def check_image(data: bytes | None, cfg: ValidateConfig) -> tuple[str, str] | tuple[None, tuple[int, int, str | None]]:
    """(reason, detail) for a bad image, or (None, (width, height, format)) for a good one."""
    from PIL import Image, ImageFile

    if not data:
        return "image_empty", "0 bytes"
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit from the header, before decoding
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises many types for unreadable headers
        return "image_decode_error", f"{type(exc).__name__}: {exc}"[:300]
    with img:
        width, height = img.size
        if width * height > cfg.max_pixels:
            return "image_too_many_pixels", f"{width}x{height} = {width * height} pixels > {cfg.max_pixels}"
        if min(width, height) < cfg.min_side:
            return "image_too_small", f"{width}x{height}, shorter side < {cfg.min_side}"
        if max(width, height) / max(1, min(width, height)) > cfg.max_aspect_ratio:
            return "aspect_ratio_too_extreme", f"{width}x{height}, ratio {max(width, height) / min(width, height):.1f} > {cfg.max_aspect_ratio:g}"
        fmt = img.format
        try:
            img.load()
        except OSError as exc:
            if "truncated" in str(exc).lower():
                return "image_truncated", str(exc)[:300]
            return "image_decode_error", f"{type(exc).__name__}: {exc}"[:300]
        except Exception as exc:
            return "image_decode_error", f"{type(exc).__name__}: {exc}"[:300]
        return None, (width, height, fmt)


def check_text(text: str, cfg: ValidateConfig) -> tuple[str, str] | None:
    stripped = text.strip()
    if len(stripped) < cfg.min_text_chars:
        return "text_empty", f"{len(stripped)} characters after stripping"
    if len(text) > cfg.max_text_chars:
        return "text_too_long", f"{len(text)} characters > {cfg.max_text_chars}"
    control = sum(1 for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co") and c not in "\n\t\r")
    replacement = text.count("\ufffd")
    if (control + replacement) / len(text) > cfg.max_bad_char_fraction:
        return "text_control_chars", f"{control} control and {replacement} replacement characters in {len(text)}"
    mojibake = 2 * len(_MOJIBAKE.findall(text))
    if mojibake / len(text) > cfg.max_bad_char_fraction:
        return "text_mojibake", f"{mojibake} of {len(text)} characters look like mis-decoded UTF-8"
    return None


def check_row(row: dict, cfg: ValidateConfig) -> tuple[str, str] | None:
    """The first problem of a row as (reason, detail), fixing image sizes and formats in place."""
    for i, image in enumerate(row["images"] or ()):
        reason, info = check_image(image["bytes"], cfg)
        if reason:
            return reason, f"image {i}: {info}"
        width, height, fmt = info
        image["width"], image["height"] = width, height
        if fmt not in cfg.keep_formats:
            image["bytes"] = _to_png(image["bytes"])
            image["sha256"] = hashlib.sha256(image["bytes"]).hexdigest()
    problems = schema.validate_row({k: row[k] for k in schema.COLUMNS})
    if problems:
        return "row_malformed", "; ".join(problems)[:300]
    texts = [p["text"] for turn in row["messages"] for p in turn["content"] if p["type"] == "text"]
    if not texts:
        if not row["images"] and not row["videos"]:
            return "text_empty", "no text and no media"
        return None
    for text in texts:
        problem = check_text(text, cfg)
        if problem:
            return problem
    return None


def _to_png(data: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        frame = img.convert("RGBA" if "A" in img.getbands() else "RGB")
    buf = io.BytesIO()
    frame.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


class _Validator:
    def __init__(self, cfg: ValidateConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            rows = batch.to_pylist()
            for row in rows:
                if row[REJECT] is not None:
                    continue
                try:
                    problem = check_row(row, self.cfg)
                except Exception as exc:  # a malformed row must not stop the job: refuse it
                    problem = ("row_malformed", f"{type(exc).__name__}: {exc}"[:300])
                if problem:
                    row[REJECT] = {"step": STEP, "reason": problem[0], "detail": problem[1]}
            yield pa.RecordBatch.from_pylist(rows, schema=batch.schema)
