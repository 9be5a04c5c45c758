"""Parquet files whose memory is bounded by bytes, not rows: what every writer and reader here uses.

An image-text row is 50 KB to several MB, a text row a few KB: any limit counted in rows is wrong
for one of them. So row groups are cut by bytes on write (`ParquetSink`), and the readers' batch
sizes come from the bytes per row that the files' footers record (`bytes_per_row`).

`row_bytes(batch)` sizes each row from its content (string and binary lengths, lists and structs
summed, fixed-width values by width): the same rows give the same sizes, so a file's row-group
boundaries depend only on its rows, never on how the rows arrived in batches. That keeps the bytes
of every shard reproducible.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROW_GROUP_BYTES = 32 * 2**20  # a row group a reader holds at once: ~100-600 photos, ~10k texts
MAX_ROW_GROUP_ROWS = 65_536  # and never more rows than this (tiny rows)
DATA_PAGE_BYTES = 1 * 2**20


def row_bytes(data: pa.RecordBatch | pa.Table) -> np.ndarray:
    """Bytes of each row's values (int64), from the content alone."""
    total = np.zeros(data.num_rows, dtype=np.int64)
    for column in data.columns:
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        total += _value_bytes(array)
    return total


def _value_bytes(array: pa.Array) -> np.ndarray:
    kind = array.type
    n = len(array)
    if pa.types.is_binary(kind) or pa.types.is_string(kind) or pa.types.is_large_binary(kind) or pa.types.is_large_string(kind):
        return pc.fill_null(pc.binary_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        child = _value_bytes(pc.list_flatten(array))
        if not len(child):
            return np.zeros(n, dtype=np.int64)
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        return np.bincount(parents, weights=child, minlength=n).astype(np.int64)
    if pa.types.is_struct(kind):
        total = np.zeros(n, dtype=np.int64)
        for child in array.flatten():
            total += _value_bytes(child)
        return total
    if pa.types.is_null(kind):
        return np.zeros(n, dtype=np.int64)
    return np.full(n, max(1, kind.bit_width // 8), dtype=np.int64)


def column_compression(arrow_schema: pa.Schema, codec: str) -> dict[str, str]:
    """Per leaf column: `codec`, except binary leaves, which hold encoded images and video frames
    (already compressed: zstd spent ~1.5 ms an image on them and saved nothing): stored as they are."""
    out: dict[str, str] = {}

    def walk(kind: pa.DataType, path: str) -> None:
        if pa.types.is_struct(kind):
            for i in range(kind.num_fields):
                walk(kind.field(i).type, f"{path}.{kind.field(i).name}")
        elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
            walk(kind.value_type, f"{path}.list.element")
        else:
            binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            out[path] = "none" if binary else codec

    for f in arrow_schema:
        walk(f.type, f.name)
    return out


def statistics_columns(arrow_schema: pa.Schema) -> list[str]:
    """Top-level scalar columns: the ones worth min/max statistics (never image bytes, whose
    min and max would be whole images in the footer)."""
    return [f.name for f in arrow_schema if not pa.types.is_nested(f.type) and not pa.types.is_binary(f.type)]


class ParquetSink:
    """Writes one Parquet file from a stream of Arrow batches; a row group is closed at the first
    row that brings it to `row_group_bytes` (or MAX_ROW_GROUP_ROWS rows). Memory: one row group.

    The file appears under its name only when `close()` has written it whole (a temporary name
    before), so a killed task never leaves a file that looks complete.
    """

    def __init__(
        self,
        path: str | Path,
        arrow_schema: pa.Schema,
        row_group_bytes: int = ROW_GROUP_BYTES,
        compression: str = "zstd",
    ):
        self.path = str(path)
        self.tmp = os.path.join(os.path.dirname(self.path), f".{os.path.basename(self.path)}.tmp")
        self.schema = arrow_schema
        self.row_group_bytes = max(1, int(row_group_bytes))
        self.writer = pq.ParquetWriter(
            self.tmp,
            arrow_schema,
            compression=column_compression(arrow_schema, compression),
            use_dictionary=False,
            write_statistics=statistics_columns(arrow_schema),
            data_page_size=DATA_PAGE_BYTES,
        )
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self.rows = 0

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        if isinstance(data, pa.Table):
            for batch in data.to_batches():
                self.write(batch)
            return
        batch = data.select(self.schema.names).cast(self.schema) if data.schema != self.schema else data
        sizes = row_bytes(batch)
        start = 0
        while start < batch.num_rows:
            # Rows up to and including the one that reaches the byte limit join the open group.
            room = self.row_group_bytes - self.pending_bytes
            cumulative = np.cumsum(sizes[start:])
            reach = int(np.searchsorted(cumulative, room, side="left"))  # first row with sum >= room
            take = min(reach + 1, batch.num_rows - start, MAX_ROW_GROUP_ROWS - self.pending_rows)
            self.pending.append(batch.slice(start, take))
            self.pending_rows += take
            self.pending_bytes += int(cumulative[take - 1])
            start += take
            if self.pending_bytes >= self.row_group_bytes or self.pending_rows >= MAX_ROW_GROUP_ROWS:
                self._flush()

    def _flush(self) -> None:
        if self.pending_rows:
            # One contiguous chunk: page boundaries then depend on the rows only, not on the batches
            # they arrived in.
            table = pa.Table.from_batches(self.pending, schema=self.schema).combine_chunks()
            self.writer.write_table(table, row_group_size=self.pending_rows)
            self.rows += self.pending_rows
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0

    def close(self) -> dict:
        """Finish the file; returns {path, rows, bytes}."""
        self._flush()
        self.writer.close()
        os.replace(self.tmp, self.path)
        return {"path": self.path, "rows": self.rows, "bytes": os.path.getsize(self.path)}

    def abort(self) -> None:
        self.writer.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def write_file(path: str | Path, arrow_schema: pa.Schema, batches: Iterable[pa.RecordBatch | pa.Table], **options) -> dict:
    """`batches` written as one file with byte-bounded row groups; {path, rows, bytes}."""
    sink = ParquetSink(path, arrow_schema, **options)
    try:
        for batch in batches:
            sink.write(batch)
    except BaseException:
        sink.abort()
        raise
    return sink.close()


def bytes_per_row(files: Sequence[str | Path]) -> float:
    """The largest bytes per row of any row group of `files` (uncompressed, from the footers):
    what a reader's batch of N rows may hold, per row."""
    worst = 0.0
    for path in files:
        metadata = pq.read_metadata(path)
        for i in range(metadata.num_row_groups):
            group = metadata.row_group(i)
            if group.num_rows:
                worst = max(worst, group.total_byte_size / group.num_rows)
    return worst
