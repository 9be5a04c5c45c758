"""The sample contract: one Arrow schema for every shard row, whatever produced it.

Curation writes rows in this shape, training reads them, dataset cards describe them. This module
is the only place the shape is defined; everything else imports it.

Writing rows yourself::

    from curation import schema
    row = schema.caption_row("my_source", image_bytes, "a red circle", lang="en")
    problems = schema.validate_row(row)          # [] when the row is well formed
    table = schema.rows_to_table([row])          # a pyarrow.Table with exactly SCHEMA
    pyarrow.parquet.write_table(table, "part-00000.parquet")

A row is a plain dict with the keys of ``COLUMNS``. ``messages`` is a list of turns
``{"role", "content": [{"type", "text", "index"}]}``: a text part carries ``text``; an image or
video part carries ``index`` into the row's ``images`` / ``videos``. Loss goes on assistant and
document text. Grounding coordinates are integers in [0, 1000).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 1

ROLES = ("system", "user", "assistant", "document")
PART_TYPES = ("text", "image", "video")
KINDS = ("caption", "ocr", "vqa", "grounding", "interleaved", "video", "text", "preference", "rl")
THINK_MODES = ("think", "no_think", "auto_think", "agentic")
LOSS_ROLES = ("assistant", "document")

def _list(item: pa.DataType) -> pa.DataType:
    # Parquet names list items "element"; naming them so here makes written and read schemas equal.
    return pa.list_(pa.field("element", item))


CONTENT_PART = pa.struct([("type", pa.string()), ("text", pa.string()), ("index", pa.int32())])
MESSAGE = pa.struct([("role", pa.string()), ("content", _list(CONTENT_PART))])
MESSAGES = _list(MESSAGE)
IMAGE = pa.struct(
    [("bytes", pa.binary()), ("width", pa.int32()), ("height", pa.int32()), ("sha256", pa.string())]
)
VIDEO = pa.struct(
    [
        ("frames", _list(pa.binary())),
        ("timestamps", _list(pa.float32())),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float32()),
        ("duration", pa.float32()),
    ]
)

# Every field is nullable at the Arrow level so that Spark, pandas and DuckDB round trips never
# trip over nullability flags; `validate_row` enforces which values are required.
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("kind", pa.string()),
        ("messages", MESSAGES),
        ("rejected", MESSAGES),
        ("answer", pa.string()),
        ("images", _list(IMAGE)),
        ("videos", _list(VIDEO)),
        ("think_mode", pa.string()),
        ("task_types", _list(pa.string())),
        ("lang", pa.string()),
        ("clip_score", pa.float32()),
        ("est_tokens", pa.int64()),
        ("extra", pa.string()),
    ],
    metadata={"keyeforge.schema_version": str(SCHEMA_VERSION)},
)
COLUMNS = tuple(SCHEMA.names)
REQUIRED = ("id", "source", "kind", "messages", "images", "videos", "task_types", "est_tokens")

# --- vision token arithmetic (Keye-VL / Qwen2-VL rules) ----------------------------------------

PATCH_SIZE = 14
MERGE_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: one merged token covers 28x28 pixels
MAX_ASPECT_RATIO = 200
IMAGE_MIN_PIXELS = 4 * FACTOR * FACTOR  # 3136, as the released preprocessor
IMAGE_MAX_TOKENS = 16384
IMAGE_MAX_PIXELS = IMAGE_MAX_TOKENS * FACTOR * FACTOR
VIDEO_FRAME_MIN_TOKENS = 128
VIDEO_FRAME_MAX_TOKENS = 768
VIDEO_MAX_TOKENS = 24576
VIDEO_FPS = 2.0  # frames sampled per second of video by default
VIDEO_MIN_FRAMES = 4
VIDEO_MAX_FRAMES = 768


class AspectRatioError(ValueError):
    """An image whose long side exceeds MAX_ASPECT_RATIO times its short side."""


def smart_resize(
    height: int,
    width: int,
    factor: int = FACTOR,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, area within [min_pixels, max_pixels],
    aspect ratio kept as closely as rounding allows."""
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise AspectRatioError(
            f"aspect ratio {max(height, width) / min(height, width):.1f} of a {height}x{width} "
            f"image exceeds {MAX_ASPECT_RATIO}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def image_tokens(height: int, width: int, max_tokens: int = IMAGE_MAX_TOKENS) -> int:
    """Merged vision tokens an image becomes after smart_resize."""
    h, w = smart_resize(height, width, max_pixels=max_tokens * FACTOR * FACTOR)
    return (h // FACTOR) * (w // FACTOR)


def video_tokens(height: int, width: int, num_frames: int) -> int:
    """Merged vision tokens of a video of `num_frames` sampled frames: the count is made even and
    kept in [4, 192] (4..768, and 192 x 128 = 24576), per-frame budget 128..768, at most 24576."""
    if num_frames <= 0:
        return 0
    # The frame count the processor uses: an even number in [4, 768], and no more frames than the
    # 24576-token budget allows at the 128-token per-frame minimum (192).
    num_frames = min(num_frames, VIDEO_MAX_FRAMES, VIDEO_MAX_TOKENS // VIDEO_FRAME_MIN_TOKENS)
    num_frames = max(num_frames, VIDEO_MIN_FRAMES)
    num_frames -= num_frames % 2
    while True:
        per_frame_cap = max(VIDEO_FRAME_MIN_TOKENS, min(VIDEO_FRAME_MAX_TOKENS, VIDEO_MAX_TOKENS // num_frames))
        h, w = smart_resize(
            height,
            width,
            min_pixels=VIDEO_FRAME_MIN_TOKENS * FACTOR * FACTOR,
            max_pixels=per_frame_cap * FACTOR * FACTOR,
        )
        per_frame = (h // FACTOR) * (w // FACTOR)
        # rounding a frame up to the 128-token minimum can overshoot the total: drop 2 frames
        if per_frame * num_frames <= VIDEO_MAX_TOKENS or num_frames <= VIDEO_MIN_FRAMES:
            return per_frame * num_frames
        num_frames -= 2


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
TOKENS_PER_TURN = 4  # <|im_start|>role\n ... <|im_end|>\n


def text_tokens(text: str) -> int:
    """A tokenizer-free estimate: one token per CJK character, ~3.6 characters per token else."""
    cjk = len(_CJK.findall(text))
    return cjk + math.ceil((len(text) - cjk) / 3.6)


def estimate_tokens(messages: Sequence[Mapping], images: Sequence[Mapping] = (), videos: Sequence[Mapping] = ()) -> int:
    """est_tokens of a row: text + vision tokens (images and videos that the messages reference)."""
    total = 0
    for message in messages or ():
        total += TOKENS_PER_TURN
        for part in message["content"] or ():
            kind = part["type"]
            if kind == "text":
                total += text_tokens(part["text"] or "")
            elif kind == "image":
                image = images[part["index"]]
                if image["width"] and image["height"]:
                    try:
                        total += image_tokens(image["height"], image["width"]) + 2
                    except ValueError:  # extreme aspect ratio: validation refuses the row
                        pass
            elif kind == "video":
                video = videos[part["index"]]
                if video["width"] and video["height"]:
                    try:
                        total += video_tokens(video["height"], video["width"], len(video["frames"])) + 2
                    except ValueError:
                        pass
    return total


# --- row builders -------------------------------------------------------------------------------


def text_part(text: str) -> dict:
    return {"type": "text", "text": text, "index": None}


def image_part(index: int = 0) -> dict:
    return {"type": "image", "text": None, "index": index}


def video_part(index: int = 0) -> dict:
    return {"type": "video", "text": None, "index": index}


def message(role: str, *parts: str | Mapping) -> dict:
    """A turn; plain strings become text parts."""
    return {"role": role, "content": [text_part(p) if isinstance(p, str) else dict(p) for p in parts]}


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the image header without decoding pixels; (0, 0) if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:  # unreadable header: the validation step rejects the row with its reason
        return 0, 0


def image_entry(data: bytes, width: int | None = None, height: int | None = None) -> dict:
    if width is None or height is None:
        width, height = image_size(data)
    return {"bytes": data, "width": width, "height": height, "sha256": hashlib.sha256(data).hexdigest()}


def video_entry(
    frames: Sequence[bytes], timestamps: Sequence[float], width: int, height: int, fps: float, duration: float
) -> dict:
    if len(frames) != len(timestamps):
        raise ValueError(f"{len(frames)} frames but {len(timestamps)} timestamps")
    return {
        "frames": list(frames),
        "timestamps": [float(t) for t in timestamps],
        "width": width,
        "height": height,
        "fps": float(fps),
        "duration": float(duration),
    }


def content_id(
    kind: str,
    messages: Sequence[Mapping],
    images: Sequence[Mapping] = (),
    videos: Sequence[Mapping] = (),
    rejected: Sequence[Mapping] | None = None,
    answer: str | None = None,
) -> str:
    """Stable id: a hash of what the row says and shows, independent of source and machine.

    Two rows with the same content get the same id; exact deduplication relies on that.
    """
    h = hashlib.sha256()
    canon = {
        "kind": kind,
        "messages": _canonical_messages(messages),
        "rejected": _canonical_messages(rejected) if rejected is not None else None,
        "answer": answer,
    }
    h.update(json.dumps(canon, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())
    for image in images:
        h.update(b"\x00img" + (image["sha256"] or hashlib.sha256(image["bytes"]).hexdigest()).encode())
    for video in videos:
        h.update(b"\x00vid")
        for frame, ts in zip(video["frames"], video["timestamps"]):
            h.update(hashlib.sha256(frame).digest() + repr(round(float(ts), 6)).encode())
    return h.hexdigest()[:32]


def raw_id(*parts: bytes | str | None) -> str:
    """Id of an input that never became a row (unreadable, unsafe): a hash of what identifies it."""
    h = hashlib.sha256()
    for p in parts:
        h.update(b"\x00" + (p.encode() if isinstance(p, str) else (p or b"")))
    return h.hexdigest()[:32]


def _canonical_messages(messages: Sequence[Mapping] | None) -> list:
    return [
        [m["role"], [[p["type"], p.get("text"), p.get("index")] for p in (m["content"] or ())]]
        for m in (messages or ())
    ]


def make_row(
    source: str,
    kind: str,
    messages: Sequence[Mapping],
    images: Sequence[Mapping] = (),
    videos: Sequence[Mapping] = (),
    *,
    rejected: Sequence[Mapping] | None = None,
    answer: str | None = None,
    think_mode: str | None = None,
    task_types: Iterable[str] = (),
    lang: str | None = None,
    clip_score: float | None = None,
    extra: Mapping[str, Any] | None = None,
    id: str | None = None,
) -> dict:
    """A complete row; id and est_tokens are derived unless given."""
    messages = [dict(m) for m in messages]
    images, videos = list(images), list(videos)
    return {
        "id": id or content_id(kind, messages, images, videos, rejected, answer),
        "source": source,
        "kind": kind,
        "messages": messages,
        "rejected": list(rejected) if rejected is not None else None,
        "answer": answer,
        "images": images,
        "videos": videos,
        "think_mode": think_mode,
        "task_types": list(task_types),
        "lang": lang,
        "clip_score": clip_score,
        "est_tokens": estimate_tokens(messages, images, videos),
        "extra": json.dumps(dict(extra or {}), ensure_ascii=False, sort_keys=True),
    }


def caption_row(source: str, image: bytes, caption: str, lang: str | None = None, extra: Mapping | None = None) -> dict:
    """An image-caption pair as a document: the image, then its caption (loss on the caption)."""
    return make_row(
        source,
        "caption",
        [message("document", image_part(0), caption)],
        [image_entry(image)],
        lang=lang,
        extra=extra,
    )


TEXT_SEPARATOR = "\n"


def row_text(row: Mapping) -> str | None:
    """The text of a row: every text part of its messages (captions, documents, questions and
    answers), in order, joined by newlines. The one definition; `curation.row_text` computes the
    same strings as a Spark column and over Arrow columns (tests compare the three).

    Rows without messages have the empty string; parts that are not text, or whose text is null,
    are skipped; a null message or a message with null content leaves the row without text (None).
    """
    texts = []
    for turn in row.get("messages") or ():
        if turn is None or turn.get("content") is None:
            return None
        texts.extend(p["text"] for p in turn["content"] if p.get("type") == "text" and p.get("text") is not None)
    return TEXT_SEPARATOR.join(texts)


# --- tables and validation ----------------------------------------------------------------------


def rows_to_table(rows: Iterable[Mapping]) -> pa.Table:
    """A pyarrow Table with exactly SCHEMA (missing optional keys become null)."""
    rows = list(rows)
    columns = {name: [row.get(name) for row in rows] for name in COLUMNS}
    return pa.table(columns, schema=SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """Cast a table with the contract's columns (from Spark, pandas, ...) to exactly SCHEMA."""
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise ValueError(f"table lacks contract columns {missing}")
    return table.select(list(COLUMNS)).cast(SCHEMA)


def schema_version(arrow_schema: pa.Schema) -> int | None:
    raw = (arrow_schema.metadata or {}).get(b"keyeforge.schema_version")
    return int(raw) if raw is not None else None


def validate_row(row: Mapping) -> list[str]:
    """What is wrong with a row's structure ([] if nothing): missing values, unknown roles, kinds
    or part types, dangling image/video indices, rows that need an answer or a rejected reply."""
    problems = [f"{name} is missing" for name in REQUIRED if row.get(name) is None]
    if problems:
        return problems
    unknown = set(row) - set(COLUMNS)
    if unknown:
        problems.append(f"unknown columns {sorted(unknown)}")
    if row["kind"] not in KINDS:
        problems.append(f"kind {row['kind']!r} not in {KINDS}")
    if row.get("think_mode") is not None and row["think_mode"] not in THINK_MODES:
        problems.append(f"think_mode {row['think_mode']!r} not in {THINK_MODES}")
    if not row["messages"]:
        problems.append("messages is empty")
    n_images, n_videos = len(row["images"]), len(row["videos"])
    for turn in [*row["messages"], *(row.get("rejected") or ())]:
        if turn.get("role") not in ROLES:
            problems.append(f"role {turn.get('role')!r} not in {ROLES}")
        for part in turn.get("content") or ():
            kind = part.get("type")
            if kind == "text":
                if part.get("text") is None:
                    problems.append("text part without text")
            elif kind in ("image", "video"):
                limit = n_images if kind == "image" else n_videos
                index = part.get("index")
                if index is None or not 0 <= index < limit:
                    problems.append(f"{kind} part index {index} outside 0..{limit - 1}")
            else:
                problems.append(f"part type {kind!r} not in {PART_TYPES}")
    for image in row["images"]:
        if not image.get("bytes"):
            problems.append("image without bytes")
        elif image.get("sha256") != hashlib.sha256(image["bytes"]).hexdigest():
            problems.append("image sha256 does not match its bytes")
    for video in row["videos"]:
        if len(video.get("frames") or ()) != len(video.get("timestamps") or ()):
            problems.append("video frames and timestamps differ in length")
    if row["kind"] == "preference" and not row.get("rejected"):
        problems.append("preference row without a rejected reply")
    if row["kind"] == "rl" and row.get("answer") is None:
        problems.append("rl row without an answer")
    try:
        json.loads(row.get("extra") or "{}")
    except json.JSONDecodeError as exc:
        problems.append(f"extra is not JSON: {exc}")
    return problems


def validate_table(table: pa.Table) -> dict[str, list[str]]:
    """Problems per row id for a whole table (empty dict: every row is well formed)."""
    if not table.schema.equals(SCHEMA, check_metadata=False):
        try:
            table = conform(table)
        except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            return {"<schema>": [str(exc)]}
    out = {}
    for row in table.to_pylist():
        problems = validate_row(row)
        if problems:
            out[row.get("id") or "<no id>"] = problems
    return out
