"""The render job on Spark: same seed -> same bytes across runs and partition counts; samples no
font can draw go to _rejects/ with a reason, and the funnel adds up."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ocr_synth_helpers import latin_only_face

from curation import schema
from curation.writer import read_manifest, write_output
from synthesis.ocr_render.source import STEP, RenderSourceConfig, rendered_source

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "jobs"))
import render_ocr  # noqa: E402


def run(spark, out: Path, **changes) -> dict:
    cfg = RenderSourceConfig(**{"count": 6, "seed": 21, **changes})
    write_output(rendered_source(spark, cfg), str(out), steps=[STEP], config=dataclasses.asdict(cfg), card=False)
    return read_manifest(out)


def test_same_seed_same_bytes_across_runs_and_partitions(spark, tmp_path):
    one = run(spark, tmp_path / "p1", partitions=1)
    three = run(spark, tmp_path / "p3", partitions=3)
    other = run(spark, tmp_path / "seed", partitions=3, seed=22)
    digests = lambda m: [s["sha256"] for s in m["shards"]]  # noqa: E731
    assert one["rows"] >= 6 and digests(one) == digests(three)
    assert digests(other) != digests(one)
    table = pq.read_table(tmp_path / "p1" / one["shards"][0]["path"])
    assert table.schema.equals(schema.SCHEMA, check_metadata=False)
    assert schema.validate_table(table) == {}
    indices = {json.loads(e)["index"] for e in table.column("extra").to_pylist()}
    assert indices == set(range(6))


def test_samples_without_a_covering_font_are_rejected_with_a_reason(spark, tmp_path):
    latin = latin_only_face()
    fonts_dir = tmp_path / "fonts"
    fonts_dir.mkdir()
    os.symlink(latin.path, fonts_dir / os.path.basename(latin.path))
    out = tmp_path / "out"
    manifest = render_ocr.main([
        "count=10", f"output={out}", "seed=5", "partitions=2", "card=false",
        f"fonts.folders=[{fonts_dir}]", "fonts.use_system=false", "languages={en: 1, zh: 1}",
    ])
    funnel = json.loads((out / "_funnel.json").read_text())
    step = funnel["steps"][0]
    rejected = step["rejected"].get("no_font_covers_text", 0)
    assert rejected > 0 and step["in"] == step["out"] + rejected
    rejects = pq.read_table(out / "_rejects").to_pylist()
    assert len(rejects) == rejected == manifest["rejects"]["rows"]
    assert {r["step"] for r in rejects} == {STEP} and all("covers" in r["detail"] for r in rejects)
    kept = pq.read_table(out / manifest["shards"][0]["path"]).to_pylist()
    assert kept and {r["lang"] for r in kept} == {"en"}
    assert all(json.loads(r["extra"])["fonts"] == [latin.name] for r in kept)
    indices = {json.loads(r["extra"])["index"] for r in kept} | {int(r["origin"].rsplit(":", 1)[1]) for r in rejects}
    assert indices == set(range(10))


def test_unknown_key_names_valid_keys():
    with pytest.raises(SystemExit, match="render_ocr: unknown key 'layout.weight'.*layout.weights"):
        render_ocr.main(["count=1", "layout.weight={line: 1}"])


def test_scene_backgrounds_come_from_input_shards(spark, tmp_path):
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (240, 160), (20, 90, 200)).save(buf, "PNG")
    shards = tmp_path / "photos"
    shards.mkdir()
    pq.write_table(schema.rows_to_table([schema.caption_row("photos", buf.getvalue(), "blue")]),
                   shards / "part-00000.parquet")
    out = tmp_path / "scenes"
    manifest = render_ocr.main(["count=3", f"output={out}", "card=false", f"backgrounds={shards}",
                                "layout.weights={scene: 1}", "effects.enabled=false"])
    rows = pq.read_table(out / manifest["shards"][0]["path"]).to_pylist()
    assert rows and all(json.loads(r["extra"])["layout"] == "scene" for r in rows)
    for r in rows:
        pixels = np.asarray(Image.open(io.BytesIO(r["images"][0]["bytes"])).convert("RGB")).reshape(-1, 3)
        assert r["images"][0]["width"] == 240
        assert np.median(pixels, axis=0).tolist() == pytest.approx([20, 90, 200], abs=6)


def test_rendered_rows_join_a_shard_source(spark, tmp_path):
    """What build_pretrain does with a rendered source: append it to rows read from shards."""
    from synthesis.ocr_render.source import add_rendered

    photos = tmp_path / "photos"
    photos.mkdir()
    row = schema.caption_row("photos", b"\x89PNG not really", "a caption")
    pq.write_table(schema.rows_to_table([row]), photos / "part-00000.parquet")
    base = spark.read.parquet(str(photos))
    cfg = RenderSourceConfig(count=3, seed=2, layout=dataclasses.replace(RenderSourceConfig().layout, weights={"line": 1}))
    out = tmp_path / "mixed"
    write_output(add_rendered(spark, base, cfg), str(out), steps=["ingest", STEP], config={}, card=False)
    funnel = json.loads((out / "_funnel.json").read_text())
    assert funnel["input_rows"] == funnel["kept_rows"] >= 4
    kept = [
        r for s in read_manifest(out)["shards"] for r in pq.read_table(out / s["path"]).to_pylist()
    ]
    assert {r["source"] for r in kept} == {"photos", "ocr_render"}
