"""Shared fixtures for the model and processor tests: the tiny config, the Qwen tokenizer, rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
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


@pytest.fixture(scope="session")
def tokenizer():
    from training.processor import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def processor(tokenizer):
    """Small video budgets so test videos stay a few dozen tokens (the rules are the real ones)."""
    from training.processor import KeyeProcessor

    return KeyeProcessor(tokenizer, video_frame_min_tokens=4, video_frame_max_tokens=8, video_max_tokens=64)


@pytest.fixture(scope="session")
def tiny_config():
    from training.model import load_model_config

    return load_model_config(TINY_YAML)


@pytest.fixture
def tiny_model(tiny_config):
    from training.model import KeyeForConditionalGeneration

    torch.manual_seed(0)
    return KeyeForConditionalGeneration(tiny_config).eval()


@pytest.fixture(scope="session")
def mixed_rows():
    """Text-only, one image, two images of different sizes, a video (and a captioned document)."""
    m = schema.message
    return [
        schema.make_row("t", "text", [m("user", "Say hi."), m("assistant", "Hi there!")]),
        schema.make_row(
            "t",
            "vqa",
            [m("user", schema.image_part(0), "What colour?"), m("assistant", "<think>\nlook\n</think>\n\nRed.")],
            [schema.image_entry(png(56, 84, 1))],
            think_mode="think",
        ),
        schema.make_row(
            "t",
            "vqa",
            [
                m("user", schema.image_part(0), "and", schema.image_part(1), "differ?"),
                m("assistant", "Yes, in size."),
            ],
            [schema.image_entry(png(84, 56, 2)), schema.image_entry(png(112, 140, 3))],
            think_mode="no_think",
        ),
        schema.make_row(
            "t",
            "video",
            [m("user", schema.video_part(0), "What happens?"), m("assistant", "Noise flickers.")],
            videos=[video_entry(6, 56, 84, fps=2.0, seed=4)],
        ),
        schema.caption_row("t", png(56, 56, 5), "a noisy square"),
    ]
