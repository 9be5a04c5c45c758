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
from curation.runner import run_steps
from curation.spark import rows_frame
from curation.steps import Step, reject_where
from curation.workdir import WorkFolder
from curation.writer import MANIFEST, OutputFolderError, WriterConfig, funnel_of, prepare_folder, read_manifest, write_output


def rows(n=120):
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (32 + i % 7, 40), (i % 256, 30, 60)).save(buf, format="PNG")
        out.append(schema.caption_row("src" if i % 3 else "other", buf.getvalue(), f"caption number {i}", extra={"origin": f"o{i}"}))
    return out


def _number():
    return F.regexp_extract(F.get_json_object("extra", "$.origin"), r"o(\d+)", 1).cast("int")


class Tens(Step):
    name = "first"

    def __call__(self, df):
        return reject_where(df, _number() % 10 == 0, self.name, "tens", F.lit("every tenth"))


class Fours(Step):
    name = "second"

    def __call__(self, df):
        return reject_where(df, _number() % 4 == 0, self.name, "fours")


class Everything(Step):
    name = "all"

    def __call__(self, df):
        return reject_where(df, F.lit(True), self.name, "everything")


def write_marked(spark, out, partitions=4, steps=None, n=120, card=False):
    """The rows through the runner (materialised, then marked by `steps`) into a folder."""
    prepare_folder(out)
    frame = rows_frame(spark, rows(n)).repartition(partitions)
    steps = [Tens(None), Fours(None)] if steps is None else steps
    result = run_steps(spark, frame, steps, WorkFolder(out), f"test-{n}", sources=[], log=lambda _: None)
    return write_output(result.frame, str(out), result.step_names, {"k": 1}, WRITER, card=card, stats=result.stats)


WRITER = WriterConfig(shard_bytes=8_000, row_group_bytes=2_000)


def test_same_rows_same_bytes_across_partitionings(spark, tmp_path):
    outputs = []
    for partitions in (1, 3, 8):
        out = tmp_path / f"p{partitions}"
        write_marked(spark, out, partitions)
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
    manifest = write_marked(spark, out, card=True)
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


def test_unknown_step_in_marks_is_a_bug():
    counts = [{"step": "first", "reason": "r", "count": 2}, {"step": "second", "reason": "r", "count": 1}]
    with pytest.raises(ValueError, match="not in the pipeline"):
        funnel_of(counts, ["first"])


def test_rewrite_over_killed_run_and_refuse_foreign_folder(spark, tmp_path):
    clean = tmp_path / "clean"
    write_marked(spark, clean, 2)
    # what a run killed mid-way leaves: a half-written work result, a temp file, a stale shard,
    # no manifest
    half = tmp_path / "half"
    (half / "_work" / "first-0123").mkdir(parents=True)
    (half / "_work" / "first-0123" / "part-0.parquet").write_bytes(b"partial")
    (half / ".part-00000.parquet.tmp").write_bytes(b"partial")
    (half / "part-00099.parquet").write_bytes(b"stale")
    (half / "_funnel.json").write_text("{}")
    with pytest.raises(OutputFolderError, match="not a complete"):
        read_manifest(half)
    write_marked(spark, half, 2)
    assert sorted(p.name for p in half.iterdir()) == sorted(p.name for p in clean.iterdir())
    assert not (half / "_work").exists()  # the work folder goes once the manifest is written
    for p in clean.glob("part-*.parquet"):
        assert (half / p.name).read_bytes() == p.read_bytes()
    assert (half / MANIFEST).exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputFolderError, match="no keyeforge job wrote"):
        write_marked(spark, foreign, 2)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_nothing_kept_still_writes_a_readable_empty_shard(spark, tmp_path):
    manifest = write_marked(spark, tmp_path / "e", 2, steps=[Everything(None)], n=10, card=True)
    assert [s["rows"] for s in manifest["shards"]] == [0]
    assert pq.read_table(tmp_path / "e" / "part-00000.parquet").schema.equals(schema.SCHEMA, check_metadata=True)
    assert manifest["rejects"]["rows"] == 10
