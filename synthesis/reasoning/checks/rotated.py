"""Rotated text, checked from the pixels alone: the ink's minimum-area rectangle gives the line's
direction (its long side) up to a half turn; the image is turned both ways that make that side
horizontal, and the OCR reading with the higher confidence is compared with the answer."""

from __future__ import annotations

import cv2
import numpy as np

from synthesis.reasoning.checks import ocr
from synthesis.reasoning.normalise import text_key
from synthesis.reasoning.task import Task, decode_rgb


def turned(rgb: np.ndarray, centre: tuple[float, float], angle: float) -> np.ndarray:
    """`rgb` turned by `angle` degrees (counterclockwise) about `centre` on a canvas that holds it all."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(centre, angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos) + 2, int(h * cos + w * sin) + 2
    m[0, 2] += nw / 2 - centre[0]
    m[1, 2] += nh / 2 - centre[1]
    fill = tuple(int(v) for v in rgb[0, 0])
    return cv2.warpAffine(rgb, m, (nw, nh), flags=cv2.INTER_CUBIC, borderValue=fill)


def ink_crop(rgb: np.ndarray, margin: int = 14) -> np.ndarray | None:
    ys, xs = np.nonzero(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < 110)
    if len(xs) == 0:
        return None
    return ocr.pad(
        rgb[max(0, ys.min() - margin) : ys.max() + margin, max(0, xs.min() - margin) : xs.max() + margin], 16
    )


def check(task: Task) -> tuple[bool, str]:
    rgb = decode_rgb(task.images[0])
    ys, xs = np.nonzero(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) < 110)
    if len(xs) < 20:
        return False, "no dark ink found"
    (cx, cy), (w, h), rect_angle = cv2.minAreaRect(np.stack([xs, ys], axis=1).astype(np.float32))
    along = rect_angle if w >= h else rect_angle + 90  # turning by this lays the long side flat
    readings = []
    for angle in (along, along + 180):
        crop = ink_crop(turned(rgb, (cx, cy), angle))
        if crop is not None:
            text, score = ocr.read(crop)
            if text:
                readings.append((score, text, angle % 360))
    if not readings:
        return False, "OCR found no text either way along the line"
    score, text, angle = max(readings)
    ok = text_key(text) == text_key(task.answer)
    return ok, (
        f"ink rectangle turned by {angle:.1f}° (the better of the two ways along the line); RapidOCR read {text!r} "
        f"(confidence {score:.2f}); answer {task.answer!r}"
    )
