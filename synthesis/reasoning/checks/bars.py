"""Bar charts, checked from the pixels alone. Bars are the connected areas of saturated colour;
their common bottom is the baseline. Gridlines are the rows that are mostly light grey; their
spacing is the pixels per gridline. OCR reads the tick labels left of the plot (each paired with
its nearest gridline gives the value of one gridline step) and the category label under each bar.
Each bar's value is its height in gridline steps times the step, and the question, named by labels
as it was asked, is answered again from those values. A label is matched to the question's labels
allowing one OCR slip (an l read as t), never ambiguously."""

from __future__ import annotations

import re
from itertools import pairwise

import cv2
import numpy as np

from synthesis.reasoning.checks import ocr
from synthesis.reasoning.normalise import text_key
from synthesis.reasoning.task import Task, decode_rgb

_NUMBER = re.compile(r"^\d+$")
GAP = 24  # white rows between stacked label strips, so each strip is its own OCR line


def enlarged(rgb: np.ndarray) -> np.ndarray:
    return cv2.resize(rgb, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)


def measure(rgb: np.ndarray) -> tuple[list[tuple[str, float]], str]:
    """([(label, value) left to right], how it was measured); ValueError when unreadable."""
    saturated = (rgb.max(axis=2).astype(int) - rgb.min(axis=2)) > 80
    n, _, stats, _ = cv2.connectedComponentsWithStats(saturated.astype(np.uint8), connectivity=4)
    bars = sorted((tuple(int(v) for v in stats[i][:4]) for i in range(1, n) if stats[i][4] > 50), key=lambda s: s[0])
    if not bars:
        raise ValueError("no bars")
    baseline = max(y + h for x, y, w, h in bars)
    grey = (rgb.max(axis=2) == rgb.min(axis=2)) & (rgb[:, :, 0] >= 180) & (rgb[:, :, 0] <= 235)
    rows = [y for y in range(rgb.shape[0]) if grey[y].mean() > 0.3]
    if len(rows) < 3:
        raise ValueError("no gridlines")
    spacing = float(np.median(np.diff(rows)))
    # tick labels: the column left of the first bar, enlarged for the small digits
    column = rgb[: baseline + 16, : max(8, bars[0][0] - 4)]
    steps = []
    for line in ocr.lines(ocr.pad(enlarged(column), 16, 255)):
        _, y0, _, y1 = line.box()
        if _NUMBER.match(line.text.strip()):
            k = round((baseline - ((y0 + y1) / 2 - 16) / 2) / spacing)
            if k > 0:
                steps.append(int(line.text.strip()) / k)
    if not steps:
        raise ValueError("no tick labels read")
    step = float(np.median(steps))
    # category labels: the strip under each bar (between the midpoints to its neighbours), the
    # strips stacked with white gaps so that one OCR call reads them all as separate lines
    centres = [x + w / 2 for x, y, w, h in bars]
    edges = [0] + [int((a + b) / 2) for a, b in pairwise(centres)] + [rgb.shape[1]]
    strips = [enlarged(rgb[baseline + 2 : baseline + 36, a:b]) for a, b in pairwise(edges)]
    width = max(s.shape[1] for s in strips)
    stack = np.full((len(strips) * (strips[0].shape[0] + GAP) + GAP, width, 3), 255, np.uint8)
    for i, strip in enumerate(strips):
        top = GAP + i * (strips[0].shape[0] + GAP)
        stack[top : top + strip.shape[0], : strip.shape[1]] = strip
    texts = [""] * len(bars)
    for line in sorted(ocr.lines(stack), key=lambda l: l.box()[0]):
        i = int(((line.box()[1] + line.box()[3]) / 2 - GAP / 2) // (strips[0].shape[0] + GAP))
        if 0 <= i < len(texts):
            texts[i] += line.text
    values = [(baseline - y) / spacing * step for x, y, w, h in bars]
    how = (
        f"{len(bars)} bars, baseline row {baseline}, gridlines every {spacing:g} px, "
        f"{step:g} per gridline from the tick labels"
    )
    return list(zip(texts, values)), how


def distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def bar_of(label: str, measured: list[tuple[str, float]]) -> int:
    """Index of the bar whose read label is `label` (one slip allowed, the nearest unique); KeyError if none."""
    d = [distance(text_key(label), text_key(read)) for read, _ in measured]
    best = min(d)
    if best > 1 or d.count(best) > 1:
        raise KeyError(label)
    return d.index(best)


def check(task: Task) -> tuple[bool, str]:
    try:
        measured, how = measure(decode_rgb(task.images[0]))
    except ValueError as exc:
        return False, f"chart not measurable: {exc}"
    off = max(abs(v - round(v)) for _, v in measured)
    values = [round(v) for _, v in measured]
    ask = task.meta["ask"]
    shown = ", ".join(f"{label} {v:g}" for label, v in measured)
    try:
        if ask["form"] in ("max", "min"):
            extreme = (max if ask["form"] == "max" else min)(values)
            # the option whose bar is the extreme one (every option's bar found by its label)
            bars = {choice: bar_of(choice, measured) for choice in task.choices}
            winners = [c for c, i in bars.items() if values[i] == extreme]
            expected = winners[0] if len(winners) == 1 and values.count(extreme) == 1 else None
        elif ask["form"] == "diff":
            expected = str(values[bar_of(ask["a"], measured)] - values[bar_of(ask["b"], measured)])
        elif ask["form"] == "sum":
            expected = str(values[bar_of(ask["a"], measured)] + values[bar_of(ask["b"], measured)])
        else:
            expected = str(sum(v > ask["line"] for v in values))
    except KeyError as exc:
        return False, f"{how}; measured {shown}; label {exc} not read under any bar"
    ok = expected == task.answer and off < 0.25
    return ok, f"{how}; measured {shown} (largest distance from a whole number {off:.2f}); expected {expected!r}"
