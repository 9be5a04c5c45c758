"""Reading order and language of recognised lines."""

from __future__ import annotations

import re

from synthesis.ocr_extract.engine import OcrLine

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def reading_order(lines: list[OcrLine]) -> list[OcrLine]:
    """Top to bottom; lines whose vertical spans overlap by half their height form one row, read
    left to right."""
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda l: (l.box()[1] + l.box()[3]) / 2):
        x0, y0, x1, y1 = line.box()
        if rows:
            last = rows[-1]
            ry0 = min(l.box()[1] for l in last)
            ry1 = max(l.box()[3] for l in last)
            overlap = min(y1, ry1) - max(y0, ry0)
            if overlap > 0.5 * min(y1 - y0, ry1 - ry0):
                last.append(line)
                continue
        rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda l: l.box()[0])]


def language(text: str) -> str:
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en"
    return "zh" if len(_CJK.findall(text)) >= 0.3 * len(letters) else "en"
