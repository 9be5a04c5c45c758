"""Scene text: short texts placed on a background image (from input shards when given, else a
synthetic one), each in a colour that stands out from what lies under it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from synthesis.ocr_render.canvas import Rendering, draw_text
from synthesis.ocr_render.layouts.context import Context

MAX_TRIES = 30


def background(ctx: Context) -> Image.Image:
    rng, side = ctx.rng, ctx.cfg.layout.scene_max_side
    if ctx.backgrounds:
        data = ctx.backgrounds[rng.randrange(len(ctx.backgrounds))]
        try:
            with Image.open(io.BytesIO(data)) as img:
                img = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError):
            img = None  # an unreadable background: a synthetic one instead
        if img is not None:
            scale = side / max(img.size)
            if scale < 1:
                img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.BILINEAR)
            if min(img.size) >= 96:
                return img
    return synthetic(ctx, rng.randint(side // 2, side), rng.randint(side // 2, side))


def synthetic(ctx: Context, width: int, height: int) -> Image.Image:
    """A gradient with a few blurred shapes, standing in for a photo."""
    rng = ctx.rng
    a = np.array([rng.randint(0, 255) for _ in range(3)], np.float32)
    b = np.array([rng.randint(0, 255) for _ in range(3)], np.float32)
    t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
    arr = np.broadcast_to(a + (b - a) * t, (height, width, 3)).astype(np.uint8)
    img = Image.fromarray(arr.copy())
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 6)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randint(20, width // 2), y0 + rng.randint(20, height // 2)
        fill = tuple(rng.randint(0, 255) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    return img.filter(ImageFilter.BoxBlur(rng.randint(2, 6)))


def render(ctx: Context) -> Rendering:
    rng = ctx.rng
    image = background(ctx)
    width, height = image.size
    draw = ImageDraw.Draw(image)
    taken: list[tuple[int, int, int, int]] = []
    lines = []
    for _ in range(rng.randint(1, 4)):
        text = ctx.text(20 if ctx.lang == "en" else 8)
        size = rng.randint(max(18, min(width, height) // 18), max(20, min(width, height) // 8))
        font = ctx.font(text, size)
        left, top, right, bottom = font.getbbox(text)
        w, h = right, bottom
        if w >= width - 8 or h >= height - 8:
            continue
        for _ in range(MAX_TRIES):
            x, y = rng.randint(4, width - w - 4), rng.randint(4, height - h - 4)
            box = (x + left - 4, y + top - 4, x + right + 4, y + bottom + 4)
            if not any(overlaps(box, other) for other in taken):
                break
        else:
            continue
        taken.append(box)
        region = np.asarray(image.crop(box).convert("L"), dtype=np.float32)
        fill, stroke = contrasting(rng, float(region.mean()))
        stroke_width = rng.choice((0, 0, 1, 2)) if size >= 24 else 0
        lines.append(draw_text(draw, (x, y), text, font, fill, ctx.chars, stroke_width=stroke_width, stroke_fill=stroke))
    if not lines:  # nothing fitted: one line in the middle at a size that fits
        text = ctx.text(12 if ctx.lang == "en" else 6)
        font = ctx.font(text, max(16, min(width // max(1, len(text)), height // 3)))
        fill, stroke = contrasting(rng, float(np.asarray(image.convert("L")).mean()))
        lines.append(draw_text(draw, (4, height // 3), text, font, fill, ctx.chars, stroke_width=1, stroke_fill=stroke))
    lines.sort(key=lambda line: (float(line.quad[:, 1].min()), float(line.quad[:, 0].min())))
    return Rendering(image, lines, "scene", ctx.lang, list(ctx.used_fonts))


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def contrasting(rng, luminance: float):
    """(fill, stroke): light text with a dark outline on dark regions, and the reverse."""
    if luminance < 128:
        fill = tuple(rng.randint(225, 255) for _ in range(3))
        return fill, (0, 0, 0)
    fill = tuple(rng.randint(0, 35) for _ in range(3))
    return fill, (255, 255, 255)
