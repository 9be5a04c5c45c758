"""Flat shapes drawn without anti-aliasing: every pixel of a shape has exactly its colour, so the
count can be checked by connected components and the kind by how much of its box it fills
(square 1.0, circle ~0.79, upward triangle ~0.5)."""

from __future__ import annotations

from PIL import ImageDraw

KINDS = ("circle", "square", "triangle")
NAMES = {
    "circle": {"en": ("circle", "circles"), "zh": "圆形"},
    "square": {"en": ("square", "squares"), "zh": "正方形"},
    "triangle": {"en": ("triangle", "triangles"), "zh": "三角形"},
}
# fill ratio (pixels / bounding box) that tells the kinds apart: between the kinds' own ratios
SQUARE_ABOVE, CIRCLE_ABOVE = 0.9, 0.65


def draw(draw: ImageDraw.ImageDraw, kind: str, x: int, y: int, size: int, colour: tuple[int, int, int]) -> None:
    """A shape in the box [x, x+size) x [y, y+size)."""
    last = size - 1
    if kind == "circle":
        draw.ellipse((x, y, x + last, y + last), fill=colour)
    elif kind == "square":
        draw.rectangle((x, y, x + last, y + last), fill=colour)
    elif kind == "triangle":
        draw.polygon([(x, y + last), (x + last / 2, y), (x + last, y + last)], fill=colour)
    else:
        raise ValueError(f"unknown shape {kind!r}; known: {KINDS}")


def kind_from_fill(fill: float) -> str:
    return "square" if fill > SQUARE_ABOVE else "circle" if fill > CIRCLE_ABOVE else "triangle"


def name(kind: str, lang: str, count: int = 1) -> str:
    if lang == "zh":
        return NAMES[kind]["zh"]
    singular, plural = NAMES[kind]["en"]
    return singular if count == 1 else plural
