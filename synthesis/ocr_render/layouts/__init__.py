"""The layouts, by name. Each is ``render(ctx: Context) -> Rendering``."""

from synthesis.ocr_render.layouts import line, page, paragraph, scene, table
from synthesis.ocr_render.layouts.context import Context

LAYOUTS = {
    "line": line.render,
    "paragraph": paragraph.render,
    "page": page.render,
    "scene": scene.render,
    "table": table.render,
}

__all__ = ["LAYOUTS", "Context"]
