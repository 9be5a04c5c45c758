"""Parquet files bounded by bytes: row sizes from content, row groups cut at the row that reaches
the limit, the same bytes whatever batches the rows arrive in, image bytes stored uncompressed."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation import schema
from curation.parquet_files import ParquetSink, bytes_per_row, row_bytes, write_file


def rows(sizes):
    rng = np.random.default_rng(0)
    return [schema.caption_row("s", rng.bytes(n), f"caption {i} " + "x" * (i % 7)) for i, n in enumerate(sizes)]


def test_row_bytes_count_every_value_from_the_content():
    table = schema.rows_to_table(rows([1000, 20, 5000]))
    sizes = row_bytes(table)
    for i, row in enumerate(table.to_pylist()):
        image = row["images"][0]
        texts = sum(len(p["text"].encode()) + len(p["type"]) for m in row["messages"] for p in m["content"] if p["text"])
        # strings and binaries by length, ints by width: images (bytes + sha + 2 ints), texts,
        # roles, ids, ... the image dominates and the rest is what the row says
        assert sizes[i] >= len(image["bytes"]) + len(image["sha256"]) + 8 + texts
        assert sizes[i] - len(image["bytes"]) < 600
    # a slice and its parent agree (offsets handled)
    assert list(row_bytes(table.slice(1, 2))) == list(sizes[1:])


def test_row_groups_are_cut_by_bytes_and_the_same_whatever_the_batches(tmp_path):
    sizes = [300_000, 50_000, 900_000, 10_000, 10_000, 400_000, 2_000_000, 70_000, 5_000, 600_000]
    table = schema.rows_to_table(rows(sizes))
    limit = 1_000_000
    files = []
    for split in ([10], [3, 7], [1] * 10, [4, 4, 2]):
        path = tmp_path / f"split{len(split)}-{split[0]}.parquet"
        sink = ParquetSink(path, schema.SCHEMA, row_group_bytes=limit)
        start = 0
        for n in split:
            sink.write(table.slice(start, n).to_batches()[0] if n else table.slice(0, 0))
            start += n
        assert sink.close()["rows"] == len(sizes)
        files.append(path.read_bytes())
    assert all(f == files[0] for f in files)  # the same bytes, whatever the batches
    meta = pq.read_metadata(tmp_path / "split1-10.parquet")
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    # by hand: a group closes at the row that brings it to 1 MB
    sums, expected, current = row_bytes(table), [], []
    total = 0
    for i, size in enumerate(sums):
        current.append(i)
        total += int(size)
        if total >= limit:
            expected.append(len(current))
            current, total = [], 0
    expected += [len(current)] if current else []
    assert groups == expected
    assert pq.read_table(tmp_path / "split1-10.parquet").equals(table)


def test_image_bytes_are_stored_uncompressed_and_the_rest_compressed(tmp_path):
    path = tmp_path / "c.parquet"
    write_file(path, schema.SCHEMA, [schema.rows_to_table(rows([50_000] * 4))])
    meta = pq.read_metadata(path).row_group(0)
    codecs = {meta.column(i).path_in_schema: meta.column(i).compression for i in range(meta.num_columns)}
    assert codecs["images.list.element.bytes"] == "UNCOMPRESSED"
    assert codecs["id"] == codecs["messages.list.element.content.list.element.text"] == "ZSTD"
    stats = {meta.column(i).path_in_schema for i in range(meta.num_columns) if meta.column(i).is_stats_set}
    assert "id" in stats and "images.list.element.bytes" not in stats  # no whole images in the footer


def test_a_killed_writer_leaves_no_file_under_the_final_name(tmp_path):
    path = tmp_path / "part-00000.parquet"
    sink = ParquetSink(path, schema.SCHEMA)
    sink.write(schema.rows_to_table(rows([100])))
    assert not path.exists()  # only the temporary name until close
    sink.abort()
    assert not path.exists() and not os.listdir(tmp_path)


def test_bytes_per_row_is_the_largest_of_any_row_group(tmp_path):
    path = tmp_path / "b.parquet"
    write_file(path, schema.SCHEMA, [schema.rows_to_table(rows([1000] * 5 + [400_000] * 2))], row_group_bytes=5000)
    meta = pq.read_metadata(path)
    per_group = [meta.row_group(i).total_byte_size / meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert bytes_per_row([path]) == max(per_group) and max(per_group) > 100 * min(per_group)
    assert pa.types.is_binary(schema.SCHEMA.field("images").type.value_type.field("bytes").type)
