"""Fonts for the text the tasks draw, from the OCR renderer's discovery (synthesis.ocr_render.fonts):
only faces whose character map covers every character of the text (no tofu), and of those the
upright regular and bold text faces — oblique, extra-light and maths faces are left out because a
reading task must be readable by a person and by the independent OCR check alike."""

from __future__ import annotations

import random
from functools import lru_cache

from PIL import ImageFont

from synthesis.ocr_render import fonts

_LEFT_OUT = ("oblique", "italic", "extralight", "math", "light")


@lru_cache(maxsize=1)
def pool() -> fonts.FontPool:
    faces = [f for f in fonts.discover() if not any(word in f.name.lower() for word in _LEFT_OUT)]
    return fonts.FontPool(faces)


def pick(rng: random.Random, text: str) -> fonts.Face:
    """A face covering all of `text` (fonts.NoFontError when none does)."""
    return pool().pick(rng, text)


def load(face: fonts.Face, size: int) -> ImageFont.FreeTypeFont:
    return fonts.load(face, size)
