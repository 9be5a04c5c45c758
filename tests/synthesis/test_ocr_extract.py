"""OCR extraction on Spark with the real RapidOCR engine: text-dense images become OCR rows that
say what the image says; images without usable text go to _rejects/ with a reason."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ocr_synth_helpers import char_accuracy, clean_config, pool
from PIL import Image

from curation import schema
from curation.writer import read_manifest
from synthesis.ocr_extract.engine import OcrLine
from synthesis.ocr_extract.reading import language, reading_order
from synthesis.ocr_extract.step import ExtractConfig, extract_ocr
from synthesis.ocr_render import sample

pytest.importorskip("rapidocr_onnxruntime", reason="RapidOCR is not installed: pip install rapidocr-onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))
import extract_ocr as extract_job  # noqa: E402


def png(color, size=(160, 90)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Input shards: two rendered texts, a blank image, corrupt bytes, a row with no image."""
    cfg = clean_config(seed=13)
    texts, rows = {}, []
    for index, (layout, lang) in enumerate([("line", "en"), ("paragraph", "zh")]):
        s = sample.render(index, cfg, pool(), layout=layout, lang=lang)
        row = schema.caption_row("scans", s.image, f"scan {index}")
        texts[row["id"]] = "\n".join(line.text for line in s.lines)
        rows.append(row)
    blank = schema.caption_row("scans", png((255, 255, 255)), "blank page")
    corrupt = schema.make_row("scans", "caption", [schema.message("document", schema.image_part(0), "broken")],
                              [schema.image_entry(b"not an image", 10, 10)])
    textless = schema.make_row("scans", "text", [schema.message("document", "no picture here")])
    rows += [blank, corrupt, textless]
    folder = tmp_path_factory.mktemp("scans")
    pq.write_table(schema.rows_to_table(rows), folder / "part-00000.parquet")
    reasons = {blank["id"]: "no_text", corrupt["id"]: "undecodable_image", textless["id"]: "no_image"}
    return folder, texts, reasons


def test_extract_job_reads_text_and_rejects_with_reasons(spark, shards, tmp_path):
    folder, texts, reasons = shards
    out = tmp_path / "ocr"
    manifest = extract_job.main([f"input={folder}", f"output={out}", "card=false", "engine.threads=1"])
    kept = [r for s in manifest["shards"] for r in pq.read_table(out / s["path"]).to_pylist()]
    assert len(kept) == len(texts)
    for row in kept:
        assert schema.validate_row(row) == [] and row["kind"] == "ocr"
        extra = json.loads(row["extra"])
        answer = row["messages"][1]["content"][0]["text"]
        assert char_accuracy(texts[extra["origin"]], answer) >= 0.9, (texts[extra["origin"]], answer)
        assert all(0 <= v < 1000 for line in extra["lines"] for v in line["box"])
        assert all(line["score"] >= 0.8 for line in extra["lines"])
        assert row["lang"] == language(texts[extra["origin"]])
    rejects = pq.read_table(out / "_rejects").to_pylist()
    assert {r["id"]: r["reason"] for r in rejects} == reasons
    funnel = json.loads((out / "_funnel.json").read_text())["steps"][0]
    assert funnel["in"] == 5 and funnel["out"] == 2 and sum(funnel["rejected"].values()) == 3
    assert read_manifest(out)["rows"] == 2


def test_confidence_threshold_refuses_weak_text(spark, shards):
    folder, texts, _ = shards
    df = spark.read.parquet(str(folder))
    cfg = dataclasses.replace(ExtractConfig(), min_score=1.01)
    rows = extract_ocr(df, cfg).collect()
    assert len(rows) == 5
    by_reason = {}
    for r in rows:
        by_reason.setdefault(r["_reject"]["reason"], []).append(r["id"])
    assert sorted(by_reason["too_little_text"]) == sorted(texts)


def test_reading_order_is_rows_then_left_to_right():
    def line(text, x, y):
        return OcrLine(text, 0.9, ((x, y), (x + 50, y), (x + 50, y + 20), (x, y + 20)))

    lines = [line("d", 10, 100), line("b", 200, 12), line("a", 10, 10), line("c", 100, 55)]
    assert [l.text for l in reading_order(lines)] == ["a", "b", "c", "d"]
    assert language("清晨的河面") == "zh" and language("quiet river 1") == "en"


def test_unavailable_or_unknown_engine_is_a_clear_error():
    import importlib.util

    from synthesis.ocr_extract.engine import EngineConfig, EngineUnavailable, get_engine

    with pytest.raises(ValueError, match="rapidocr or paddleocr"):
        get_engine(EngineConfig(name="tesseract"))
    if importlib.util.find_spec("paddleocr") is None:
        with pytest.raises(EngineUnavailable, match="pip install"):
            get_engine(EngineConfig(name="paddleocr"))
