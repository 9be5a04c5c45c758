"""Drawing helpers the text tasks share: a line of text tightly on its own card."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont


def text_size(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the ink of `text` drawn at (0, 0)."""
    return tuple(int(v) for v in font.getbbox(text))


def card(text: str, font: ImageFont.FreeTypeFont, ink, paper, pad_x: int, pad_y: int, mode: str = "RGB") -> Image.Image:
    """`text` on a rectangle of `paper` with the given padding around its ink."""
    left, top, right, bottom = text_size(font, text)
    image = Image.new(mode, (right - left + 2 * pad_x, bottom - top + 2 * pad_y), paper)
    ImageDraw.Draw(image).text((pad_x - left, pad_y - top), text, font=font, fill=ink)
    return image


def round_up(value: int, step: int = 28) -> int:
    return -(-value // step) * step
