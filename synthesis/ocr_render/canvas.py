"""What a layout produces, and the drawing helpers layouts share.

A ``Rendering`` is an RGB image plus its text lines in reading order, each with a quadrilateral in
pixel coordinates (top-left, top-right, bottom-right, bottom-left) and optionally one per
character. Effects move the quadrilaterals with the pixels; ground truth turns them into integer
boxes in [0, 1000).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFont


@dataclass
class Line:
    text: str
    quad: np.ndarray  # (4, 2) float32 pixel corners
    chars: list[tuple[str, np.ndarray]] | None = None
    role: str = "text"  # text, heading, cell


@dataclass
class Rendering:
    image: Image.Image
    lines: list[Line]
    layout: str
    lang: str
    fonts: list[str] = field(default_factory=list)
    table: list[list[str]] | None = None
    text_kind: str = "sentence"


def quad(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def draw_text(
    draw: ImageDraw.ImageDraw,
    xy: tuple[float, float],
    text: str,
    font: ImageFont.FreeTypeFont,
    fill,
    chars: bool = False,
    role: str = "text",
    stroke_width: int = 0,
    stroke_fill=None,
) -> Line:
    """Draw `text` with its top-left layout corner at xy; return the line with its ink box."""
    x, y = xy
    draw.text((x, y), text, font=font, fill=fill, stroke_width=stroke_width, stroke_fill=stroke_fill)
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke_width)
    line = Line(text, quad(x + left, y + top, x + right, y + bottom), role=role)
    if chars:
        line.chars = []
        for i, ch in enumerate(text):
            if ch.isspace():
                continue
            x0 = x + font.getlength(text[:i])
            x1 = x + font.getlength(text[: i + 1])
            line.chars.append((ch, quad(x0, y + top, x1, y + bottom)))
    return line


def line_height(font: ImageFont.FreeTypeFont, spacing: float = 1.0) -> int:
    ascent, descent = font.getmetrics()
    return int(round((ascent + descent) * spacing))


def wrap(text: str, font: ImageFont.FreeTypeFont, width: float, lang: str) -> list[str]:
    """Break text into lines no wider than `width`: at spaces for English, anywhere for Chinese."""
    units = list(text) if lang == "zh" else text.split(" ")
    sep = "" if lang == "zh" else " "
    lines, current = [], ""
    for unit in units:
        trial = f"{current}{sep}{unit}" if current else unit
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = unit
        else:
            current = trial
    if current:
        lines.append(current)
    return lines


def paper(rng: random.Random, width: int, height: int) -> Image.Image:
    """A light background: a flat tone, sometimes with a soft vertical gradient."""
    base = np.array([rng.randint(215, 255) for _ in range(3)], dtype=np.float32)
    if rng.random() < 0.5:
        return Image.new("RGB", (width, height), tuple(int(v) for v in base))
    ramp = np.linspace(-rng.uniform(0, 25), rng.uniform(0, 25), height, dtype=np.float32)
    arr = np.clip(base[None, None, :] + ramp[:, None, None], 0, 255).astype(np.uint8)
    return Image.fromarray(np.broadcast_to(arr, (height, width, 3)).copy())


def ink(rng: random.Random) -> tuple[int, int, int]:
    """A dark text colour."""
    level = rng.randint(0, 70)
    return tuple(min(255, level + rng.randint(0, 40)) for _ in range(3))
