"""Helpers for the Keye model and processor tests (a uniquely named module, imported by the tests
and by conftest.py; pytest puts this folder on sys.path)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation import schema

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference" / "keye-vl-8b-preview"
TINY_YAML = REPO / "configs" / "models" / "tiny.yaml"


def reference_file(name: str) -> Path:
    """A file of the released Keye-VL-8B-Preview reference data, or skip the test."""
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference data {path} is absent (it lives in ../shared/reference next to the repo)")
    return path


def png(height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def video_entry(num_frames: int, height: int, width: int, fps: float, seed: int = 0) -> dict:
    frames = [png(height, width, seed * 1000 + i) for i in range(num_frames)]
    times = [i / fps for i in range(num_frames)]
    return schema.video_entry(frames, times, width, height, fps, num_frames / fps)
