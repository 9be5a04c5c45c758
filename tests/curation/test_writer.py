"""The shard writer: deterministic bytes whatever the partitioning, a manifest that describes the
shards, a funnel that balances, rejects with reasons, and clean recovery from a killed run."""

import hashlib
import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image
from pyspark.sql import functions as F

from curation import schema
from curation.spark import rows_frame
from curation.steps import reject_where, with_reject_column
from curation.writer import MANIFEST, OutputFolderError, WriterConfig, compute_funnel, read_manifest, write_output


def rows(n=120):
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (32 + i % 7, 40), (i % 256, 30, 60)).save(buf, format="PNG")
        out.append(schema.caption_row("src" if i % 3 else "other", buf.getvalue(), f"caption number {i}", extra={"origin": f"o{i}"}))
    return out


def marked(spark, partitions):
    frame = rows_frame(spark, rows()).repartition(partitions)
    frame = with_reject_column(frame)
    number = F.regexp_extract(F.get_json_object("extra", "$.origin"), r"o(\d+)", 1).cast("int")
    frame = reject_where(frame, number % 10 == 0, "first", "tens", F.lit("every tenth"))
    frame = reject_where(frame, number % 4 == 0, "second", "fours")
    return frame


WRITER = WriterConfig(shard_bytes=8_000, row_group_rows=16)


def test_same_rows_same_bytes_across_partitionings(spark, tmp_path):
    outputs = []
    for partitions in (1, 3, 8):
        out = tmp_path / f"p{partitions}"
        write_output(marked(spark, partitions), str(out), ["first", "second"], {"k": 1}, WRITER, card=False)
        outputs.append(out)
    files = sorted(p.name for p in outputs[0].glob("part-*.parquet"))
    assert len(files) > 1  # several shards, so shard assignment is exercised
    for other in outputs[1:]:
        assert sorted(p.name for p in other.glob("part-*.parquet")) == files
        for name in files:
            assert (other / name).read_bytes() == (outputs[0] / name).read_bytes()
        assert (other / "_funnel.json").read_text() == (outputs[0] / "_funnel.json").read_text()


def test_manifest_funnel_rejects(spark, tmp_path):
    out = tmp_path / "o"
    manifest = write_output(marked(spark, 4), str(out), ["first", "second"], {"k": 1}, WRITER, card=True)
    assert read_manifest(out) == manifest
    assert manifest["schema_version"] == schema.SCHEMA_VERSION and manifest["config"] == {"k": 1}
    total = 0
    for shard in manifest["shards"]:
        data = (out / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        table = pq.read_table(out / shard["path"])
        assert table.schema.equals(schema.SCHEMA, check_metadata=True)
        assert table.num_rows == shard["rows"]
        ids = table.column("id").to_pylist()
        assert ids == sorted(ids)
        assert schema.validate_table(table) == {}
        total += table.num_rows
    # 120 rows: 12 tens rejected first, then multiples of 4 that are not multiples of 10: 30 - 6 = 24
    funnel = json.loads((out / "_funnel.json").read_text())
    assert funnel["steps"] == [
        {"step": "first", "in": 120, "out": 108, "rejected": {"tens": 12}},
        {"step": "second", "in": 108, "out": 84, "rejected": {"fours": 24}},
    ]
    assert total == manifest["rows"] == 84
    for step in funnel["steps"]:
        assert step["in"] == step["out"] + sum(step["rejected"].values())
    rejects = pq.read_table(out / "_rejects").to_pylist()
    assert len(rejects) == manifest["rejects"]["rows"] == 36
    assert {r["origin"] for r in rejects if r["reason"] == "tens"} == {f"o{i}" for i in range(0, 120, 10)}
    assert all(r["detail"] == "every tenth" for r in rejects if r["reason"] == "tens")
    assert (out / "card" / "README.md").exists() and (out / "card" / "index.html").exists()


def test_unknown_step_in_marks_is_a_bug(spark):
    with pytest.raises(ValueError, match="not in the pipeline"):
        compute_funnel(marked(spark, 2), ["first"])


def test_rewrite_over_killed_run_and_refuse_foreign_folder(spark, tmp_path):
    clean = tmp_path / "clean"
    write_output(marked(spark, 2), str(clean), ["first", "second"], {}, WRITER, card=False)
    # what a run killed mid-way leaves: staging, a temp file, a stale shard, no manifest
    half = tmp_path / "half"
    (half / "_staging").mkdir(parents=True)
    (half / "_staging" / "part-0.parquet").write_bytes(b"partial")
    (half / ".part-00000.parquet.tmp").write_bytes(b"partial")
    (half / "part-00099.parquet").write_bytes(b"stale")
    (half / "_funnel.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="not a complete"):
        read_manifest(half)
    write_output(marked(spark, 2), str(half), ["first", "second"], {}, WRITER, card=False)
    assert sorted(p.name for p in half.iterdir()) == sorted(p.name for p in clean.iterdir())
    for p in clean.glob("part-*.parquet"):
        assert (half / p.name).read_bytes() == p.read_bytes()
    assert (half / MANIFEST).exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputFolderError, match="no keyeforge job wrote"):
        write_output(marked(spark, 2), str(foreign), ["first", "second"], {}, WRITER, card=False)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_nothing_kept_still_writes_a_readable_empty_shard(spark, tmp_path):
    frame = with_reject_column(rows_frame(spark, rows(10)))
    frame = reject_where(frame, F.lit(True), "all", "everything")
    manifest = write_output(frame, str(tmp_path / "e"), ["all"], {}, WRITER, card=True)
    assert [s["rows"] for s in manifest["shards"]] == [0]
    assert pq.read_table(tmp_path / "e" / "part-00000.parquet").schema.equals(schema.SCHEMA, check_metadata=True)
    assert manifest["rejects"]["rows"] == 10
