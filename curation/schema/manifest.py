"""The output-folder contract: what a complete keyeforge folder holds, and its `_manifest.json`.

    FOLDER/part-00000.parquet ...   rows in the sample contract (curation.schema.SCHEMA)
    FOLDER/_rejects/part-*.parquet  refused rows: id, source, step, reason, detail, origin
    FOLDER/_funnel.json             per step: in, out, rejected by reason
    FOLDER/_stats.json              per step: seconds, whether it was reused, its own statistics
    FOLDER/card/                    the dataset card
    FOLDER/_manifest.json           written last: a folder without it is incomplete

One module writes, reads and verifies manifests for everyone (curation's writer, the dedup job,
training, tests). It depends on the schema and pyarrow only, so the trainer may import it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from curation import schema

MANIFEST = "_manifest.json"
FUNNEL = "_funnel.json"
STATS = "_stats.json"
REJECTS = "_rejects"
CARD = "card"
WORK = "_work"  # a running job's persisted step results; removed when the manifest is written


class OutputFolderError(RuntimeError):
    """A folder that cannot be used as asked: incomplete, another schema version, damaged shards,
    or (as an output) holding files no keyeforge job wrote."""


@dataclass(frozen=True)
class Shard:
    path: Path
    rows: int
    row_group_rows: tuple[int, ...]  # rows per row group, from the Parquet footer


def write_manifest(folder: str | Path, manifest: dict) -> Path:
    """Write `manifest` as the folder's `_manifest.json`, atomically (the folder is complete once
    the file exists, and a reader never sees half of it)."""
    path = Path(folder) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a complete folder written with this code's schema version; a clear error
    for an incomplete folder or another version."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise OutputFolderError(f"{folder} has no {MANIFEST}: it is not a complete keyeforge output")
    manifest = json.loads(path.read_text())
    version = manifest.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise OutputFolderError(
            f"{folder} was written with schema version {version}; this code reads version {schema.SCHEMA_VERSION}"
        )
    return manifest


def shard_paths(folder: str | Path, manifest: dict | None = None) -> list[Path]:
    """The folder's shard files in manifest order."""
    manifest = read_manifest(folder) if manifest is None else manifest
    return [Path(folder) / entry["path"] for entry in manifest["shards"]]


def list_shards(folder: str | Path, verify_checksums: bool = False) -> list[Shard]:
    """The folder's shards in manifest order, each checked against the manifest (present, the rows
    it claims, and with `verify_checksums` its sha256), with their row-group layout (footers only)."""
    folder = Path(folder)
    shards = []
    for entry in read_manifest(folder)["shards"]:
        path = folder / entry["path"]
        if not path.is_file():
            raise OutputFolderError(f"{path} is listed in {folder / MANIFEST} but missing")
        if verify_checksums:
            digest = file_sha256(path)
            if digest != entry["sha256"]:
                raise OutputFolderError(f"{path} has sha256 {digest}, the manifest says {entry['sha256']}")
        metadata = pq.ParquetFile(path).metadata
        if metadata.num_rows != entry["rows"]:
            raise OutputFolderError(f"{path} holds {metadata.num_rows} rows, the manifest says {entry['rows']}")
        groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
        shards.append(Shard(path, metadata.num_rows, groups))
    return shards


def verify(folder: str | Path) -> dict:
    """Check every shard of a complete folder against its manifest (rows and sha256); the manifest."""
    list_shards(folder, verify_checksums=True)
    return read_manifest(folder)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks (shards, checkpoint weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
