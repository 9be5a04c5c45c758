"""The independent reader: RapidOCR (synthesis.ocr_extract, offline, models in the wheel), one
engine per process, lines joined in reading order."""

from __future__ import annotations

import cv2
import numpy as np

from synthesis.ocr_extract.engine import EngineConfig, OcrLine, get_engine
from synthesis.ocr_extract.reading import reading_order


def lines(rgb: np.ndarray) -> list[OcrLine]:
    engine = get_engine(EngineConfig(name="rapidocr", threads=1))
    return engine.read([cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)])[0]


def read(rgb: np.ndarray) -> tuple[str, float]:
    """(the text, joined in reading order with spaces; its lowest line confidence, 0 when nothing)."""
    found = reading_order(lines(rgb))
    if not found:
        return "", 0.0
    return " ".join(line.text for line in found), min(line.score for line in found)


def pad(rgb: np.ndarray, margin: int, colour=None) -> np.ndarray:
    """A border around an image: the detector misses text that touches the edge."""
    corner = colour if colour is not None else rgb[0, 0]
    value = tuple(int(v) for v in np.atleast_1d(corner))
    return cv2.copyMakeBorder(rgb, margin, margin, margin, margin, cv2.BORDER_CONSTANT, value=value)
