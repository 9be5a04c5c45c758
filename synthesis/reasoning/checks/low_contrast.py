"""Low-contrast text, checked from the pixels alone: the background is estimated by a wide median
filter and subtracted; the strokes are what stands out of it, and their mean difference must be
small (the task is really faint). The difference image, made dark-on-white, is read by OCR (as it
is and enlarged twice) and a reading must equal the answer."""

from __future__ import annotations

import cv2
import numpy as np

from synthesis.reasoning.checks import ocr
from synthesis.reasoning.normalise import text_key
from synthesis.reasoning.task import Task, decode_rgb

FAINT = 45  # grey levels: what counts as low contrast


def check(task: Task) -> tuple[bool, str]:
    grey = cv2.cvtColor(decode_rgb(task.images[0]), cv2.COLOR_RGB2GRAY)
    smooth = cv2.GaussianBlur(grey, (3, 3), 0).astype(np.float64)
    background = cv2.medianBlur(grey, 41).astype(np.float64)
    diff = np.abs(smooth - background)
    strong = np.percentile(diff, 99.5)
    strokes = diff > strong / 2
    if strokes.sum() < 20 or strong < 4:
        return False, "nothing stands out of the background"
    contrast = float(diff[strokes].mean())
    clean = np.clip(255 - diff / strong * 255, 0, 255).astype(np.uint8)
    readings = []
    for scale in (1, 2):
        view = clean if scale == 1 else cv2.resize(clean, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
        text, score = ocr.read(cv2.cvtColor(ocr.pad(view, 16, 255), cv2.COLOR_GRAY2RGB))
        readings.append((scale, text, score))
        if text_key(text) == text_key(task.answer):
            break
    scale, text, score = readings[-1]
    ok = contrast < FAINT and text_key(text) == text_key(task.answer)
    tried = "; ".join(f"x{s}: {t!r} ({c:.2f})" for s, t, c in readings)
    return ok, (
        f"strokes stand {contrast:.1f} grey levels out of a median-filtered background (faint below "
        f"{FAINT}); RapidOCR of the background-subtracted image read {tried}; answer {task.answer!r}"
    )
