"""Counting shapes, checked from the pixels alone: OpenCV connected components of each named colour
(8-neighbour, unlike the agentic code's flood fill), each component's kind from its fill ratio, and
every pixel that is not background accounted for by some named colour."""

from __future__ import annotations

import cv2
import numpy as np

from synthesis.reasoning import palette, shapes_drawing
from synthesis.reasoning.task import Task, decode_rgb


def components(rgb: np.ndarray) -> list[tuple[str, str]]:
    """(colour, kind) of every shape in the image."""
    found = []
    for colour in palette.SATURATED:
        mask = np.all(rgb == np.array(palette.rgb(colour), np.uint8), axis=2).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for i in range(1, n):
            _, _, w, h, area = stats[i]
            found.append((colour, shapes_drawing.kind_from_fill(area / (w * h))))
    return found


def check(task: Task) -> tuple[bool, str]:
    rgb = decode_rgb(task.images[0])
    background = rgb[0, 0]
    named = np.zeros(rgb.shape[:2], bool)
    for colour in palette.SATURATED:
        named |= np.all(rgb == np.array(palette.rgb(colour), np.uint8), axis=2)
    stray = int((~named & np.any(rgb != background, axis=2)).sum())
    if stray:
        return False, f"{stray} pixels are neither background nor a named colour"
    found = components(rgb)
    ask = task.meta["ask"]
    if ask["form"] == "compare":
        a, b = ask["colours"]
        na, nb = (sum(c == x for c, _ in found) for x in (a, b))
        if na == nb:
            return False, f"{a} and {b} both have {na} components"
        expected = palette.word(a if na > nb else b, task.lang)
        how = f"connected components: {na} {a}, {nb} {b}"
    else:
        n = sum(ask.get("colour") in (None, c) and ask.get("shape") in (None, k) for c, k in found)
        expected = str(n)
        how = f"connected components of the named colours, kinds by fill ratio: {n} match {ask}"
    return expected == task.answer, f"{how}; expected {expected!r}, task says {task.answer!r}"
