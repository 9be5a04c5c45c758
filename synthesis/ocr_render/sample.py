"""Rendering one sample from (seed, index): choose language and layout, lay the text out, apply
effects, encode as JPEG.

Everything random derives from (seed, index) alone, never from the partition or worker that runs
it, so a job gives the same bytes for any partition count.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import cv2
import numpy as np

from synthesis.ocr_render import effects
from synthesis.ocr_render.canvas import Line
from synthesis.ocr_render.config import RenderConfig
from synthesis.ocr_render.fonts import FontPool, NoFontError
from synthesis.ocr_render.layouts import LAYOUTS, Context


@dataclass
class Sample:
    index: int
    image: bytes  # JPEG
    width: int
    height: int
    lines: list[Line]  # reading order, quads in pixels of the final image
    layout: str
    lang: str
    fonts: list[str]
    text_kinds: list[str]
    effects: dict = field(default_factory=dict)
    table: list[list[str]] | None = None


class RenderRefused(Exception):
    """A sample that cannot be rendered as configured (the reason names why)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def sample_rng(seed: int, index: int, attempt: int = 0) -> random.Random:
    return random.Random(f"keyeforge.ocr_render:{seed}:{index}:{attempt}")


def choose(rng: random.Random, weights: dict[str, float]) -> str:
    names = sorted(k for k, v in weights.items() if v > 0)
    if not names:
        raise ValueError(f"no positive weight among {weights}")
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def render(index: int, cfg: RenderConfig, pool: FontPool, backgrounds: list[bytes] = (), layout: str | None = None,
           lang: str | None = None) -> Sample:
    """Render sample `index`; RenderRefused when no font covers the texts tried."""
    unknown = set(cfg.layout.weights) - set(LAYOUTS)
    if unknown:
        raise ValueError(f"unknown layouts {sorted(unknown)}; known: {sorted(LAYOUTS)}")
    last: NoFontError | None = None
    for attempt in range(max(1, cfg.font_attempts)):
        rng = sample_rng(cfg.seed, index, attempt)
        chosen_lang = lang or choose(rng, cfg.languages)
        chosen_layout = layout or choose(rng, cfg.layout.weights)
        ctx = Context(rng, cfg, pool, chosen_lang, list(backgrounds), chars=cfg.truth.char_boxes)
        try:
            rendering = LAYOUTS[chosen_layout](ctx)
        except NoFontError as exc:
            last = exc
            continue
        nrng = np.random.default_rng([cfg.seed, index, attempt])
        pixels = np.asarray(rendering.image.convert("RGB"))
        pixels, lines, applied = effects.apply(pixels, rendering.lines, cfg.effects, rng, nrng)
        quality = effects.jpeg_quality(cfg.effects, rng)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for sample {index}")
        applied["jpeg_quality"] = quality
        return Sample(
            index=index,
            image=buf.tobytes(),
            width=pixels.shape[1],
            height=pixels.shape[0],
            lines=lines,
            layout=chosen_layout,
            lang=chosen_lang,
            fonts=rendering.fonts,
            text_kinds=sorted(set(ctx.text_kinds)),
            effects=applied,
            table=rendering.table,
        )
    raise RenderRefused("no_font_covers_text", str(last))
