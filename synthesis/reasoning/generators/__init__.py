"""The task generators, one file each: ``generate(seed, lang) -> Task``."""

from __future__ import annotations

from synthesis.reasoning.generators import (
    arithmetic,
    bar_chart_compare,
    count_shapes,
    low_contrast_text,
    rotated_text,
    small_text_zoom,
)

GENERATORS = {
    module.KIND: module.generate
    for module in (count_shapes, bar_chart_compare, arithmetic, rotated_text, low_contrast_text, small_text_zoom)
}
