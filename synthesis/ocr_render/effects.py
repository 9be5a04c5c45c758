"""Image effects: geometry (rotation, skew, perspective) moves the text boxes with the pixels;
photometry (blur, noise, contrast, lighting) and JPEG quality leave them where they are.

All geometric effects compose into one homography applied once with OpenCV, on a canvas grown to
hold the whole warped image. Randomness comes from the sample's ``random.Random`` and
``numpy.random.Generator``, so the same seed gives the same pixels.
"""

from __future__ import annotations

import math
import random

import cv2
import numpy as np

from synthesis.ocr_render.canvas import Line
from synthesis.ocr_render.config import EffectsConfig

MAX_SIDE = 4096


def apply(
    image: np.ndarray, lines: list[Line], cfg: EffectsConfig, rng: random.Random, nrng: np.random.Generator
) -> tuple[np.ndarray, list[Line], dict]:
    """(image, lines, applied): the image with effects, lines with moved quads, what was done."""
    applied: dict = {}
    if not cfg.enabled:
        return image, lines, applied
    h, w = image.shape[:2]
    matrix = geometry(w, h, cfg, rng, applied)
    if matrix is not None:
        image, lines = warp(image, lines, matrix)
    image = photometry(image, cfg, rng, nrng, applied)
    return image, lines, applied


def geometry(w: int, h: int, cfg: EffectsConfig, rng: random.Random, applied: dict) -> np.ndarray | None:
    m = np.eye(3)
    cx, cy = w / 2, h / 2
    to_center = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]], float)
    back = np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]], float)
    if rng.random() < cfg.p_rotate:
        angle = rng.uniform(-cfg.max_rotate, cfg.max_rotate)
        a = math.radians(angle)
        rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
        m = back @ rot @ to_center @ m
        applied["rotate"] = round(angle, 3)
    if rng.random() < cfg.p_skew:
        k = rng.uniform(-cfg.max_skew, cfg.max_skew)
        shear = np.array([[1, k, 0], [0, 1, 0], [0, 0, 1]], float)
        m = back @ shear @ to_center @ m
        applied["skew"] = round(k, 4)
    if rng.random() < cfg.p_perspective:
        j = cfg.max_perspective
        src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
        dst = src + np.float32([[rng.uniform(-j, j) * w, rng.uniform(-j, j) * h] for _ in range(4)])
        m = cv2.getPerspectiveTransform(src, dst).astype(float) @ m
        applied["perspective"] = round(j, 4)
    return None if len(applied) == 0 else m


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    pts = np.concatenate([points.astype(np.float64), np.ones((len(points), 1))], axis=1) @ matrix.T
    return (pts[:, :2] / pts[:, 2:3]).astype(np.float32)


def warp(image: np.ndarray, lines: list[Line], matrix: np.ndarray) -> tuple[np.ndarray, list[Line]]:
    h, w = image.shape[:2]
    corners = transform(np.float32([[0, 0], [w, 0], [w, h], [0, h]]), matrix)
    x0, y0 = np.floor(corners.min(axis=0))
    x1, y1 = np.ceil(corners.max(axis=0))
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], float)
    full = shift @ matrix
    out_w, out_h = int(min(MAX_SIDE, x1 - x0)), int(min(MAX_SIDE, y1 - y0))
    border = tuple(int(v) for v in image[0, 0])
    warped = cv2.warpPerspective(
        image, full, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border
    )
    moved = []
    for line in lines:
        chars = [(ch, transform(q, full)) for ch, q in line.chars] if line.chars is not None else None
        moved.append(Line(line.text, transform(line.quad, full), chars, line.role))
    return warped, moved


def photometry(
    image: np.ndarray, cfg: EffectsConfig, rng: random.Random, nrng: np.random.Generator, applied: dict
) -> np.ndarray:
    if rng.random() < cfg.p_blur:
        sigma = rng.uniform(0.3, cfg.max_blur)
        image = cv2.GaussianBlur(image, (0, 0), sigma)
        applied["blur"] = round(sigma, 3)
    gain, offset = 1.0, 0.0
    if rng.random() < cfg.p_contrast:
        gain = rng.uniform(*cfg.contrast)
        offset = 128 * (1 - gain)
        applied["contrast"] = round(gain, 3)
    if gain != 1.0:
        image = cv2.convertScaleAbs(image, alpha=gain, beta=offset)
    if rng.random() < cfg.p_lighting:
        image = lighting(image, rng, cfg.max_lighting)
        applied["lighting"] = True
    if rng.random() < cfg.p_noise:
        std = rng.uniform(1.0, cfg.max_noise)
        h, w = image.shape[:2]
        noise = nrng.normal(0.0, std, size=(h, w, 1)).astype(np.float32)
        image = np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        applied["noise"] = round(std, 3)
    return image


def lighting(image: np.ndarray, rng: random.Random, strength: float) -> np.ndarray:
    """Add a linear brightness ramp in a random direction (uneven light)."""
    h, w = image.shape[:2]
    a = rng.uniform(0, 2 * math.pi)
    xs = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] * math.cos(a)
    ys = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None] * math.sin(a)
    ramp = (xs + ys) * (2 * rng.uniform(0.3, 1.0) * strength)
    return np.clip(image.astype(np.float32) + ramp[:, :, None], 0, 255).astype(np.uint8)


def jpeg_quality(cfg: EffectsConfig, rng: random.Random) -> int:
    lo, hi = cfg.jpeg_quality
    return rng.randint(lo, hi) if cfg.enabled else hi
