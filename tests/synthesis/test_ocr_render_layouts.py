"""Layouts, effects and ground truth: boxes enclose the ink, rows follow the contract, the same
seed gives the same bytes."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
from ocr_synth_helpers import clean_config, decode, pool
from PIL import Image

from curation import schema
from synthesis.ocr_render import sample, truth
from synthesis.ocr_render.config import EffectsConfig, RenderConfig, TruthConfig
from synthesis.ocr_render.layouts import LAYOUTS


def ink_inside_fraction(s: sample.Sample, pad: int = 3) -> float:
    """Share of dark pixels that lie inside some line box (grown by `pad` pixels)."""
    grey = decode(s.image).mean(axis=2)
    dark = grey < grey.mean() - 60
    if s.layout == "table":  # ruled lines are ink too: drop rows and columns that are mostly dark
        dark[dark.mean(axis=1) > 0.5, :] = False
        dark[:, dark.mean(axis=0) > 0.4] = False
    inside = np.zeros_like(dark)
    for line in s.lines:
        x0, y0 = np.floor(line.quad.min(axis=0)).astype(int) - pad
        x1, y1 = np.ceil(line.quad.max(axis=0)).astype(int) + pad
        inside[max(0, y0) : y1, max(0, x0) : x1] = True
    return float((dark & inside).sum() / max(1, dark.sum()))


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("lang", ["en", "zh"])
def test_every_layout_gives_valid_rows_with_boxes_in_range(layout, lang):
    cfg = RenderConfig(seed=1)
    s = sample.render(5, cfg, pool(), layout=layout, lang=lang)
    with Image.open(io.BytesIO(s.image)) as img:
        assert img.format == "JPEG" and img.size == (s.width, s.height)
    assert s.lines and all(line.text.strip() for line in s.lines)
    rows = truth.rows(s, cfg)
    assert rows[0]["kind"] == "ocr"
    for row in rows:
        assert schema.validate_row(row) == []
        assert row["kind"] in ("ocr", "grounding") and row["lang"] == lang
        extra = json.loads(row["extra"])
        assert extra["layout"] == layout and len(extra["lines"]) == len(s.lines)
        for rec in extra["lines"]:
            x0, y0, x1, y1 = rec["box"]
            assert all(isinstance(v, int) and 0 <= v < 1000 for v in rec["box"])
            assert x0 < x1 and y0 < y1
        if row["kind"] == "grounding":
            answer = row["messages"][1]["content"][0]["text"]
            assert json.loads(answer) == extra["box"]
            assert any(rec["box"] == extra["box"] for rec in extra["lines"])


@pytest.mark.parametrize("layout", ["line", "paragraph", "page", "table"])
def test_boxes_enclose_the_ink_of_clean_renders(layout):
    for index in range(3):
        s = sample.render(index, clean_config(seed=2), pool(), layout=layout, lang=("en", "zh")[index % 2])
        assert ink_inside_fraction(s) > 0.97, (layout, index)


def test_boxes_follow_rotation_skew_and_perspective():
    geometric = EffectsConfig(p_rotate=1, max_rotate=8, p_skew=1, p_perspective=1, p_blur=0, p_noise=0,
                              p_contrast=0, p_lighting=0, jpeg_quality=[95, 95])
    cfg = dataclasses.replace(RenderConfig(seed=4), effects=geometric)
    for index in range(4):
        s = sample.render(index, cfg, pool(), layout="paragraph", lang="en")
        assert {"rotate", "skew", "perspective"} <= set(s.effects)
        assert ink_inside_fraction(s, pad=4) > 0.9
        # Without moving the boxes, much of the ink would fall outside them.
        flat = sample.render(index, dataclasses.replace(cfg, effects=EffectsConfig(enabled=False)), pool(),
                             layout="paragraph", lang="en")
        assert flat.image != s.image


def test_same_seed_same_bytes_other_seed_other_bytes():
    cfg = RenderConfig(seed=11)
    a = [sample.render(i, cfg, pool()) for i in range(6)]
    b = [sample.render(i, cfg, pool()) for i in range(6)]
    c = [sample.render(i, dataclasses.replace(cfg, seed=12), pool()) for i in range(6)]
    assert [s.image for s in a] == [s.image for s in b]
    assert [truth.rows(s, cfg) for s in a] == [truth.rows(s, cfg) for s in b]
    assert all(x.image != y.image for x, y in zip(a, c))


def test_table_markdown_has_the_grid():
    s = sample.render(0, clean_config(seed=5), pool(), layout="table", lang="en")
    md = truth.markdown(s.table).splitlines()
    assert len(md) == len(s.table) + 1 and set(md[1].replace("|", "").split()) == {"---"}
    assert [line.text for line in s.lines] == [c for row in s.table for c in row]
    for row, text in zip(s.table, md[:1] + md[2:]):
        assert [c.strip() for c in text.strip("|").split("|")] == row
    rows = truth.rows(s, clean_config(seed=5))
    assert rows[0]["messages"][1]["content"][0]["text"] == truth.markdown(s.table)


def test_questions_vary_in_both_languages():
    cfg = RenderConfig(seed=6)
    questions, qlangs = set(), set()
    for i in range(40):
        for row in truth.rows(sample.render(i, cfg, pool(), layout="line"), cfg):
            q = row["messages"][0]["content"][1]["text"]
            questions.add(q.split("[")[0].split('"')[0].split("“")[0])
            qlangs.add("zh" if any("\u4e00" <= ch <= "\u9fff" for ch in q) else "en")
    assert len(questions) >= 8 and qlangs == {"en", "zh"}


def test_character_boxes_lie_in_order_inside_their_line():
    cfg = dataclasses.replace(clean_config(seed=7), truth=TruthConfig(char_boxes=True))
    s = sample.render(0, cfg, pool(), layout="line", lang="zh")
    line = s.lines[0]
    assert [ch for ch, _ in line.chars] == [ch for ch in line.text if not ch.isspace()]
    x0, y0 = line.quad.min(axis=0)
    x1, y1 = line.quad.max(axis=0)
    lefts = [q[:, 0].min() for _, q in line.chars]
    assert lefts == sorted(lefts)
    for _, q in line.chars:
        assert q[:, 0].min() >= x0 - 2 and q[:, 0].max() <= x1 + 2 and q[:, 1].min() >= y0 - 1
    extra = json.loads(truth.rows(s, cfg)[0]["extra"])
    assert len(extra["lines"][0]["chars"]) == len(line.chars)


def test_scene_text_sits_on_the_given_background():
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(buf, "PNG")
    s = sample.render(0, clean_config(seed=8), pool(), backgrounds=[buf.getvalue()], layout="scene", lang="en")
    pixels = decode(s.image)[:, :, ::-1].reshape(-1, 3).astype(int)
    assert (s.width, s.height) == (300, 200)
    assert np.median(pixels, axis=0).tolist() == pytest.approx([200, 30, 30], abs=6)


def test_non_semantic_texts_are_produced():
    import random

    from synthesis.ocr_render import corpus

    cfg = corpus.CorpusConfig()
    rng = random.Random(0)
    kinds = {corpus.text(rng, cfg, "zh")[1] for _ in range(300)}
    assert kinds == set(corpus.KINDS)
    assert corpus.text(rng, cfg, "en", kind="date")[0][:2].isdigit()
    assert corpus.text(rng, cfg, "zh", kind="date")[0].endswith("日")
