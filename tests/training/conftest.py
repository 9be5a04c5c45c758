"""Fixtures for the model and processor tests: the tiny config and model, the Qwen tokenizer, rows."""

from __future__ import annotations

import pytest
import torch
from keye_helpers import TINY_YAML, png, video_entry

from curation import schema


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


@pytest.fixture
def tiny_model64(tiny_model):
    """The same model in float64, for tests that compute the same numbers two ways
    (keye_helpers.SAME_MATH_ATOL says why)."""
    return tiny_model.double()


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
