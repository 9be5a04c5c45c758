"""Shared helpers of the OCR synthesis tests: fonts found the way the renderer finds them, text
accuracy and box overlap measures, small renders."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import cv2
import numpy as np
import pytest

from synthesis.ocr_render import fonts, sample
from synthesis.ocr_render.config import RenderConfig

FONT_HINT = "install fonts: apt-get install fonts-noto-cjk fonts-wqy-microhei fonts-dejavu-core"


@lru_cache(maxsize=1)
def system_faces() -> tuple[fonts.Face, ...]:
    return tuple(fonts.discover([], use_system=True))


def cjk_faces() -> list[fonts.Face]:
    found = [f for f in system_faces() if fonts.covers(f, "中文识别测试ABC123")]
    if not found:
        pytest.skip(f"no font covering Chinese was found; {FONT_HINT}")
    return found


def latin_only_face() -> fonts.Face:
    """A font known to lack CJK: DejaVu Sans where installed, else any face without '中'."""
    faces = [f for f in system_faces() if fonts.covers(f, "Hello 123") and not fonts.covers(f, "中")]
    if not faces:
        pytest.skip(f"no Latin-only font was found; {FONT_HINT}")
    dejavu = [f for f in faces if f.name == "DejaVuSans.ttf"]
    return (dejavu or faces)[0]


def pool() -> fonts.FontPool:
    return fonts.FontPool(system_faces())


def clean_config(**changes) -> RenderConfig:
    cfg = RenderConfig()
    cfg = dataclasses.replace(cfg, effects=dataclasses.replace(cfg.effects, enabled=False))
    return dataclasses.replace(cfg, **changes)


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(reference: str, hypothesis: str) -> float:
    """1 - edit distance / reference length, whitespace ignored (engines drop or add spaces)."""
    ref, hyp = "".join(reference.split()), "".join(hypothesis.split())
    return max(0.0, 1.0 - edit_distance(ref, hyp) / max(1, len(ref)))


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def line_boxes(s: sample.Sample) -> list[tuple[float, float, float, float]]:
    return [tuple(float(v) for v in (*ln.quad.min(axis=0), *ln.quad.max(axis=0))) for ln in s.lines]


def roundtrip(engine, lang: str, n: int, seed: int = 0):
    """(mean char accuracy, [IoU of each line's box with the engine's best box]) on clean lines."""
    cfg = clean_config(seed=seed)
    p = pool()
    accs, ious, pairs = [], [], []
    for i in range(n):
        s = sample.render(i, cfg, p, layout="line", lang=lang)
        read = engine.read([decode(s.image)])[0]
        text = "".join(line.text for line in sorted(read, key=lambda l: l.box()[0]))
        accs.append(char_accuracy(s.lines[0].text, text))
        gt = line_boxes(s)[0]
        ious.append(max((iou(gt, line.box()) for line in read), default=0.0))
        pairs.append((s.lines[0].text, text))
    return float(np.mean(accs)), ious, pairs
