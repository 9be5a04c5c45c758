"""Ground truth: boxes as integers in [0, 1000), and contract rows for a rendered sample.

Per image: one full-page OCR row (a table's answer is its Markdown), and by chance a "read the
text in this box" row (kind ocr) and a "where is this text" row (kind grounding, the box is the
answer). Questions are phrased in English or Chinese.
"""

from __future__ import annotations

import random

import numpy as np

from curation import schema
from synthesis.ocr_render.config import RenderConfig
from synthesis.ocr_render.phrasings import question
from synthesis.ocr_render.sample import Sample

TASK_TYPES = {
    "full_page": "perception~ocr~full_text",
    "table": "perception~ocr~table_to_markdown",
    "read_box": "perception~ocr~region_text",
    "where": "perception~grounding~text_location",
}


def box1000(quad: np.ndarray, width: int, height: int) -> list[int]:
    """Axis-aligned box of a pixel quad, as integers in [0, 1000): [x0, y0, x1, y1]."""
    x0, y0 = quad.min(axis=0)
    x1, y1 = quad.max(axis=0)

    def scale(v: float, size: int) -> int:
        return int(min(999, max(0, np.floor(v / size * 1000))))

    return [scale(x0, width), scale(y0, height), scale(x1, width), scale(y1, height)]


def box_text(box: list[int]) -> str:
    return "[" + ", ".join(str(v) for v in box) + "]"


def markdown(grid: list[list[str]]) -> str:
    def row(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([row(grid[0]), row(["---"] * len(grid[0]))] + [row(r) for r in grid[1:]])


def full_text(sample: Sample) -> str:
    if sample.layout == "table" and sample.table:
        return "\n".join(" ".join(r) for r in sample.table)
    return "\n".join(line.text for line in sample.lines)


def line_records(sample: Sample, chars: bool) -> list[dict]:
    out = []
    for line in sample.lines:
        rec = {"text": line.text, "box": box1000(line.quad, sample.width, sample.height), "role": line.role}
        if chars and line.chars is not None:
            rec["chars"] = [[ch, box1000(q, sample.width, sample.height)] for ch, q in line.chars]
        out.append(rec)
    return out


def rows(sample: Sample, cfg: RenderConfig) -> list[dict]:
    rng = random.Random(f"keyeforge.ocr_truth:{cfg.seed}:{sample.index}")
    image = schema.image_entry(sample.image, sample.width, sample.height)
    records = line_records(sample, cfg.truth.char_boxes)
    base_extra = {
        "generator": "ocr_render",
        "origin": f"ocr_render:{cfg.seed}:{sample.index}",
        "seed": cfg.seed,
        "index": sample.index,
        "layout": sample.layout,
        "text_kinds": sample.text_kinds,
        "fonts": sample.fonts,
        "effects": sample.effects,
        "lines": records,
    }

    def qlang() -> str:
        other = "en" if sample.lang == "zh" else "zh"
        return sample.lang if rng.random() < cfg.truth.p_question_in_text_lang else other

    def row(kind: str, task: str, q: str, answer: str, **extra) -> dict:
        return schema.make_row(
            cfg.source,
            kind,
            [schema.message("user", schema.image_part(0), q), schema.message("assistant", answer)],
            [image],
            task_types=[TASK_TYPES[task]],
            lang=sample.lang,
            extra={**base_extra, "task": task, **extra},
        )

    out = []
    if sample.layout == "table" and sample.table:
        out.append(row("ocr", "table", question(rng, "table", qlang()), markdown(sample.table)))
    else:
        out.append(row("ocr", "full_page", question(rng, "full_page", qlang()), full_text(sample)))
    if len(records) > 1 and rng.random() < cfg.truth.p_read_box:
        rec = records[rng.randrange(len(records))]
        q = question(rng, "read_box", qlang(), box=box_text(rec["box"]))
        out.append(row("ocr", "read_box", q, rec["text"], box=rec["box"]))
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec["text"]] = counts.get(rec["text"], 0) + 1
    unique = [rec for rec in records if counts[rec["text"]] == 1 and len(rec["text"].strip()) >= 2]
    if unique and rng.random() < cfg.truth.p_where:
        rec = unique[rng.randrange(len(unique))]
        q = question(rng, "where", qlang(), text=rec["text"])
        out.append(row("grounding", "where", q, box_text(rec["box"]), box=rec["box"]))
    return out
