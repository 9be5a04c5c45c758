"""Benchmark decontamination: benchmarks read from Parquet, JSONL and image folders; exactly the
planted overlaps are rejected, with the benchmark and item named; the CLIP rule agrees with
cosines computed directly from the model."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from curation import schema
from curation.dedup.benchmarks import BenchmarkConfig, load_benchmark
from curation.dedup.decontam import (
    REASON,
    STEP,
    DecontamConfig,
    decontaminate,
    detail,
    parse_detail,
)
from tests.curation.dedup_fixtures import (
    encode,
    image_row,
    natural_image,
    text_rows,
    variants,
    write_rows,
)


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    # A benchmark in the keyeforge contract (Parquet).
    mm_rows = [
        schema.make_row("mmbench", "vqa", [schema.message("user", schema.image_part(0), f"What is shown in picture {i}?")],
                        [schema.image_entry(encode(natural_image(1000 + i)))])
        for i in range(4)
    ]
    pq.write_table(schema.rows_to_table(mm_rows), root / "mmbench.parquet")
    # A JSONL benchmark with image files next to it.
    (root / "chart").mkdir()
    lines = []
    for i in range(3):
        (root / "chart" / f"c{i}.png").write_bytes(encode(natural_image(1010 + i)))
        lines.append(json.dumps({"question_id": f"q{i}", "image": f"c{i}.png", "question": f"Which bar is highest in chart {i}?"}))
    (root / "chart" / "test.jsonl").write_text("\n".join(lines) + "\n")
    # A folder of images.
    (root / "folder" / "sub").mkdir(parents=True)
    for i in range(2):
        (root / "folder" / "sub" / f"img {i}.jpg").write_bytes(encode(natural_image(1020 + i), "JPEG", quality=95))
    return {
        "configs": [
            BenchmarkConfig(name="mmbench", path=str(root / "mmbench.parquet")),
            BenchmarkConfig(name="chartqa", path=str(root / "chart" / "test.jsonl")),
            BenchmarkConfig(name="pics", path=str(root / "folder")),
        ],
        "mm_ids": [r["id"] for r in mm_rows],
    }


def test_benchmarks_load_from_parquet_jsonl_and_folders(benchmarks):
    mm, chart, pics = (load_benchmark(c) for c in benchmarks["configs"])
    assert [it.item for it in mm] == sorted(benchmarks["mm_ids"]) and all(len(it.images) == 1 for it in mm)
    assert "What is shown in picture" in mm[0].text
    assert [(it.item, it.text) for it in chart] == [(f"q{i}", f"Which bar is highest in chart {i}?") for i in range(3)]
    assert chart[1].images[0] == encode(natural_image(1011))
    assert [it.item for it in pics] == ["sub/img 0.jpg", "sub/img 1.jpg"]


def test_detail_format_names_benchmark_and_item():
    text = detail("chart qa", "sub/img 0.jpg", "phash")
    assert text == "benchmark=chart_qa item=sub/img_0.jpg by=phash"
    assert parse_detail(text) == {"benchmark": "chart_qa", "item": "sub/img_0.jpg", "by": "phash"}


def test_exactly_the_planted_overlaps_are_rejected_with_benchmark_and_item(spark, benchmarks, tmp_path):
    mm_item = sorted(benchmarks["mm_ids"])[1]
    mm_image = next(it for it in load_benchmark(benchmarks["configs"][0]) if it.item == mm_item).images[0]
    mm_seed = 1000 + benchmarks["mm_ids"].index(mm_item)
    planted = {
        "jpeg copy of an mmbench image": ([variants(natural_image(mm_seed))["jpeg"]], "mmbench", mm_item),
        "resized chart": ([variants(natural_image(1012))["resized"]], "chartqa", "q2"),
        "cropped folder image": ([variants(natural_image(1021))["cropped"]], "pics", "sub/img_1.jpg"),
        "second of two images is a benchmark image": ([encode(natural_image(7)), mm_image], "mmbench", mm_item),
    }
    rows, expected = [], {}
    for caption, (images, bench, item) in planted.items():
        row = image_row(images, caption)
        rows.append(row)
        expected[row["id"]] = f"benchmark={bench} item={item} by=phash"
    rows += [image_row([encode(natural_image(seed))], f"clean {seed}") for seed in range(20)]
    rows += text_rows(["a text-only row has no image to compare"])
    df = spark.read.parquet(write_rows(rows, tmp_path / "train", n_files=2))
    out = decontaminate(df, DecontamConfig(benchmarks=benchmarks["configs"])).select("id", "_reject").collect()
    assert len(out) == len(rows)
    rejected = {r["id"]: r["_reject"] for r in out if r["_reject"] is not None}
    assert {i: v["detail"] for i, v in rejected.items()} == expected
    assert {(v["step"], v["reason"]) for v in rejected.values()} == {(STEP, REASON)}


def test_clip_rule_matches_cosines_computed_from_the_model(spark, benchmarks, tmp_path):
    from curation.clip_filter import ClipConfig, load_clip

    items = [it for c in benchmarks["configs"][:2] for it in load_benchmark(c)]
    rows = [
        image_row([items[0].images[0]], items[0].text),  # the benchmark item itself
        image_row([encode(natural_image(1011), "JPEG", quality=90)], items[5].text + " Answer briefly."),
        image_row([items[4].images[0]], "a completely different caption about cooking pasta"),
    ] + [image_row([encode(natural_image(seed))], f"photo number {seed}") for seed in range(8)]
    cfg = DecontamConfig(benchmarks=benchmarks["configs"][:2], phash=False, clip=True)
    out = decontaminate(spark.read.parquet(write_rows(rows, tmp_path / "train")), cfg).select("id", "_reject").collect()
    got = {r["id"]: r["_reject"]["detail"] for r in out if r["_reject"] is not None}

    # Ground truth straight from the model: cosine of every image pair and text pair.
    model = load_clip(ClipConfig(model=cfg.clip_model))
    bench_img = model.embed_images([it.images[0] for it in items])
    bench_txt = model.embed_texts([it.text for it in items])
    expected = {}
    for row in rows:
        img = model.embed_images([im["bytes"] for im in row["images"]])
        txt = model.embed_texts([row["messages"][0]["content"][1]["text"]])[0]
        hits = [
            k for k in range(len(items))
            if (img @ bench_img[k] >= cfg.clip_image_threshold).any() and txt @ bench_txt[k] >= cfg.clip_text_threshold
        ]
        if hits:
            expected[row["id"]] = detail(items[hits[0]].benchmark, items[hits[0]].item, "clip")
    assert rows[0]["id"] in expected, "the benchmark item itself must match"
    assert got == expected
