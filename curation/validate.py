"""Validation: every image decodes and has a usable size; every text is clean and not too long.

Images are checked from their header first (size, pixel count: a decompression bomb is refused
before any pixel is decoded), then decoded in full. Texts are checked for emptiness, length,
control characters and mojibake. Each refusal has its own reason:

    image_empty, image_decode_error, image_truncated, image_too_many_pixels, image_too_small,
    aspect_ratio_too_extreme, text_empty, text_too_long, text_control_chars, text_mojibake,
    row_malformed

The step only decides: it changes no row (images in unusual formats are re-encoded at ingest,
`curation.sources.common.normalise_image`). Its verdicts are (row key, reason, detail) for the
refused rows, joined back to the frame. Every image is decoded here anyway, so in a job (a work
folder given) the step also records each good image's pHash by its sha256 (`workdir.PHASHES`):
the image dedup and decontamination steps then compare images without decoding them again.
Stats: refusals by reason, images decoded.
"""

from __future__ import annotations

import io
import re
import unicodedata
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame

from curation import schema
from curation.dedup.image_hash import phash
from curation.steps import RowStep
from curation.workdir import PHASHES

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


# A UTF-8 lead byte read as Latin-1/CP1252 (Ã, Â, â, Ð, Ñ...) followed by a continuation byte read
# the same way: the signature of UTF-8 text decoded with the wrong codec.
_MOJIBAKE = re.compile(r"[\u00c2-\u00f4][\u0080-\u00bf\u2018-\u203a\u20ac\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2122]")


class Validate(RowStep):
    name = STEP
    requires = ("PIL",)
    facts = PHASHES
    facts_schema = pa.schema([("sha256", pa.string()), ("phash", pa.int64())])

    def check(self, row: dict, facts: list[dict] | None) -> tuple[str, str] | None:
        decoded: list | None = [] if facts is not None else None
        problem = check_row(row, self.config, decoded)
        for sha256, img in decoded or ():
            with img:
                facts.append({"sha256": sha256, "phash": phash(img)})
        return problem


def validate(df: DataFrame, cfg: ValidateConfig) -> DataFrame:
    """The step as a function (`Validate(cfg)(df)`)."""
    return Validate(cfg)(df)


def check_image(data: bytes | None, cfg: ValidateConfig) -> tuple[str, str] | tuple[None, tuple[int, int, str | None]]:
    """(reason, detail) for a bad image, or (None, (width, height, format)) for a good one."""
    reason, info, img = open_checked(data, cfg)
    if img is not None:
        img.close()
    return reason, info


def open_checked(data: bytes | None, cfg: ValidateConfig):
    """(reason, detail, None) for a bad image, or (None, (width, height, format), the decoded
    image) for a good one."""
    from PIL import Image, ImageFile

    if not data:
        return "image_empty", "0 bytes", None
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    Image.MAX_IMAGE_PIXELS = None  # we apply our own limit from the header, before decoding
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # PIL raises many types for unreadable headers
        return "image_decode_error", f"{type(exc).__name__}: {exc}"[:300], None
    width, height = img.size
    problem = None
    if width * height > cfg.max_pixels:
        problem = "image_too_many_pixels", f"{width}x{height} = {width * height} pixels > {cfg.max_pixels}"
    elif min(width, height) < cfg.min_side:
        problem = "image_too_small", f"{width}x{height}, shorter side < {cfg.min_side}"
    elif max(width, height) / max(1, min(width, height)) > cfg.max_aspect_ratio:
        ratio = max(width, height) / min(width, height)
        problem = "aspect_ratio_too_extreme", f"{width}x{height}, ratio {ratio:.1f} > {cfg.max_aspect_ratio:g}"
    else:
        try:
            img.load()
        except OSError as exc:
            reason = "image_truncated" if "truncated" in str(exc).lower() else "image_decode_error"
            problem = reason, (str(exc) if reason == "image_truncated" else f"{type(exc).__name__}: {exc}")[:300]
        except Exception as exc:
            problem = "image_decode_error", f"{type(exc).__name__}: {exc}"[:300]
    if problem:
        img.close()
        return problem[0], problem[1], None
    return None, (width, height, img.format), img


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


def check_row(row: dict, cfg: ValidateConfig, decoded: list | None = None) -> tuple[str, str] | None:
    """The first problem of a row as (reason, detail), or None. `decoded`, when given, receives
    (sha256, decoded image) of each image of a good row, for the caller to use and close."""
    images, problem, checked = [], None, False
    try:
        for i, image in enumerate(row["images"] or ()):
            reason, info, img = open_checked(image["bytes"], cfg)
            if reason:
                problem = reason, f"image {i}: {info}"
                break
            images.append((image.get("sha256"), img))
            width, height, _ = info
            if (image.get("width"), image.get("height")) != (width, height):
                problem = "row_malformed", f"image {i}: the row says {image.get('width')}x{image.get('height')}, the image is {width}x{height}"
                break
        problem = problem or _check_content(row, cfg)
        checked = True
    finally:
        if decoded is not None and checked and problem is None:
            decoded.extend(images)
        else:
            for _, img in images:
                img.close()
    return problem


def _check_content(row: dict, cfg: ValidateConfig) -> tuple[str, str] | None:
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


