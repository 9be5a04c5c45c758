"""jobs/dedup.py end to end on a shard folder: exact -> near text -> image -> decontam, with the
manifest, funnel and rejects a person reads afterwards."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from curation import config as configuration
from curation import schema
from curation.writer import read_manifest
from jobs import dedup as dedup_job
from tests.curation.dedup_fixtures import (
    encode,
    image_row,
    natural_image,
    planted_corpus,
    text_rows,
    variants,
    write_input_folder,
    write_rows,
)


def test_job_runs_every_step_and_accounts_for_every_row(spark, tmp_path):
    base = planted_corpus(31, "en", n_bases=1, n_singles=0)[0]
    text = text_rows([base, base + " and one more sentence at the end", "an unrelated short document here"])
    exact_copy = dict(text[2])  # the same content id twice: exact duplicate
    img = natural_image(40)
    images = [image_row([encode(img)], "a picture"), image_row([variants(img)["resized"]], "the picture, smaller")]
    bench_img = natural_image(41)
    contaminated = image_row([variants(bench_img)["jpeg"]], "a benchmark picture")
    rows = text + [exact_copy] + images + [contaminated]
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "item7.png").write_bytes(encode(bench_img))

    write_input_folder(rows, tmp_path / "in", n_files=2)
    # A stray file beside the shards (a copy an earlier tool left) is not in the manifest: not read.
    write_rows(text_rows(["a stray document that no manifest lists"]), tmp_path / "in" / "stray")
    (tmp_path / "in" / "stray" / "part-00000.parquet").rename(tmp_path / "in" / "part-00009.parquet")
    cfg = configuration.load(
        dedup_job.DedupJobConfig,
        [
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / 'out'}",
            "near_dedup.threshold=0.7",
            f"decontam.benchmarks=[{{name: tiny, path: {tmp_path / 'bench'}}}]",
            "card=false",
        ],
    )
    manifest = dedup_job.run(cfg, spark)

    assert read_manifest(tmp_path / "out") == manifest
    funnel = json.loads((tmp_path / "out" / "_funnel.json").read_text())
    assert [s["step"] for s in funnel["steps"]] == ["exact_dedup", "near_dedup", "image_dedup", "decontam"]
    assert funnel["input_rows"] == len(rows) and funnel["kept_rows"] == manifest["rows"] == 3
    stats = {s["step"]: s for s in json.loads((tmp_path / "out" / "_stats.json").read_text())["steps"]}
    assert list(stats) == ["exact_dedup", "near_dedup", "image_dedup", "decontam"]
    assert stats["decontam"]["stats"]["overlaps"] and stats["image_dedup"]["stats"]["images_hashed"] > 0
    assert all(stats[s["step"]]["rows_out"] == s["out"] for s in funnel["steps"])
    by_step = {s["step"]: s["rejected"] for s in funnel["steps"]}
    assert by_step == {
        "exact_dedup": {"exact_duplicate": 1},
        "near_dedup": {"near_duplicate": 1},
        "image_dedup": {"duplicate_image": 1},
        "decontam": {"benchmark_overlap": 1},
    }
    rejects = pq.ParquetDataset(sorted((tmp_path / "out" / "_rejects").glob("part-*.parquet"))).read().to_pylist()
    assert len(rejects) == manifest["rejects"]["rows"] == 4
    overlap = next(r for r in rejects if r["step"] == "decontam")
    assert overlap["id"] == contaminated["id"] and overlap["detail"] == "benchmark=tiny item=item7.png by=phash"
    near = next(r for r in rejects if r["step"] == "near_dedup")
    assert {near["id"], near["detail"]} == {text[0]["id"], text[1]["id"]}
    kept = set(
        pq.ParquetDataset(sorted((tmp_path / "out").glob("part-*.parquet")))
        .read(columns=["id"])
        .column("id")
        .to_pylist()
    )
    assert kept == {min(text[0]["id"], text[1]["id"]), text[2]["id"], min(r["id"] for r in images)}
    # The exact copy shares its id with a kept row: rows are dropped by position, so the kept
    # shards are still the two input shards without their rejected rows.
    assert [s["path"] for s in manifest["shards"]] == ["part-00000.parquet", "part-00001.parquet"]
    assert sorted(p.name for p in (tmp_path / "out").glob("part-*.parquet")) == [s["path"] for s in manifest["shards"]]
    copied = pq.ParquetDataset(sorted((tmp_path / "out").glob("part-*.parquet"))).read(columns=["id"])
    assert sorted(copied.column("id").to_pylist()) == sorted(kept)


def test_job_refuses_a_folder_without_manifest_and_unknown_keys(tmp_path):
    with pytest.raises(Exception, match="_manifest.json"):
        dedup_job.run(dedup_job.DedupJobConfig(input=str(tmp_path), output=str(tmp_path / "o")))
    with pytest.raises(configuration.ConfigError, match="near_dedup.threshold"):
        configuration.load(dedup_job.DedupJobConfig, ["near_dedup.treshold=0.5"])


def test_kept_shards_are_the_input_shards_without_their_rejects_whatever_the_splits(spark, tmp_path):
    """The job only rejects rows, so its kept shards are copies of the input shards without the
    rejected rows: one per input shard, rows in input order, the same bytes for any number of input
    splits; its rejects and funnel equal those of the general writer given the same marks (texts
    read through the JVM there)."""
    from curation.dedup import NearTextDedupConfig
    from curation.writer import write_output

    texts = planted_corpus(32, "en", n_bases=20, n_singles=20)
    write_input_folder(text_rows(texts), tmp_path / "in", n_files=3)
    inputs = sorted((tmp_path / "in").glob("part-*.parquet"))
    outputs = []
    for splits in (1, 5):
        out = tmp_path / f"out{splits}"
        cfg = configuration.load(
            dedup_job.DedupJobConfig,
            [
                f"input={tmp_path / 'in'}",
                f"output={out}",
                "near_dedup.threshold=0.7",
                "exact_dedup.enabled=false",
                "image_dedup.enabled=false",
                f"near_dedup.signature_tasks={splits}",
                "card=false",
            ],
        )
        outputs.append(dedup_job.run(cfg, spark))
        assert not (out / "_work").exists()
    first = outputs[0]
    for other in outputs[1:]:
        assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in other["shards"]]
        assert [s["sha256"] for s in first["rejects"]["shards"]] == [s["sha256"] for s in other["rejects"]["shards"]]

    rejected = set(pq.read_table(tmp_path / "out1" / "_rejects").column("id").to_pylist())
    assert 0 < len(rejected) < len(texts)
    assert [s["path"] for s in first["shards"]] == [f.name for f in inputs]
    for entry, source in zip(first["shards"], inputs):
        expected = [r for r in pq.read_table(source).to_pylist() if r["id"] not in rejected]
        assert pq.read_table(tmp_path / "out1" / entry["path"]).to_pylist() == expected
        assert entry["rows"] == len(expected)

    # The general (hash-sharding) writer over the same marks: the same rejects and funnel.
    df = spark.read.parquet(*map(str, inputs))
    from curation.dedup.near_text import NearDedup
    from curation.runner import run_steps
    from curation.workdir import WorkFolder

    result = run_steps(spark, df, [NearDedup(NearTextDedupConfig(threshold=0.7))], WorkFolder(tmp_path / "general"), "k", sources=[])
    general = write_output(result.frame, str(tmp_path / "general"), result.step_names, {}, card=False)
    assert [s["sha256"] for s in first["rejects"]["shards"]] == [s["sha256"] for s in general["rejects"]["shards"]]
    funnel = json.loads((tmp_path / "out1" / "_funnel.json").read_text())
    assert funnel == json.loads((tmp_path / "general" / "_funnel.json").read_text())
    assert funnel["input_rows"] == len(texts) == funnel["kept_rows"] + len(rejected)


def test_filtered_copy_drops_rejected_positions_even_among_exact_copies(spark, tmp_path):
    """Rows are dropped by (file, row index): of two identical rows only the rejected one goes,
    also in files whose names Spark URL-encodes."""
    from curation.steps import reject_where, with_reject_column
    from curation.workdir import with_row_key
    from curation.writer import write_output

    rows = text_rows([f"document number {i} with a few words" for i in range(12)])
    twin = dict(rows[4])
    tables = [schema.rows_to_table(rows[:7] + [twin]), schema.rows_to_table(rows[7:] + [twin])]
    (tmp_path / "in").mkdir()
    files = [str(tmp_path / "in" / "a b+%.parquet"), str(tmp_path / "in" / "c.parquet")]
    for table, path in zip(tables, files):
        pq.write_table(table, path, row_group_size=3)
    df = with_reject_column(with_row_key(spark.read.parquet(*files), files))
    # Reject the twin in the second file (its last row) and rows 1 and 8 by id; keep rows[4].
    marked = reject_where(df, F.col("_row") == (1 << 32) + 5, "s", "twin")
    marked = reject_where(marked, F.col("id").isin(rows[1]["id"], rows[8]["id"]), "s", "picked")
    manifest = write_output(marked, str(tmp_path / "out"), ["s"], {}, card=False, row_files=files)

    expected = [
        [r for r in tables[0].to_pylist() if r["id"] != rows[1]["id"]],
        [r for r in tables[1].to_pylist()[:5] if r["id"] != rows[8]["id"]],
    ]
    got = [pq.read_table(tmp_path / "out" / s["path"]).to_pylist() for s in manifest["shards"]]
    assert got == expected
    assert manifest["rows"] == 14 - 3 and manifest["rejects"]["rows"] == 3
    # every row of the URL-encoded file name got its key
    assert df.where(F.col("_row").isNull()).count() == 0
    assert sorted(r["_row"] >> 32 for r in df.select("_row").distinct().collect()) == [0] * 8 + [1] * 6
    with pytest.raises(ValueError, match="_row"):
        write_output(spark.read.parquet(*files), str(tmp_path / "o2"), [], {}, card=False, row_files=files)
