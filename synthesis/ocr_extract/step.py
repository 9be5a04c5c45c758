"""The OCR extraction step: images of input rows -> OCR rows, in ``mapInArrow`` over Arrow batches.

Each kept input row's first image is decoded, scaled to at most ``max_side``, and read by the
configured engine (loaded once per Python worker, fed in batches). Lines at or above ``min_score``
are kept, put in reading order, and become one OCR row (question in English or Chinese, the text
as the answer, line boxes in [0, 1000) in ``extra``). An input row is refused, same id, with a
reason: ``no_image``, ``undecodable_image``, ``no_text`` (nothing detected), ``too_little_text``
(fewer than ``min_chars`` confident characters) or ``ocr_error``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.pandas.types import from_arrow_schema

from curation import schema
from curation.steps import ALL_COLUMNS, REJECT, REJECT_TYPE, Step, with_reject_column
from synthesis.ocr_extract.engine import EngineConfig, OcrLine, get_engine
from synthesis.ocr_extract.reading import language, reading_order
from synthesis.ocr_render.phrasings import question

STEP = "extract_ocr"
REJECT_ARROW = pa.struct([("step", pa.string()), ("reason", pa.string()), ("detail", pa.string())])
OUT_SCHEMA = schema.SCHEMA.append(pa.field(REJECT, REJECT_ARROW))
TASK_TYPE = "perception~ocr~full_text"


@dataclass
class ExtractConfig:
    enabled: bool = True
    engine: EngineConfig = field(default_factory=EngineConfig)
    min_score: float = 0.8  # lines below this confidence are dropped
    min_chars: int = 4  # fewer confident characters (spaces aside): the image is refused
    max_side: int = 1600  # longer images are scaled down before OCR
    batch_size: int = 8
    source: str = "ocr_extract"


class ExtractOcr(Step):
    """The step object (a row rewriter: the runner materialises its output as the new rows)."""

    name = STEP
    writes = ALL_COLUMNS

    def __call__(self, df: DataFrame) -> DataFrame:
        return extract_ocr(df, self.config)

    def cache_key(self) -> dict:
        return {f.name: dataclasses.asdict(self.config).get(f.name) for f in dataclasses.fields(ExtractConfig)}


def extract_ocr(df: DataFrame, cfg: ExtractConfig) -> DataFrame:
    """Kept rows become OCR rows of their first image, or are marked refused; others pass through."""
    marked = with_reject_column(df).select(*schema.COLUMNS, REJECT)
    if not cfg.enabled:
        return marked
    cfg = ExtractConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(ExtractConfig)})
    out_schema = from_arrow_schema(schema.SCHEMA).add(REJECT, REJECT_TYPE)
    return marked.mapInArrow(_Extractor(cfg), out_schema)


def decode(data: bytes | None, max_side: int) -> np.ndarray | None:
    if not data:
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    scale = max_side / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    return image


def refuse(row: dict, reason: str, detail: str) -> dict:
    return {**row, REJECT: {"step": STEP, "reason": reason, "detail": detail[:500]}}


def ocr_row(row: dict, lines: list[OcrLine], image: np.ndarray, cfg: ExtractConfig) -> dict:
    h, w = image.shape[:2]
    ordered = reading_order(lines)
    text = "\n".join(line.text for line in ordered)
    lang = language(text)
    rng = random.Random(f"keyeforge.ocr_extract:{row['id']}")
    qlang = lang if rng.random() < 0.7 else ("en" if lang == "zh" else "zh")
    original = row["images"][0]

    def box(line: OcrLine) -> list[int]:
        x0, y0, x1, y1 = line.box()
        return [min(999, max(0, int(v))) for v in (x0 / w * 1000, y0 / h * 1000, x1 / w * 1000, y1 / h * 1000)]

    extra = {
        "origin": row["id"],
        "origin_source": row["source"],
        "engine": cfg.engine.name,
        "lines": [{"text": l.text, "score": round(l.score, 4), "box": box(l)} for l in ordered],
    }
    new = schema.make_row(
        cfg.source,
        "ocr",
        [schema.message("user", schema.image_part(0), question(rng, "full_page", qlang)),
         schema.message("assistant", text)],
        [original],
        task_types=[TASK_TYPE],
        lang=lang,
        extra=extra,
    )
    new[REJECT] = None
    return new


class _Extractor:
    def __init__(self, cfg: ExtractConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        engine = None
        for batch in batches:
            rows = batch.to_pylist()
            out: list[dict | None] = [None] * len(rows)
            todo: list[tuple[int, np.ndarray]] = []
            for i, row in enumerate(rows):
                if row.get(REJECT) is not None:
                    out[i] = row
                elif not row.get("images"):
                    out[i] = refuse(row, "no_image", "the row has no image")
                else:
                    image = decode(row["images"][0].get("bytes"), self.cfg.max_side)
                    if image is None:
                        out[i] = refuse(row, "undecodable_image", "the first image's bytes do not decode")
                    else:
                        todo.append((i, image))
            if todo and engine is None:
                engine = get_engine(self.cfg.engine)
            for start in range(0, len(todo), max(1, self.cfg.batch_size)):
                chunk = todo[start : start + self.cfg.batch_size]
                for (i, image), lines in zip(chunk, self._read(engine, [img for _, img in chunk])):
                    out[i] = self._verdict(rows[i], image, lines)
            yield pa.RecordBatch.from_pylist(out, schema=OUT_SCHEMA)

    def _read(self, engine, images: list[np.ndarray]) -> list[list[OcrLine] | Exception]:
        try:
            return engine.read(images)
        except Exception:  # one bad image must not sink the batch: read them one by one
            results: list[list[OcrLine] | Exception] = []
            for image in images:
                try:
                    results.append(engine.read([image])[0])
                except Exception as exc:  # recorded as the row's reject reason
                    results.append(exc)
            return results

    def _verdict(self, row: dict, image: np.ndarray, lines) -> dict:
        if isinstance(lines, Exception):
            return refuse(row, "ocr_error", f"{type(lines).__name__}: {lines}")
        if not lines:
            return refuse(row, "no_text", "the engine detected no text")
        kept = [l for l in lines if l.score >= self.cfg.min_score and l.text.strip()]
        chars = sum(len("".join(l.text.split())) for l in kept)
        if chars < self.cfg.min_chars:
            best = max((l.score for l in lines), default=0.0)
            return refuse(
                row, "too_little_text",
                f"{chars} characters at score >= {self.cfg.min_score} (min {self.cfg.min_chars}); "
                f"{len(lines)} lines, best score {best:.2f}",
            )
        return ocr_row(row, kept, image, self.cfg)
