"""Single line: one text on a light background with a margin."""

from __future__ import annotations

from PIL import ImageDraw

from synthesis.ocr_render.canvas import Rendering, draw_text, ink, line_height, paper
from synthesis.ocr_render.layouts.context import Context


def render(ctx: Context) -> Rendering:
    text = ctx.text()
    size = ctx.size(ctx.cfg.layout.line_font_size)
    font = ctx.font(text, size)
    width = int(font.getlength(text))
    margin_x = ctx.rng.randint(size // 3, size)
    margin_y = ctx.rng.randint(size // 4, size // 2 + 1)
    image = paper(ctx.rng, width + 2 * margin_x, line_height(font) + 2 * margin_y)
    line = draw_text(ImageDraw.Draw(image), (margin_x, margin_y), text, font, ink(ctx.rng), ctx.chars)
    return Rendering(image, [line], "line", ctx.lang, list(ctx.used_fonts))
