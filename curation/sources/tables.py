"""Caption tables: Parquet or JSONL with an image column and a caption (or text) column.

The image is bytes (a binary column, a Hugging Face `{bytes, path}` struct, or a
`data:...;base64,` string) or a path relative to the table. Paths that leave the table's folder
are refused (`unsafe_image_path`): a table from elsewhere must not read arbitrary local files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from curation.sources.common import SourcePlan, units_frame, IngestConfig, image_beside, make_caption_row, refused, batches_of

TABLE_EXTENSIONS = (".parquet", ".jsonl", ".json")


def units_of(path: Path, cfg: IngestConfig) -> list[tuple[str, int, int]]:
    """(file, start, end) work units: Parquet row groups, or JSONL byte ranges.

    A JSONL range holds about `cfg.unit_bytes` of rows' payload: when the table names its images
    by path, a few kilobytes of lines can stand for a gigabyte of images, so the range is sized
    from the lines' length and the sampled size of the images they name (never more than
    `jsonl_split_bytes` of lines).
    """
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in TABLE_EXTENSIONS)
    units = []
    for f in files:
        if f.suffix == ".parquet":
            try:
                groups = pq.ParquetFile(f).num_row_groups
            except (OSError, pa.ArrowException):
                units.append((str(f.resolve()), -1, 0))  # unreadable: refused by the reader, with its reason
                continue
            units += [(str(f.resolve()), rg, rg + 1) for rg in range(groups)]
        else:
            size = f.stat().st_size
            split = _jsonl_split(f, cfg)
            units += [(str(f.resolve()), s, min(size, s + split)) for s in range(0, max(size, 1), split)]
    return units


def _jsonl_split(file: Path, cfg: IngestConfig, sample_lines: int = 32) -> int:
    """Bytes of lines per unit: about `cfg.unit_bytes` of payload (lines + the images they name)."""
    line_bytes, payload = [], []
    folder = file.resolve().parent
    with open(file, "rb") as f:
        for line in f:
            if len(line_bytes) == sample_lines:
                break
            line_bytes.append(len(line))
            named = 0
            try:
                record = json.loads(line)
                value = next((record[k] for k in cfg.image_keys if isinstance(record.get(k), str)), None)
                if value and not value.startswith("data:"):
                    target = (folder / value).resolve()
                    named = target.stat().st_size if target.is_relative_to(folder) and target.is_file() else 0
            except (ValueError, OSError, AttributeError):
                pass
            payload.append(len(line) + named)
    if not line_bytes:
        return cfg.jsonl_split_bytes
    lines_per_unit = max(1, int(cfg.unit_bytes / max(1.0, sum(payload) / len(payload))))
    return int(min(cfg.jsonl_split_bytes, max(4096, lines_per_unit * sum(line_bytes) / len(line_bytes))))


def plan(spark: SparkSession, path: str, source: str, cfg: IngestConfig) -> SourcePlan:
    units = units_of(Path(path), cfg)
    frame = units_frame(spark, units, "file string, start long, end long", len(units))
    return SourcePlan(frame, _TableReader(source, cfg), task_bytes=cfg.unit_bytes)


class _TableReader:
    def __init__(self, source: str, cfg: IngestConfig):
        self.source, self.cfg = source, cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for unit in batch.to_pylist():
                reader = self.parquet_rows if unit["file"].endswith(".parquet") else self.jsonl_rows
                yield from batches_of(reader(unit["file"], unit["start"], unit["end"]), self.cfg.rows_per_batch, self.cfg.batch_bytes)

    def parquet_rows(self, file: str, row_group: int, _end: int) -> Iterator[dict]:
        try:
            pf = pq.ParquetFile(file)
        except (OSError, pa.ArrowException) as exc:
            yield refused(self.source, Path(file).name, "unreadable_table", f"{type(exc).__name__}: {exc}"[:300])
            return
        offset = sum(pf.metadata.row_group(i).num_rows for i in range(row_group))
        # Small batches of the row group: a table of embedded images may have huge row groups.
        for part in pf.iter_batches(batch_size=64, row_groups=[row_group], use_threads=False):
            for record in part.to_pylist():
                yield self.row(file, f"{Path(file).name}#row={offset}", record)
                offset += 1

    def jsonl_rows(self, file: str, start: int, end: int) -> Iterator[dict]:
        """Lines that begin inside [start, end): each line belongs to exactly one range."""
        with open(file, "rb") as f:
            if start > 0:
                f.seek(start - 1)
                f.readline()  # finish the line that began before this range
            while f.tell() < end:
                pos = f.tell()
                line = f.readline()
                if not line:
                    break
                if not line.strip():
                    continue
                origin = f"{Path(file).name}#offset={pos}"
                try:
                    record = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    yield refused(self.source, origin, "text_not_utf8", f"line is not UTF-8: {exc.reason}", line)
                    continue
                except json.JSONDecodeError as exc:
                    yield refused(self.source, origin, "bad_json_line", str(exc), line)
                    continue
                if not isinstance(record, dict):
                    yield refused(self.source, origin, "bad_json_line", "line is not a JSON object", line)
                    continue
                yield self.row(file, origin, record)

    def row(self, file: str, origin: str, record: dict) -> dict:
        caption = next((record[k] for k in self.cfg.caption_keys if record.get(k) is not None), None)
        if isinstance(caption, str):
            caption = caption.encode("utf-8")
        elif caption is not None and not isinstance(caption, bytes):
            return refused(self.source, origin, "caption_missing", f"caption is a {type(caption).__name__}, not text")
        value = next((record[k] for k in self.cfg.image_keys if record.get(k) is not None), None)
        try:
            image = self.image_bytes(file, value)
        except FileNotFoundError as exc:
            return refused(self.source, origin, "image_not_found", str(exc), caption)
        except PermissionError as exc:
            return refused(self.source, origin, "unsafe_image_path", str(exc), caption)
        return make_caption_row(self.source, origin, image, caption, self.cfg.keep_formats)

    @staticmethod
    def image_bytes(file: str, value) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, dict):  # Hugging Face Image feature: {bytes, path}
            if value.get("bytes"):
                return value["bytes"]
            value = value.get("path")
            if value is None:
                return None
        return image_beside(file, value)
