"""Helpers shared by the training tests (pytest puts this folder on sys.path; a uniquely named
module, imported by the tests and by conftest.py; test modules never import each other): files
of the released reference data, images and videos made in the test, complete shard folders, the
rows and the tiny model most training tests start from."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation import schema
from curation.schema.manifest import file_sha256, write_manifest

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO.parent / "shared" / "reference" / "keye-vl-8b-preview"
TINY_YAML = REPO / "configs" / "models" / "tiny.yaml"

# Tests that compute the same numbers two ways (packed vs each sample alone, a KV cache vs
# recomputing, flash-attn's contract vs SDPA) run the tiny model in float64 and compare with this
# absolute tolerance. In float32 the two ways add in other orders, and how far apart that puts
# them depends on the CPU's kernels (AVX2, AVX-512, AMD, Intel). In float64 the sums agree to
# ~1e-16 on any of them; what float32 is left (transformers' RMSNorm computes in float32, the rope
# tables are float32) is the same elementwise arithmetic in both ways, except that a 1e-16
# difference can round a value to the neighbouring float32: one ulp, <= 1.2e-7 of an O(1)
# normalised value, carried to outputs of size <= ~3. 1e-6 holds that; a sample seeing another
# (the bug these tests look for) moves its outputs by orders of magnitude more.
SAME_MATH_ATOL = 1e-6


def reference_file(name: str) -> Path:
    """A file of the released Keye-VL-8B-Preview reference data, or skip the test."""
    path = REFERENCE / name
    if not path.is_file():
        pytest.skip(f"reference data {path} is absent (it lives in ../shared/reference next to the repo)")
    return path


def png(height: int, width: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def video_entry(num_frames: int, height: int, width: int, fps: float, seed: int = 0) -> dict:
    frames = [png(height, width, seed * 1000 + i) for i in range(num_frames)]
    times = [i / fps for i in range(num_frames)]
    return schema.video_entry(frames, times, width, height, fps, num_frames / fps)


# --- shard folders ------------------------------------------------------------------------------------


def write_shard_folder(folder: Path, shards: Sequence[Sequence[dict]], row_group_rows: int = 8) -> Path:
    """A complete output folder: one `part-NNNNN.parquet` per list of rows (an empty list makes an
    empty shard, as the writer does when nothing is kept), then the manifest, written last."""
    folder.mkdir(parents=True)
    entries = []
    for s, rows in enumerate(shards):
        path = folder / f"part-{s:05d}.parquet"
        pq.write_table(schema.rows_to_table(rows), path, row_group_size=row_group_rows)
        entries.append({"path": path.name, "rows": len(rows), "bytes": path.stat().st_size,
                        "sha256": file_sha256(path)})
    write_manifest(folder, {"schema_version": schema.SCHEMA_VERSION, "rows": sum(e["rows"] for e in entries),
                            "bytes": sum(e["bytes"] for e in entries), "shards": entries, "config": {},
                            "code_version": "test"})
    return folder


def write_shards(folder: Path, rows: Sequence[dict], row_group_rows: int = 8) -> Path:
    """A complete output folder holding these rows in one shard."""
    return write_shard_folder(folder, [rows], row_group_rows)


def training_rows(n: int = 24) -> list[dict]:
    """Captions (an image each: the ViT and projector get gradients) and short chats."""
    m = schema.message
    rows = [schema.caption_row("t", png(56, 56 + 28 * (i % 2), i), f"a picture number {i}") for i in range(n // 2)]
    rows += [schema.make_row("t", "text", [m("user", f"Count to {i}."), m("assistant", " ".join(["one"] * (1 + i)))])
             for i in range(n - n // 2)]
    return rows


# --- the tiny model -----------------------------------------------------------------------------------


def tiny(seed: int = 0):
    """The tiny VLM as `python -m training.launch` builds it (random weights from `seed`)."""
    from training.tasks.lm import resolve_model
    from training.stages import StageConfig

    return resolve_model(StageConfig(model="tiny", seed=seed))


def parts_state(model, task: str = "lm") -> dict[str, dict[str, torch.Tensor]]:
    """A copy of every parameter, by the part it belongs to (the names `train` uses) under `task`."""
    from training.tasks import build_task

    return {part: {f"{i}.{n}": p.detach().clone() for i, m in enumerate(mods) for n, p in m.named_parameters()}
            for part, mods in build_task(task).model_parts(model).items()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before)
