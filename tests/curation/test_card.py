import json
import subprocess
import sys
from pathlib import Path

from curation.writer import WriterConfig, write_output
from tests.curation.test_writer import marked

ROOT = Path(__file__).resolve().parents[2]


def test_card_rebuilds_from_any_output_folder(spark, tmp_path):
    out = tmp_path / "o"
    write_output(marked(spark, 2), str(out), ["first", "second"], {"clip": {"enabled": True, "model": "tiny-random"}},
                 WriterConfig(shard_bytes=8000), card=False)
    assert not (out / "card").exists()
    result = subprocess.run([sys.executable, "-m", "curation.card", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (out / "card" / "README.md").read_text()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert f"{manifest['rows']:,} rows in {len(manifest['shards'])} shards" in text
    assert "| first | 120 | 108 | 12 | tens: 12 |" in text
    assert "| second | tens | " not in text and "| second | fours | 24 |" in text
    assert "**The CLIP scores in this dataset come from `tiny-random`" in text
    html = (out / "card" / "index.html").read_text()
    assert "<strong>The CLIP scores" in html and "<td>fours</td>" in html


def test_card_counts_benchmark_overlaps_per_benchmark(spark, tmp_path):
    from pyspark.sql import functions as F

    from curation.dedup.decontam import detail
    from curation.steps import reject_where

    frame = marked(spark, 2)
    number = F.regexp_extract(F.get_json_object("extra", "$.origin"), r"o(\d+)", 1).cast("int")
    frame = reject_where(frame, number % 7 == 1, "decontam", "benchmark_overlap",
                         F.when(number % 2 == 0, detail("MMBench", "q1", "phash")).otherwise(detail("ChartQA", "7", "phash")))
    out = tmp_path / "b"
    write_output(frame, str(out), ["first", "second", "decontam"], {}, WriterConfig(shard_bytes=8000), card=True)
    funnel = json.loads((out / "_funnel.json").read_text())
    removed = funnel["steps"][2]["rejected"]["benchmark_overlap"]
    text = (out / "card" / "README.md").read_text()
    assert "## Benchmark overlap" in text
    import pyarrow.parquet as pq

    rejects = pq.read_table(out / "_rejects").to_pylist()
    by_bench = {}
    for r in rejects:
        if r["reason"] == "benchmark_overlap":
            name = r["detail"].split()[0].split("=")[1]
            by_bench[name] = by_bench.get(name, 0) + 1
    assert sum(by_bench.values()) == removed and len(by_bench) == 2
    for name, n in by_bench.items():
        assert f"| {name} | {n} |" in text
