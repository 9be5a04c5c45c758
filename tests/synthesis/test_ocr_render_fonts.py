"""Fonts: discovery, glyph coverage, and no tofu — a font lacking a text's glyphs is never used."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from ocr_synth_helpers import cjk_faces, clean_config, latin_only_face, pool, system_faces
from PIL import Image, ImageDraw

from synthesis.ocr_render import fonts, sample
from synthesis.ocr_render.config import FontConfig

TOFU_PROBE = "\U0010fffd"  # a private-use code point no text font maps: drawn as .notdef


def glyph(face: fonts.Face, ch: str) -> np.ndarray:
    font = fonts.load(face, 32)
    img = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(img).text((8, 8), ch, font=font, fill=255)
    return np.asarray(img)


def is_tofu(face: fonts.Face, ch: str) -> bool:
    """The character renders exactly like the font's missing-glyph box."""
    return np.array_equal(glyph(face, ch), glyph(face, TOFU_PROBE))


def test_discovery_finds_cjk_and_latin_only_fonts_sorted():
    faces = system_faces()
    assert list(faces) == sorted(faces)
    assert cjk_faces() and latin_only_face()
    assert all(os.path.exists(f.path) for f in faces)


def test_latin_font_draws_tofu_for_chinese_and_coverage_says_so():
    latin, cjk = latin_only_face(), cjk_faces()[0]
    # The oracle works: the Latin font really draws the missing-glyph box for '中' ...
    assert is_tofu(latin, "中") and not is_tofu(latin, "A")
    # ... and the coverage check predicts it, for the Latin font and a CJK font alike.
    assert not fonts.covers(latin, "中文") and fonts.missing(latin, "A中文") == "中文"
    assert fonts.covers(cjk, "中文 ABC") and not is_tofu(cjk, "中")
    assert is_tofu(cjk, "\U0010fffc") and glyph(cjk, TOFU_PROBE).any()  # the probe is a visible box


def test_pool_never_picks_a_font_lacking_glyphs():
    import random

    latin, cjk = latin_only_face(), cjk_faces()[0]
    p = fonts.FontPool([latin, cjk])
    rng = random.Random(0)
    assert {p.pick(rng, "清晨的河面") for _ in range(50)} == {cjk}
    assert {p.pick(rng, "Quiet river") for _ in range(50)} == {latin, cjk}
    with pytest.raises(fonts.NoFontError):
        fonts.FontPool([latin]).pick(rng, "清晨")


@pytest.mark.parametrize("layout", ["line", "paragraph", "page", "scene", "table"])
def test_rendered_chinese_has_no_tofu(layout):
    faces = {f.name: f for f in system_faces()}
    cfg = clean_config(seed=3)
    for index in range(3):
        s = sample.render(index, cfg, pool(), layout=layout, lang="zh")
        text = "".join(line.text for line in s.lines)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in text) or layout == "table"
        used = [faces[name] for name in s.fonts]
        for line in s.lines:
            assert any(fonts.covers(f, line.text) for f in used), f"no used font covers {line.text!r}"
        for ch in set(text) - {" "}:
            # Every character is covered by some used font, and drawn as a real glyph by each
            # used font that claims to cover it.
            covering = [f for f in used if fonts.covers(f, ch)]
            assert covering, f"{ch!r} in {layout} sample {index} is covered by none of {s.fonts}"
            assert not any(is_tofu(f, ch) for f in covering)


def test_configured_folder_without_cjk_refuses_chinese_but_renders_english(tmp_path):
    latin = latin_only_face()
    os.symlink(latin.path, tmp_path / os.path.basename(latin.path))
    faces = fonts.discover([str(tmp_path)], use_system=False)
    assert [f.name for f in faces] == [latin.name]
    cfg = dataclasses.replace(clean_config(), fonts=FontConfig(folders=[str(tmp_path)], use_system=False))
    p = fonts.FontPool(faces)
    with pytest.raises(sample.RenderRefused) as refused:
        sample.render(0, cfg, p, layout="line", lang="zh")
    assert refused.value.reason == "no_font_covers_text"
    s = sample.render(0, cfg, p, layout="paragraph", lang="en")
    assert s.fonts == [latin.name]


def test_missing_font_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fonts.discover([str(tmp_path / "nope")], use_system=False)
