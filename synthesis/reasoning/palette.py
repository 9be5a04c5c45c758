"""Colours with names in both languages. A colour word in a question means exactly these pixel
values, so a check may look for them: that is the question's meaning, not the generator's state.

Shapes and bars use the saturated colours; notes use the light ones, so dark text on them reads.
"""

from __future__ import annotations

# name: (RGB, English, Chinese)
SATURATED = {
    "red": ((214, 39, 40), "red", "红色"),
    "green": ((44, 160, 44), "green", "绿色"),
    "blue": ((31, 96, 220), "blue", "蓝色"),
    "yellow": ((236, 190, 20), "yellow", "黄色"),
    "purple": ((148, 70, 189), "purple", "紫色"),
}
LIGHT = {
    "yellow": ((255, 236, 130), "yellow", "黄色"),
    "pink": ((250, 192, 214), "pink", "粉色"),
    "blue": ((172, 212, 250), "blue", "蓝色"),
    "green": ((184, 236, 180), "green", "绿色"),
    "orange": ((255, 204, 150), "orange", "橙色"),
}


def rgb(name: str, table: dict = SATURATED) -> tuple[int, int, int]:
    return table[name][0]


def word(name: str, lang: str, table: dict = SATURATED) -> str:
    return table[name][1 if lang == "en" else 2]


def light_background(rng) -> tuple[int, int, int]:
    """An off-white canvas: far from every named colour, so none is mistaken for background."""
    base = rng.randint(236, 252)
    return tuple(min(255, base + rng.randint(-3, 3)) for _ in range(3))
