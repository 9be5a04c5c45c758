"""The teacher's prompts: rows of keyeforge shard folders that carry an answer, or lines of JSONL
files such as

    {"question": "How many red circles?", "answer": "3", "answer_kind": "number", "image": "imgs/1.png"}

(`images` for several; an image is a path relative to the file, which must stay inside its folder,
or a `data:` URI; `answer_kind` is number, choice or text, default text). A line that cannot be a
prompt becomes a refused row with its reason (`bad_prompt_line`, `image_not_found`,
`unsafe_image_path`), which the teacher passes on, so the funnel accounts for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from curation import schema
from curation.sources.common import ROW_SCHEMA, image_beside, units_frame
from curation.steps import REJECT

STEP = "teacher"


def prompt_rows(spark, paths: list[str]) -> DataFrame:
    """Prompt rows (ROW_SCHEMA: contract columns + `_reject`) from shard folders and JSONL files."""
    from curation.schema.manifest import shard_paths

    frames = []
    folders = [p for p in paths if Path(p).is_dir()]
    files = [p for p in paths if Path(p).is_file()]
    unknown = [p for p in paths if p not in folders and p not in files]
    if unknown:
        raise FileNotFoundError(f"prompts: {unknown[0]} does not exist")
    shards = [str(s) for folder in folders for s in shard_paths(folder)]
    if shards:
        rows = spark.read.schema(from_arrow_schema(schema.SCHEMA)).parquet(*shards).where(F.col("answer").isNotNull())
        frames.append(rows.withColumn(REJECT, F.lit(None).cast(from_arrow_schema(ROW_SCHEMA)[REJECT].dataType)))
    if files:
        units = units_frame(spark, [(str(Path(f).resolve()),) for f in files], "file string", len(files))
        frames.append(units.mapInArrow(_JsonlPrompts(), from_arrow_schema(ROW_SCHEMA)))
    if not frames:
        raise ValueError("no prompts: give prompts=DIR (shard folders) or FILE.jsonl")
    out = frames[0]
    for more in frames[1:]:
        out = out.unionByName(more)
    return out


class _JsonlPrompts:
    """mapInArrow: JSONL file names -> a prompt row (kind rl) per line, or a refused row."""

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for file in batch.column("file").to_pylist():
                rows = []
                with open(file, "rb") as f:
                    for number, line in enumerate(f):
                        if line.strip():
                            rows.append(prompt_from_line(file, number, line))
                        if len(rows) == 64:
                            yield pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)
                            rows = []
                if rows:
                    yield pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)


def prompt_from_line(file: str, number: int, line: bytes) -> dict:
    origin = f"{Path(file).name}#line={number}"
    try:
        record = json.loads(line)
        question, answer = record["question"], record["answer"]
        if not isinstance(question, str) or not question.strip() or answer is None:
            raise ValueError("question and answer must be given")
        kind = record.get("answer_kind", "text")
        if kind not in ("number", "choice", "text"):
            raise ValueError(f"answer_kind {kind!r} is not number, choice or text")
        values = record.get("images") or ([record["image"]] if record.get("image") else [])
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("images must be paths or data: URIs")
        images = [image_beside(file, v) for v in values]
    except FileNotFoundError as exc:
        return refused(origin, "image_not_found", str(exc))
    except PermissionError as exc:
        return refused(origin, "unsafe_image_path", str(exc))
    except (ValueError, KeyError, TypeError) as exc:
        return refused(origin, "bad_prompt_line", f"{type(exc).__name__}: {exc}"[:300])
    parts = [schema.image_part(i) for i in range(len(images))]
    row = schema.make_row(
        Path(file).stem, "rl", [schema.message("user", *parts, question)], [schema.image_entry(b) for b in images],
        answer=str(answer), extra={"origin": origin, "answer_kind": kind},
    )
    row[REJECT] = None
    return row


def refused(origin: str, reason: str, detail: str) -> dict:
    row = schema.make_row("prompts", "rl", [], id=schema.raw_id(STEP, origin), extra={"origin": origin})
    row[REJECT] = {"step": STEP, "reason": reason, "detail": detail[:300]}
    return row
