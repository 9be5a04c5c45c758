"""RapidOCR (onnxruntime; the PP-OCRv4 models ship inside the wheel): the offline default."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from synthesis.ocr_extract.engine import EngineConfig, EngineUnavailable, OcrLine


class RapidEngine:
    name = "rapidocr"

    def __init__(self, cfg: EngineConfig):
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise EngineUnavailable(
                "RapidOCR is not installed: pip install rapidocr-onnxruntime (or keyeforge[test])"
            ) from exc
        threads = {
            f"{part}_{key}": value
            for part in ("det", "cls", "rec")
            for key, value in (("intra_op_num_threads", cfg.threads), ("inter_op_num_threads", 1))
        }
        # Detection at the image's own scale (capped), not upscaled to a 736-pixel short side:
        # much faster on lines and pages, and words of one line stay one box.
        defaults = {"det_limit_type": "max", "det_limit_side_len": 1280}
        self._ocr = RapidOCR(**{**threads, **defaults, **cfg.options})

    def read(self, images: Sequence[np.ndarray]) -> list[list[OcrLine]]:
        out = []
        for image in images:
            result, _ = self._ocr(image)
            lines = []
            for quad, text, score in result or ():
                corners = tuple((float(x), float(y)) for x, y in quad)
                lines.append(OcrLine(str(text), float(score), corners))
            out.append(lines)
        return out
