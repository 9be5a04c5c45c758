"""WebDataset tar shards: members `key.jpg`, `key.txt` / `key.json` grouped by key.

Members are read into memory, never extracted. A member whose path is absolute, climbs out of the
shard with `..`, or is a link, is refused with reason `unsafe_tar_path`.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from pyspark.sql import SparkSession

from curation.sources.common import SourcePlan, units_frame, IngestConfig, caption_from_json, make_caption_row, refused, batches_of


def list_shards(path: Path) -> list[str]:
    if path.is_file():
        return [str(path.resolve())]
    return sorted(str(p.resolve()) for p in path.rglob("*.tar"))


def plan(spark: SparkSession, path: str, source: str, cfg: IngestConfig) -> SourcePlan:
    shards = list_shards(Path(path))
    root = str(Path(path).resolve().parent if Path(path).is_file() else Path(path).resolve())
    units = units_frame(spark, [(s,) for s in shards], "shard string", len(shards))
    largest = max((Path(s).stat().st_size for s in shards), default=0)
    return SourcePlan(units, _TarReader(root, source, cfg), task_bytes=float(largest))


def unsafe_reason(member: tarfile.TarInfo) -> str | None:
    name = member.name
    if member.issym() or member.islnk():
        return f"link member {name!r} -> {member.linkname!r}"
    if name.startswith("/") or posixpath.isabs(name):
        return f"absolute path {name!r}"
    if ".." in posixpath.normpath(name).split("/") or ".." in name.split("/"):
        return f"path {name!r} escapes the shard"
    return None


def split_key(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the path up to the first dot of the file name."""
    folder, base = posixpath.split(name)
    stem, _, ext = base.partition(".")
    return posixpath.join(folder, stem), ext.lower()


class _TarReader:
    def __init__(self, root: str, source: str, cfg: IngestConfig):
        self.root, self.source, self.cfg = root, source, cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for shard in batch.column("shard").to_pylist():
                yield from batches_of(self.rows(shard), self.cfg.rows_per_batch, self.cfg.batch_bytes)

    def rows(self, shard: str) -> Iterator[dict]:
        name = str(Path(shard).relative_to(self.root)) if shard.startswith(self.root) else Path(shard).name
        try:
            tar = tarfile.open(shard, mode="r|*")  # streaming: shards can be larger than memory
        except (tarfile.TarError, OSError) as exc:
            yield refused(self.source, name, "unreadable_tar", str(exc))
            return
        key, members = None, {}
        try:
            for member in tar:
                origin = f"{name}#{member.name}"
                reason = unsafe_reason(member)
                if reason:
                    yield refused(self.source, origin, "unsafe_tar_path", reason)
                    continue
                if not member.isfile():
                    continue
                member_key, ext = split_key(member.name)
                if member_key != key and members:
                    yield self.sample(name, key, members)
                    members = {}
                key = member_key
                members[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield refused(self.source, f"{name}#{key}", "unreadable_tar", f"tar stream broke: {exc}")
        finally:
            tar.close()
        if members:
            yield self.sample(name, key, members)

    def sample(self, shard: str, key: str, members: dict[str, bytes]) -> dict:
        image = next((members[e] for e in self.cfg.image_keys + ["jpeg", "webp"] if e in members), None)
        caption = None
        for ext in ("txt", "caption", "text"):
            if ext in members:
                caption = members[ext].strip(b"\n\r")
                break
        else:
            if "json" in members:
                caption = caption_from_json(members["json"], self.cfg.caption_keys)
        return make_caption_row(self.source, f"{shard}#{key}", image, caption, self.cfg.keep_formats)
