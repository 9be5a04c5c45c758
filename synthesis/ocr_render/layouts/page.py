"""Document page: a heading across the page, then one or two columns of sub-headings and
paragraphs in mixed sizes and fonts. Reading order: heading, then each column top to bottom."""

from __future__ import annotations

from PIL import ImageDraw

from synthesis.ocr_render.canvas import Rendering, draw_text, ink, line_height, paper, wrap
from synthesis.ocr_render.layouts.context import Context

MAX_BLOCKS = 40


def render(ctx: Context) -> Rendering:
    rng, lay = ctx.rng, ctx.cfg.layout
    width = rng.randint(*lay.page_width)
    height = int(width * rng.uniform(1.25, 1.45))
    margin = int(width * rng.uniform(0.05, 0.09))
    image = paper(rng, width, height)
    draw, colour = ImageDraw.Draw(image), ink(rng)
    body = ctx.size(lay.body_font_size)
    sep = "" if ctx.lang == "zh" else " "
    lines = []

    y = margin
    title = ctx.sentence(28 if ctx.lang == "en" else 14)
    font = ctx.font(title, int(body * rng.uniform(1.5, 2.1)))
    for t in wrap(title, font, width - 2 * margin, ctx.lang):
        lines.append(draw_text(draw, (margin, y), t, font, colour, ctx.chars, role="heading"))
        y += line_height(font, 1.2)
    y += body

    columns = rng.choice((1, 1, 2))
    gutter = int(body * 1.5)
    col_w = (width - 2 * margin - gutter * (columns - 1)) // columns
    for c in range(columns):
        x, yc = margin + c * (col_w + gutter), y
        for _ in range(MAX_BLOCKS):
            if rng.random() < 0.3:
                text = ctx.sentence(24 if ctx.lang == "en" else 12)
                font, role = ctx.font(text, int(body * rng.uniform(1.15, 1.4))), "heading"
                spacing = 1.3
            else:
                text = sep.join(ctx.sentence() for _ in range(rng.randint(1, 3)))
                font, role = ctx.font(text, max(12, body + rng.randint(-2, 2))), "text"
                spacing = rng.uniform(1.2, 1.5)
            step = line_height(font, spacing)
            wrapped = wrap(text, font, col_w, ctx.lang)
            if yc + step > height - margin:
                break
            for t in wrapped:
                if yc + step > height - margin:
                    break
                lines.append(draw_text(draw, (x, yc), t, font, colour, ctx.chars, role=role))
                yc += step
            yc += int(body * rng.uniform(0.4, 1.0))
    return Rendering(image, lines, "page", ctx.lang, list(ctx.used_fonts))
