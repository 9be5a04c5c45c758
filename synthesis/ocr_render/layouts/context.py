"""What every layout gets: the sample's RNG, the configuration, the font pool, backgrounds."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import ImageFont

from synthesis.ocr_render import corpus, fonts
from synthesis.ocr_render.config import RenderConfig


@dataclass
class Context:
    rng: random.Random
    cfg: RenderConfig
    pool: fonts.FontPool
    lang: str
    backgrounds: list[bytes] = field(default_factory=list)
    chars: bool = False  # per-character boxes
    used_fonts: list[str] = field(default_factory=list)
    text_kinds: list[str] = field(default_factory=list)

    def text(self, max_chars: int | None = None, kind: str | None = None) -> str:
        limit = max_chars or self.cfg.layout.line_max_chars.get(self.lang, 40)
        value, kind = corpus.text(self.rng, self.cfg.corpus, self.lang, limit, kind)
        self.text_kinds.append(kind)
        return value

    def sentence(self, max_chars: int = 10_000) -> str:
        return self.text(max_chars, "sentence")

    def font(self, text: str, size: int) -> ImageFont.FreeTypeFont:
        """A font covering all of `text` (NoFontError when none does), at `size` pixels."""
        face = self.pool.pick(self.rng, text)
        if face.name not in self.used_fonts:
            self.used_fonts.append(face.name)
        return fonts.load(face, size)

    def size(self, bounds: list[int]) -> int:
        return self.rng.randint(bounds[0], bounds[1])
