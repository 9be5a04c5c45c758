"""Tables: a header row and body rows of short words, numbers, dates and codes in a ruled grid.
The ground truth lists the cells row by row and keeps the grid for the Markdown answer."""

from __future__ import annotations

from PIL import ImageDraw

from synthesis.ocr_render.canvas import Rendering, draw_text, ink, line_height, paper
from synthesis.ocr_render.layouts.context import Context


def word(ctx: Context) -> str:
    sentence = ctx.sentence()
    if ctx.lang == "zh":
        start = ctx.rng.randrange(max(1, len(sentence) - 4))
        return sentence[start : start + ctx.rng.randint(2, 4)].strip("。，、；：？！") or sentence[:2]
    words = [w.strip(".,;:?!") for w in sentence.split() if len(w.strip(".,;:?!")) > 2]
    return ctx.rng.choice(words or [sentence.split()[0]]).capitalize()


def cell(ctx: Context) -> str:
    kind = ctx.rng.choice(("number", "number", "date", "code", "word"))
    return word(ctx) if kind == "word" else ctx.text(12, kind)


def render(ctx: Context) -> Rendering:
    rng, lay = ctx.rng, ctx.cfg.layout
    n_rows, n_cols = rng.randint(*lay.table_rows), rng.randint(*lay.table_cols)
    grid = [[word(ctx) for _ in range(n_cols)]]
    kinds = [rng.choice(("number", "date", "code", "word")) for _ in range(n_cols)]
    for _ in range(n_rows - 1):
        grid.append([word(ctx) if k == "word" else ctx.text(12, k) for k in kinds])
    size = ctx.size(lay.body_font_size)
    font = ctx.font("".join("".join(r) for r in grid), size)
    pad = max(6, size // 2)
    col_w = [int(max(font.getlength(r[c]) for r in grid)) + 2 * pad for c in range(n_cols)]
    row_h = line_height(font) + 2 * pad // 2 + 4
    margin = rng.randint(10, 30)
    image = paper(rng, sum(col_w) + 2 * margin + 1, row_h * n_rows + 2 * margin + 1)
    draw, colour = ImageDraw.Draw(image), ink(rng)
    rule = tuple(min(255, v + 60) for v in colour)
    xs = [margin + sum(col_w[:c]) for c in range(n_cols + 1)]
    ys = [margin + r * row_h for r in range(n_rows + 1)]
    if rng.random() < 0.5:
        draw.rectangle((xs[0], ys[0], xs[-1], ys[1]), fill=tuple(max(0, v - 25) for v in image.getpixel((1, 1))))
    for x in xs:
        draw.line((x, ys[0], x, ys[-1]), fill=rule, width=1)
    for y in ys:
        draw.line((xs[0], y, xs[-1], y), fill=rule, width=1)
    lines = []
    for r, row in enumerate(grid):
        for c, text in enumerate(row):
            y = ys[r] + (row_h - line_height(font)) // 2
            lines.append(draw_text(draw, (xs[c] + pad, y), text, font, colour, ctx.chars, role="cell"))
    return Rendering(image, lines, "table", ctx.lang, list(ctx.used_fonts), table=grid)
