"""Multi-line paragraph: corpus sentences wrapped to a width, in one font."""

from __future__ import annotations

from PIL import ImageDraw

from synthesis.ocr_render.canvas import Rendering, draw_text, ink, line_height, paper, wrap
from synthesis.ocr_render.layouts.context import Context


def render(ctx: Context) -> Rendering:
    sep = "" if ctx.lang == "zh" else " "
    text = sep.join(ctx.sentence() for _ in range(ctx.rng.randint(2, 4)))
    size = ctx.size(ctx.cfg.layout.body_font_size)
    font = ctx.font(text, size)
    width = ctx.rng.randint(16, 30) * size
    lines = wrap(text, font, width, ctx.lang)
    step = line_height(font, ctx.rng.uniform(1.15, 1.6))
    margin = ctx.rng.randint(size // 2, 2 * size)
    image = paper(ctx.rng, int(width) + 2 * margin, step * len(lines) + 2 * margin)
    draw, colour = ImageDraw.Draw(image), ink(ctx.rng)
    out = [draw_text(draw, (margin, margin + i * step), t, font, colour, ctx.chars) for i, t in enumerate(lines)]
    return Rendering(image, out, "paragraph", ctx.lang, list(ctx.used_fonts))
