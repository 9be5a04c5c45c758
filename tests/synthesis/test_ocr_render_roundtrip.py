"""Round trip through the real RapidOCR engine: clean rendered lines read back with character
accuracy >= 0.90, and the ground-truth boxes overlap the engine's boxes (IoU >= 0.5).
Proof that the images are legible and the ground truth is right."""

from __future__ import annotations

import pytest
from ocr_synth_helpers import char_accuracy, clean_config, decode, pool, roundtrip

from synthesis.ocr_extract.engine import EngineConfig, get_engine
from synthesis.ocr_extract.reading import reading_order
from synthesis.ocr_render import sample

pytest.importorskip("rapidocr_onnxruntime", reason="RapidOCR is not installed: pip install rapidocr-onnxruntime")


@pytest.fixture(scope="module")
def engine():
    return get_engine(EngineConfig(name="rapidocr", threads=2))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_clean_lines_read_back(engine, lang):
    accuracy, ious, pairs = roundtrip(engine, lang, n=8)
    assert accuracy >= 0.90, pairs
    assert min(ious) >= 0.5, list(zip(ious, pairs))


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_clean_paragraph_reads_back_in_order(engine, lang):
    s = sample.render(1, clean_config(seed=9), pool(), layout="paragraph", lang=lang)
    read = reading_order(engine.read([decode(s.image)])[0])
    truth = "\n".join(line.text for line in s.lines)
    assert char_accuracy(truth, "\n".join(line.text for line in read)) >= 0.90


def test_wrong_ground_truth_would_fail(engine):
    """The measure can fail: another sample's text scores far below the threshold."""
    cfg = clean_config(seed=0)
    a = sample.render(0, cfg, pool(), layout="line", lang="en")
    b = sample.render(1, cfg, pool(), layout="line", lang="en")
    read = "".join(line.text for line in engine.read([decode(a.image)])[0])
    assert char_accuracy(a.lines[0].text, read) >= 0.9 > char_accuracy(b.lines[0].text, read)
