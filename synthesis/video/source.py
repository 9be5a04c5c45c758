"""Video sources as a Spark source plan: folders, tars and tables of video files in, contract rows
(plus `_reject`) out.

    plan = video_plan(spark, ["data/videos", "clips.tar", "table.jsonl"], VideoConfig())

Items: a video file with its optional sidecars of the same stem (`.srt`/`.vtt` subtitles, `.json`
ASR result, `.txt` caption); in a table (.jsonl or .parquet), a row with `video` (a path relative to
the table) and optional `caption`, `subtitles` and `asr` (paths). Subtitle files without a video
are items too: refused with their reason. The driver only lists names; each executor opens its
videos by path (or as a tar member, a seekable file object), so no video's bytes pass through Spark
and files over 2 GB are fine.

Items are cut into groups of `group_size` consecutive items (sorted by source and name); one group
is one unit of work, and the matching task draws its other-video candidates from the same group,
so the rows do not depend on how many tasks run.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import SparkSession

from curation.sources.common import ROW_SCHEMA, SourcePlan, units_frame
from synthesis.video.clips import ClipConfig
from synthesis.video.enrich import FrameOcrConfig, RecaptionConfig
from synthesis.video.frames import FrameRules
from synthesis.video.process import process_group
from synthesis.video.speech import SpeechConfig
from synthesis.video.tasks import TaskConfig

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".mov", ".ts", ".avi", ".m4v")
SUBTITLE_EXTENSIONS = (".srt", ".vtt")
TABLE_EXTENSIONS = (".jsonl", ".parquet")


@dataclass
class VideoConfig:
    frames: FrameRules = field(default_factory=FrameRules)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    ocr: FrameOcrConfig = field(default_factory=FrameOcrConfig)  # frame-level OCR rows (off by default)
    recaption: RecaptionConfig = field(default_factory=RecaptionConfig)  # model captions (off by default)
    min_seconds: float = 1.0  # shorter videos are refused (too_short)
    group_size: int = 8  # items per unit of work (and the matching task's candidate pool)
    decode_threads: int = 0  # 0: FFmpeg's choice
    seed: int = 0
    caption_prompt: str = "Describe this video."


def list_items(path: str) -> list[dict]:
    """The items of one source path (a folder, a tar, a table), each a small JSON-able dict."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"video source {path} does not exist")
    name = p.stem if p.is_file() else p.name
    if p.is_file() and p.suffix == ".tar":
        return _tar_items(p, name)
    if p.is_file() and p.suffix in TABLE_EXTENSIONS:
        return _table_items(p, name)
    if p.is_file():
        return _folder_items(p.parent, name, only=p)
    if any(q.suffix == ".tar" for q in p.iterdir()):
        return [item for tar in sorted(p.glob("*.tar")) for item in _tar_items(tar, name)]
    return _folder_items(p, name)


def _folder_items(root: Path, source: str, only: Path | None = None) -> list[dict]:
    files = [only] if only else sorted(q for q in root.rglob("*") if q.is_file())
    videos = {q.with_suffix(""): q for q in files if q.suffix.lower() in VIDEO_EXTENSIONS}
    items = []
    for stem, video in sorted(videos.items()):
        side = {ext: str(stem.with_suffix(ext)) for ext in (".srt", ".vtt", ".json", ".txt")
                if stem.with_suffix(ext).is_file()}
        items.append({"source": source, "origin": str(video.relative_to(root)), "path": str(video.resolve()),
                      "sidecars": {k: str(Path(v).resolve()) for k, v in side.items()}})
    if only is None:
        for q in files:
            if q.suffix.lower() in SUBTITLE_EXTENSIONS and q.with_suffix("") not in videos:
                items.append({"source": source, "origin": str(q.relative_to(root)), "orphan": str(q.resolve())})
    return items


def _tar_items(tar: Path, source: str) -> list[dict]:
    with tarfile.open(tar) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]
    keys: dict[str, dict[str, str]] = {}
    for m in members:
        stem, ext = os.path.splitext(m.name)
        keys.setdefault(stem, {})[ext.lower()] = m.name
    items = []
    for stem, found in sorted(keys.items()):
        video = next((found[e] for e in sorted(found) if e in VIDEO_EXTENSIONS), None)
        origin = f"{tar.name}/{video or stem}"
        if video is None:
            for ext in SUBTITLE_EXTENSIONS:
                if ext in found:
                    items.append({"source": source, "origin": f"{tar.name}/{found[ext]}", "tar": str(tar.resolve()),
                                  "orphan": found[ext]})
            continue
        items.append({"source": source, "origin": origin, "tar": str(tar.resolve()), "member": video,
                      "sidecars": {e: found[e] for e in (".srt", ".vtt", ".json", ".txt") if e in found}})
    return items


def _table_items(table: Path, source: str) -> list[dict]:
    if table.suffix == ".parquet":
        records = pq.read_table(table).to_pylist()
    else:
        with open(table, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    folder = table.parent.resolve()
    items = []
    for n, record in enumerate(records):
        origin = f"{table.name}#{n}"
        video = record.get("video")
        item = {"source": source, "origin": origin, "sidecars": {}}
        if not isinstance(video, str) or not video:
            item["missing"] = "the table row names no video"
        else:
            target = (folder / video).resolve()
            if os.path.commonpath([folder, target]) != str(folder):
                item["missing"] = f"video path {video!r} leaves the table's folder"
            item["path"] = str(target)
        for key, ext in (("subtitles", None), ("asr", ".json")):
            value = record.get(key)
            if isinstance(value, str) and value:
                path = (folder / value).resolve()
                item["sidecars"][ext or path.suffix.lower()] = str(path)
        if isinstance(record.get("caption"), str):
            item["caption"] = record["caption"]
        items.append(item)
    return items


def video_plan(spark: SparkSession, paths: list[str], cfg: VideoConfig, partitions: int = 0) -> SourcePlan:
    cfg.frames.check()
    items = [item for path in paths for item in list_items(path)]
    if not items:
        raise ValueError(f"no videos found in {', '.join(paths)}")
    size = max(1, cfg.group_size)
    groups = [(g, json.dumps(items[i:i + size])) for g, i in enumerate(range(0, len(items), size))]
    tasks = partitions or spark.sparkContext.defaultParallelism * 2
    units = units_frame(spark, groups, "group long, items string", tasks)
    return SourcePlan(units, _VideoReader(cfg), task_bytes=float(size) * 2**24)


class _VideoReader:
    """The mapInArrow function: each group's rows, one small Arrow batch per video."""

    def __init__(self, cfg: VideoConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from synthesis.video.speech import Recognizer

        recognizer = Recognizer(self.cfg.speech)  # loaded on first use, once per task
        for batch in batches:
            for items in batch.column("items").to_pylist():
                for rows in process_group(json.loads(items), self.cfg, recognizer):
                    if rows:
                        yield pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)
