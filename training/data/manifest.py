"""Reading a curation output folder's `_manifest.json` from the trainer's side.

Training may depend on `curation.schema` only, so the few lines that turn a folder into a list of
shards live here instead of being imported from `curation.writer`. A folder is complete only when
its manifest exists (the writer writes it last); the manifest's schema version must be the one this
code reads; every shard it lists must exist, hold the rows it claims and, when asked, hash to the
recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from curation import schema

MANIFEST = "_manifest.json"


class ShardFolderError(RuntimeError):
    """A folder the trainer cannot read: incomplete, another schema version, or damaged shards."""


@dataclass(frozen=True)
class Shard:
    path: Path
    rows: int
    row_group_rows: tuple[int, ...]  # rows per row group, from the Parquet footer


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ShardFolderError(f"{folder} has no {MANIFEST}: it is not a complete keyeforge output")
    manifest = json.loads(path.read_text())
    version = manifest.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise ShardFolderError(
            f"{folder} was written with schema version {version}; this trainer reads version {schema.SCHEMA_VERSION}"
        )
    return manifest


def list_shards(folder: str | Path, verify_checksums: bool = False) -> list[Shard]:
    """The folder's shards in manifest order, with their row-group layout (footers only, no data)."""
    folder = Path(folder)
    shards = []
    for entry in read_manifest(folder)["shards"]:
        path = folder / entry["path"]
        if not path.is_file():
            raise ShardFolderError(f"{path} is listed in {folder / MANIFEST} but missing")
        if verify_checksums:
            digest = file_sha256(path)
            if digest != entry["sha256"]:
                raise ShardFolderError(f"{path} has sha256 {digest}, the manifest says {entry['sha256']}")
        metadata = pq.ParquetFile(path).metadata
        if metadata.num_rows != entry["rows"]:
            raise ShardFolderError(f"{path} holds {metadata.num_rows} rows, the manifest says {entry['rows']}")
        groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
        shards.append(Shard(path, metadata.num_rows, groups))
    return shards


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (shards, checkpoint weights)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
