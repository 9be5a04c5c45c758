"""The sample contract: builders, validator, and round trips through every reader users have."""

import hashlib
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation import schema


def png(width=64, height=48, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def sample_rows() -> list[dict]:
    img = png()
    caption = schema.caption_row("unit", img, "A red rectangle.", lang="en", extra={"origin": "x.png"})
    vqa = schema.make_row(
        "unit",
        "vqa",
        [
            schema.message("system", "Answer briefly."),
            schema.message("user", schema.image_part(0), schema.image_part(1), "Which is larger?"),
            schema.message("assistant", "<think>compare sizes</think>The first."),
        ],
        [schema.image_entry(img), schema.image_entry(png(30, 30, (0, 0, 255)))],
        think_mode="think",
        task_types=["perception~size~compare"],
        lang="en",
        clip_score=0.31,
    )
    video = schema.make_row(
        "unit",
        "video",
        [schema.message("user", schema.video_part(0), "What happens?"), schema.message("assistant", "A square moves.")],
        videos=[schema.video_entry([png(), png()], [0.0, 0.5], 64, 48, 2.0, 1.0)],
        lang="zh",
    )
    preference = schema.make_row(
        "unit", "preference", [schema.message("user", "2+2?"), schema.message("assistant", "4")],
        rejected=[schema.message("user", "2+2?"), schema.message("assistant", "5")],
    )
    rl = schema.make_row("unit", "rl", [schema.message("user", "2+3?")], answer="5")
    return [caption, vqa, video, preference, rl]


def test_builders_make_valid_rows_with_stable_ids():
    rows = sample_rows()
    for row in rows:
        assert schema.validate_row(row) == [], row["kind"]
    assert len({r["id"] for r in rows}) == len(rows)
    again = sample_rows()
    assert [r["id"] for r in rows] == [r["id"] for r in again]
    # the id is content: the source name does not change it, the caption does
    img = png()
    assert schema.caption_row("a", img, "x")["id"] == schema.caption_row("b", img, "x")["id"]
    assert schema.caption_row("a", img, "x")["id"] != schema.caption_row("a", img, "y")["id"]
    assert rows[0]["images"][0]["sha256"] == hashlib.sha256(img).hexdigest()
    assert (rows[0]["images"][0]["width"], rows[0]["images"][0]["height"]) == (64, 48)


def test_est_tokens_counts_text_and_vision():
    row = schema.caption_row("u", png(280, 280), "abcdefghi")  # 10x10 merged tokens
    # 4 turn tokens + 100 vision + 2 vision start/end + ceil(9 / 3.6) text
    assert row["est_tokens"] == 4 + 100 + 2 + 3
    zh = schema.make_row("u", "text", [schema.message("document", "你好世界")])
    assert zh["est_tokens"] == 4 + 4


@pytest.mark.parametrize(
    "mutate, problem",
    [
        (lambda r: r.update(kind="poem"), "kind 'poem'"),
        (lambda r: r["messages"][0].update(role="robot"), "role 'robot'"),
        (lambda r: r["messages"][0]["content"][0].update(index=3), "image part index 3"),
        (lambda r: r["images"][0].update(sha256="0" * 64), "sha256 does not match"),
        (lambda r: r.update(id=None), "id is missing"),
        (lambda r: r.update(extra="{not json"), "extra is not JSON"),
        (lambda r: r.update(think_mode="sometimes"), "think_mode 'sometimes'"),
        (lambda r: r.update(kind="rl"), "rl row without an answer"),
        (lambda r: r.update(kind="preference"), "preference row without a rejected reply"),
    ],
)
def test_validator_names_the_problem(mutate, problem):
    row = sample_rows()[0]
    mutate(row)
    assert any(problem in p for p in schema.validate_row(row)), schema.validate_row(row)


def test_table_has_exactly_the_schema_and_validates():
    table = schema.rows_to_table(sample_rows())
    assert table.schema.equals(schema.SCHEMA, check_metadata=True)
    assert schema.schema_version(table.schema) == schema.SCHEMA_VERSION
    assert schema.validate_table(table) == {}
    broken = table.to_pylist()
    broken[1]["kind"] = "nonsense"
    assert list(schema.validate_table(schema.rows_to_table(broken))) == [broken[1]["id"]]


@pytest.fixture
def shard(tmp_path):
    rows = sample_rows()
    path = tmp_path / "part-00000.parquet"
    pq.write_table(schema.rows_to_table(rows), path)
    return path, rows


def _normalise(rows):
    """Compare values, not container types: tuples/lists/numpy arrays become lists."""
    import numpy as np

    def norm(v):
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, np.ndarray)):
            return [norm(x) for x in v]
        if isinstance(v, float):
            return round(v, 5)
        if isinstance(v, np.generic):
            return norm(v.item())
        return v

    return sorted((norm(r) for r in rows), key=lambda r: r["id"])


def test_round_trip_pyarrow(shard):
    path, rows = shard
    table = pq.read_table(path)
    assert table.schema.equals(schema.SCHEMA, check_metadata=True)
    assert _normalise(table.to_pylist()) == _normalise(rows)


def test_round_trip_pandas(shard):
    import pandas as pd

    path, rows = shard
    frame = pd.read_parquet(path)
    assert list(frame.columns) == list(schema.COLUMNS)
    back = schema.conform(pa.Table.from_pandas(frame, preserve_index=False))
    assert _normalise(back.to_pylist()) == _normalise(rows)


def test_round_trip_duckdb(shard):
    import duckdb

    path, rows = shard
    table = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetch_arrow_table()
    assert _normalise(schema.conform(table).to_pylist()) == _normalise(rows)
    assert duckdb.sql(f"SELECT count(*) FROM '{path}' WHERE kind = 'vqa'").fetchall()[0][0] == 1


def test_round_trip_datasets(shard, tmp_path):
    from datasets import load_dataset

    path, rows = shard
    ds = load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf"))
    assert ds.num_rows == len(rows)
    assert _normalise(schema.conform(ds.data.table).to_pylist()) == _normalise(rows)


def test_round_trip_spark(shard, spark, tmp_path):
    path, rows = shard
    frame = spark.read.parquet(str(path))
    assert frame.columns == list(schema.COLUMNS)
    back = schema.conform(frame.toArrow())
    assert _normalise(back.to_pylist()) == _normalise(rows)
    # and Spark writing it again keeps the values
    frame.write.parquet(str(tmp_path / "respark"))
    again = schema.conform(pq.read_table(tmp_path / "respark"))
    assert _normalise(again.to_pylist()) == _normalise(rows)


def test_smart_resize_rules():
    assert schema.smart_resize(224, 224) == (224, 224)
    h, w = schema.smart_resize(1000, 3000, max_pixels=1003520)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 1003520
    assert schema.smart_resize(10, 10) == (56, 56)  # lifted to min_pixels
    with pytest.raises(schema.AspectRatioError):
        schema.smart_resize(28, 28 * 201)
