"""The text of a row: Spark's `row_text()` and Arrow's `arrow_row_text()` give the same strings."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curation import schema
from curation.row_text import arrow_row_text, row_text

MESSAGES = schema.SCHEMA.field("messages").type


def part(text, type_="text"):
    return {"type": type_, "text": text, "index": None}


# (messages, expected text)
CASES = [
    (None, ""),
    ([], ""),
    ([{"role": "user", "content": []}], ""),
    ([{"role": "user", "content": [part("hello")]}], "hello"),
    (
        [
            {"role": "user", "content": [part("question"), part(None, "image"), part("more")]},
            {"role": "assistant", "content": [part("answer")]},
        ],
        "question\nmore\nanswer",
    ),
    ([{"role": "user", "content": [part("caption of an image", "image"), part("seen")]}], "seen"),
    ([{"role": "user", "content": [part(None), part("kept"), part("")]}], "kept\n"),
    ([{"role": "user", "content": [part("typeless", None)]}], ""),
    ([{"role": "user", "content": None}, {"role": "assistant", "content": [part("x")]}], None),
    ([None, {"role": "assistant", "content": [part("x")]}], None),
    (
        [{"role": "user", "content": [part("中文，句子。")]}, {"role": "assistant", "content": [part("")]}],
        "中文，句子。\n",
    ),
]


def cases_table(cases) -> pa.Table:
    ids = [f"r{i:02d}" for i in range(len(cases))]
    return pa.table({"id": ids, "messages": pa.array([m for m, _ in cases], MESSAGES)})


def test_the_definition_gives_the_expected_values():
    from curation import schema

    assert [schema.row_text({"messages": m}) for m, _ in CASES] == [t for _, t in CASES]


def test_arrow_row_text_expected_values():
    assert arrow_row_text(cases_table(CASES).column("messages")).to_pylist() == [t for _, t in CASES]


@pytest.mark.parametrize("start,length", [(0, len(CASES)), (3, 5), (8, 3)])
def test_arrow_row_text_of_a_slice(start, length):
    # Batches handed to a task are often slices of a larger array (non-zero offsets).
    sliced = cases_table(CASES).column("messages").combine_chunks().slice(start, length)
    assert arrow_row_text(sliced).to_pylist() == [t for _, t in CASES[start : start + length]]


def test_spark_and_arrow_agree(spark):
    table = cases_table(CASES * 3)
    df = spark.createDataFrame(table)
    from_spark = dict(df.select("id", row_text().alias("text")).collect())
    from_arrow = dict(zip(table.column("id").to_pylist(), arrow_row_text(table.column("messages")).to_pylist()))
    assert from_spark == from_arrow
