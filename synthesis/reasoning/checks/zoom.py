"""Small text, checked from the pixels alone: the note is the largest connected area of exactly the
colour the question names; its box is cropped, enlarged four times, read by OCR and compared with
the answer."""

from __future__ import annotations

import cv2
import numpy as np

from synthesis.reasoning import palette
from synthesis.reasoning.checks import ocr
from synthesis.reasoning.normalise import text_key
from synthesis.reasoning.task import Task, decode_rgb


def check(task: Task) -> tuple[bool, str]:
    rgb = decode_rgb(task.images[0])
    colour = task.meta["ask"]["note"]
    mask = np.all(rgb == np.array(palette.rgb(colour, palette.LIGHT), np.uint8), axis=2).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n < 2:
        return False, f"no {colour} area in the image"
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h, _ = stats[best]
    crop = rgb[y : y + h, x : x + w]
    big = cv2.resize(crop, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)
    text, score = ocr.read(ocr.pad(big, 24))
    ok = text_key(text) == text_key(task.answer)
    return ok, (
        f"largest {colour} area at ({x}, {y}) {w}x{h} px, enlarged 4x; RapidOCR read {text!r} "
        f"(confidence {score:.2f}); answer {task.answer!r}"
    )
