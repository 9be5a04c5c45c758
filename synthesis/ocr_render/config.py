"""Configuration of the OCR renderer (one dataclass tree, loaded by curation.config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from synthesis.ocr_render.corpus import CorpusConfig


@dataclass
class FontConfig:
    folders: list[str] = field(default_factory=list)  # searched first, recursively
    use_system: bool = True  # then fc-list / the standard font folders


@dataclass
class EffectsConfig:
    enabled: bool = True
    p_rotate: float = 0.4
    max_rotate: float = 4.0  # degrees
    p_skew: float = 0.25
    max_skew: float = 0.15  # horizontal shear factor
    p_perspective: float = 0.25
    max_perspective: float = 0.05  # corner jitter, fraction of the image size
    p_blur: float = 0.3
    max_blur: float = 1.0  # gaussian sigma, pixels
    p_noise: float = 0.3
    max_noise: float = 10.0  # gaussian std, grey levels
    p_contrast: float = 0.3
    contrast: list[float] = field(default_factory=lambda: [0.6, 1.2])
    p_lighting: float = 0.3
    max_lighting: float = 50.0  # grey levels across a linear light gradient
    jpeg_quality: list[int] = field(default_factory=lambda: [45, 95])


@dataclass
class LayoutConfig:
    weights: dict[Literal["line", "paragraph", "page", "scene", "table"], float] = field(
        default_factory=lambda: {"line": 0.35, "paragraph": 0.2, "page": 0.15, "scene": 0.15, "table": 0.15}
    )
    line_font_size: list[int] = field(default_factory=lambda: [26, 40])
    body_font_size: list[int] = field(default_factory=lambda: [18, 26])
    page_width: list[int] = field(default_factory=lambda: [640, 900])  # pixels; height ~ width * 1.35
    line_max_chars: dict[Literal["en", "zh"], int] = field(default_factory=lambda: {"en": 48, "zh": 20})
    table_rows: list[int] = field(default_factory=lambda: [3, 7])
    table_cols: list[int] = field(default_factory=lambda: [2, 5])
    scene_max_side: int = 640


@dataclass
class TruthConfig:
    p_read_box: float = 0.5  # add a "read the text in this box" row
    p_where: float = 0.5  # add a "where is this text" grounding row
    char_boxes: bool = False  # per-character boxes in extra
    p_question_in_text_lang: float = 0.7


@dataclass
class RenderConfig:
    enabled: bool = True
    seed: int = 0
    source: str = "ocr_render"
    languages: dict[Literal["en", "zh"], float] = field(default_factory=lambda: {"en": 0.5, "zh": 0.5})
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    fonts: FontConfig = field(default_factory=FontConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    effects: EffectsConfig = field(default_factory=EffectsConfig)
    truth: TruthConfig = field(default_factory=TruthConfig)
    font_attempts: int = 3  # texts tried before a sample is rejected for want of a covering font
