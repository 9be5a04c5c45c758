"""Where something is, in words (a 3x3 grid of regions) and as grounding coordinates: integers in
[0, 1000) of the image's width and height, as everywhere in the sample contract."""

from __future__ import annotations

REGIONS = {
    "en": [["top left", "top", "top right"], ["left", "centre", "right"], ["bottom left", "bottom", "bottom right"]],
    "zh": [["左上角", "上方", "右上角"], ["左侧", "中间", "右侧"], ["左下角", "下方", "右下角"]],
}


def coord(value: float, size: int) -> int:
    return int(min(999, max(0, value / size * 1000)))


def point(x: float, y: float, width: int, height: int) -> str:
    return f"({coord(x, width)}, {coord(y, height)})"


def region(x: float, y: float, width: int, height: int, lang: str) -> str:
    col = min(2, int(3 * x / width))
    row = min(2, int(3 * y / height))
    return REGIONS[lang][row][col]


def box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> str:
    return f"[{coord(x0, width)}, {coord(y0, height)}, {coord(x1, width)}, {coord(y1, height)}]"
