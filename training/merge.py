"""`python -m training.merge inputs=A,B[,C...] [weights=w1,w2,...] output=DIR`: average checkpoints.

The Keye-VL report merges the models of several annealing runs (different data mixtures) by
averaging their weights. This writes that average as a new HF folder:

    python -m training.merge inputs=out/train/anneal_a,out/train/anneal_b output=out/merged
    python -m training.merge inputs=/ckpt/a,/ckpt/b,/ckpt/c weights=2,1,1 output=/ckpt/merged
    python -m training.merge --print-config inputs=a,b output=m    # the resolved settings

Inputs are HF folders (config.json + model.safetensors, or shards + model.safetensors.index.json)
or training-run output folders, whose `export/` is used. Rules:

- Configs must be equal, apart from keys that say nothing about the weights: IGNORED_CONFIG_KEYS
  (`dtype`/`torch_dtype` are among them because each tensor's dtype is compared on its own, and
  `use_cache` because gradient checkpointing switches it off in the exported config).
- Every input has the same tensor names, shapes and dtypes.
- weights: one per input, >= 0, not all zero, normalised to sum 1 (default: equal).
- Floating tensors: sum of w_i * x_i accumulated in float64 (exact enough for any number of
  bf16/fp32 inputs, and no size threshold is needed because the sum runs over row blocks of
  at most CHUNK_ELEMENTS, not whole tensors), then rounded back to the tensor's dtype.
- Other tensors (integer/bool buffers) must be equal in every input and are copied.
- Memory: one row block per input plus the output shard being written (at most
  `max_shard_size`, or one tensor when a single tensor is larger), so an 8B model merges on a
  plain host. Tensors are read with safetensors' safe_open; nothing is unpickled.

Output: model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json
when the weights exceed `max_shard_size`; config.json, generation_config.json and the tokenizer
files of the first input; merge_info.json (inputs, weights, each input's weight files with size
and sha256, times). The folder is built beside OUTPUT and renamed into place when complete, so a
killed merge leaves no folder that looks finished. OUTPUT must not exist or be empty, and never
lies inside an input.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from curation.config import ConfigError, job_config
from curation.schema.manifest import file_sha256

log = logging.getLogger("training.merge")

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# config.json keys that do not change which tensors a checkpoint has or what they mean
IGNORED_CONFIG_KEYS = frozenset({"_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache"})
# files besides the weights that make the folder usable: taken from the first input
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
TOKENIZER_FILES += ("vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
PROCESSOR_FILES = ("preprocessor_config.json", "video_preprocessor_config.json", "processor_config.json")
COPIED_FILES = ("config.json", "generation_config.json", *TOKENIZER_FILES, *PROCESSOR_FILES)
CHUNK_ELEMENTS = 1 << 24  # elements per row block in the running sum (128 MiB as float64)
# safetensors dtype names -> bytes per element (a tensor's size without reading it)
_DTYPES_BY_SIZE = {1: "BOOL U8 I8 F8_E4M3 F8_E5M2 F8_E8M0", 2: "I16 U16 F16 BF16", 4: "I32 U32 F32", 8: "I64 U64 F64"}
DTYPE_BYTES = {name: size for size, names in _DTYPES_BY_SIZE.items() for name in names.split()}


class MergeError(ValueError):
    """Inputs that cannot be averaged (different configs or tensors); the message says where."""


@dataclass
class MergeConfig:
    inputs: list[str] = field(default_factory=list)  # HF folders or training-run output folders
    weights: list[float] = field(default_factory=list)  # one per input; empty = equal
    output: str = ""  # the new HF folder (must not exist, or be empty)
    max_shard_size: str = "5GB"  # bytes per weights file: 5GB, 500MB, 2GiB, 123456
    checksums: bool = True  # sha256 of every input weights file in merge_info.json (reads them all once)


@dataclass
class Checkpoint:
    """One input: where it was named, its HF folder, and which file holds each tensor."""

    given: str
    folder: Path
    files: dict[str, Path]  # tensor name -> weights file

    @property
    def weight_files(self) -> list[Path]:
        return sorted(set(self.files.values()))


# --- inputs -------------------------------------------------------------------------------------------


def hf_folder(path: str) -> Path:
    """The HF folder of an input: the folder itself, or a training run's export/."""
    folder = Path(path)
    if (folder / "config.json").is_file():
        return folder
    if (folder / "export" / "config.json").is_file():
        log.info("%s is a training run's output folder: merging its export/", folder)
        return folder / "export"
    raise ConfigError(f"{path}: neither an HF folder (config.json) nor a training run's output folder (export/)")


def open_checkpoint(path: str) -> Checkpoint:
    folder = hf_folder(path)
    if (folder / INDEX_FILE).is_file():
        weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
        return Checkpoint(path, folder, {name: folder / file for name, file in weight_map.items()})
    if (folder / SINGLE_FILE).is_file():
        from safetensors import safe_open

        with safe_open(str(folder / SINGLE_FILE), framework="pt") as f:
            names = f.keys()  # (a safe_open handle cannot be iterated itself)
        return Checkpoint(path, folder, dict.fromkeys(names, folder / SINGLE_FILE))
    raise ConfigError(f"{folder}: no {SINGLE_FILE} nor {INDEX_FILE} (only safetensors checkpoints are merged)")


def config_differences(a, b, prefix: str = "") -> list[str]:
    """Dotted keys where two config.json contents differ, ignoring IGNORED_CONFIG_KEYS."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix.rstrip(".") or "(whole config)"]
    out = []
    for key in sorted(set(a) | set(b)):
        if key in IGNORED_CONFIG_KEYS:
            continue
        if key not in a or key not in b:
            out.append(f"{prefix}{key}")
        else:
            out.extend(config_differences(a[key], b[key], f"{prefix}{key}."))
    return out


def check_configs(checkpoints: list[Checkpoint]) -> None:
    first = json.loads((checkpoints[0].folder / "config.json").read_text())
    for other in checkpoints[1:]:
        config = json.loads((other.folder / "config.json").read_text())
        keys = config_differences(first, config)
        if keys:
            shown = ", ".join(keys[:10]) + (f" (+{len(keys) - 10} more)" if len(keys) > 10 else "")
            raise MergeError(f"config.json of {other.given} differs from {checkpoints[0].given} at: {shown}")


def tensor_meta(handles: dict[Path, object], ckpt: Checkpoint) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, safetensors dtype), read from the file headers (no tensor data)."""
    meta = {}
    for name, path in ckpt.files.items():
        piece = handles[path].get_slice(name)
        meta[name] = (tuple(piece.get_shape()), piece.get_dtype())
    return meta


def check_tensors(metas: list[dict], checkpoints: list[Checkpoint]) -> None:
    first, name0 = metas[0], checkpoints[0].given
    for meta, ckpt in zip(metas[1:], checkpoints[1:]):
        missing, extra = sorted(set(first) - set(meta)), sorted(set(meta) - set(first))
        if missing or extra:
            raise MergeError(
                f"{ckpt.given} and {name0} hold different tensors: missing in {ckpt.given} "
                f"{missing[:5]}, only in {ckpt.given} {extra[:5]}"
            )
        differ = [
            f"{n} {meta[n][1]}{list(meta[n][0])} vs {first[n][1]}{list(first[n][0])}"
            for n in sorted(first)
            if meta[n] != first[n]
        ]
        if differ:
            raise MergeError(
                f"{ckpt.given} and {name0} differ in shape or dtype: {'; '.join(differ[:5])}"
                + (f" (+{len(differ) - 5} more)" if len(differ) > 5 else "")
            )


def normalised_weights(weights: Sequence[float], count: int) -> list[float]:
    if not weights:
        return [1.0 / count] * count
    if len(weights) != count:
        raise ConfigError(f"weights has {len(weights)} values for {count} inputs")
    if any(w < 0 for w in weights):
        raise ConfigError(f"weights must not be negative, got {list(weights)}")
    total = float(sum(weights))
    if total <= 0:
        raise ConfigError(f"weights must not all be zero, got {list(weights)}")
    return [w / total for w in weights]


def check_output(output: Path, checkpoints: list[Checkpoint]) -> None:
    target = output.resolve()
    for ckpt in checkpoints:
        for folder in {Path(ckpt.given).resolve(), ckpt.folder.resolve()}:
            if target == folder or folder in target.parents:
                raise ConfigError(
                    f"output={output} lies in the input {ckpt.given}: the merge never writes into an input"
                )
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(f"output={output} exists and is not an empty folder; name a new one")


# --- sums -----------------------------------------------------------------------------------------------


def is_floating(dtype: str) -> bool:
    return dtype.startswith(("F", "BF"))


def row_blocks(shape: tuple[int, ...]):
    """Slices along dim 0 of at most CHUNK_ELEMENTS elements each (a whole 0-d tensor: ...)."""
    if not shape:
        yield ...
        return
    per_row = max(1, math.prod(shape[1:]))
    rows = max(1, CHUNK_ELEMENTS // per_row)
    for start in range(0, max(shape[0], 1), rows):
        yield slice(start, min(start + rows, shape[0]))


def merged_tensor(name: str, shape, dtype: str, sources: list, weights: list[float]):
    """The weighted average of one tensor over the inputs (`sources`: safe_open handles), built
    block by block so that only one input's block is read at a time."""
    import torch

    out = None
    for block in row_blocks(shape):
        if is_floating(dtype):
            total = None
            for w, src in zip(weights, sources):
                piece = src.get_slice(name)[block]
                term = piece.to(torch.float64).mul_(w)
                total = term if total is None else total.add_(term)
            value = total.to(piece.dtype)
        else:  # integer/bool buffers are not averaged: they must agree
            value = sources[0].get_slice(name)[block]
            if any(not torch.equal(value, src.get_slice(name)[block]) for src in sources[1:]):
                raise MergeError(f"non-floating tensor {name} ({dtype}) differs between inputs; it cannot be averaged")
        if block is ...:
            return value
        if out is None:
            out = torch.empty(shape, dtype=value.dtype)
        out[block] = value
    return out


def plan_shards(sizes: dict[str, int], max_bytes: int) -> list[list[str]]:
    """Tensor names per weights file, in order, each file at most max_bytes (a bigger tensor alone)."""
    shards, current, used = [], [], 0
    for name, size in sizes.items():
        if current and used + size > max_bytes:
            shards.append(current)
            current, used = [], 0
        current.append(name)
        used += size
    return shards + [current] if current else shards


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)?\s*", str(text).upper())
    if not match:
        raise ConfigError(f"max_shard_size={text!r}: expected a size such as 5GB, 500MB, 2GiB or 123456")
    number, unit = float(match.group(1)), (match.group(2) or "B")
    base = 1024 if "I" in unit else 1000
    size = int(number * base ** "BKMGT".index(unit[0]))
    if size < 1:
        raise ConfigError(f"max_shard_size={text!r} must be at least one byte")
    return size


# --- the merge ------------------------------------------------------------------------------------------


def merge(cfg: MergeConfig) -> Path:
    """Average cfg.inputs into cfg.output; returns the output folder."""
    from safetensors import safe_open

    started, t0 = datetime.now(UTC), time.perf_counter()
    if len(cfg.inputs) < 2:
        raise ConfigError(f"inputs needs at least two checkpoints, got {cfg.inputs}")
    if not cfg.output:
        raise ConfigError("output=DIR is required")
    max_bytes = parse_size(cfg.max_shard_size)
    weights = normalised_weights(cfg.weights, len(cfg.inputs))
    checkpoints = [open_checkpoint(p) for p in cfg.inputs]
    output = Path(cfg.output)
    check_output(output, checkpoints)
    check_configs(checkpoints)

    partial = output.parent / f".{output.name}.merging"
    shutil.rmtree(partial, ignore_errors=True)  # leftovers of a killed merge of this same output
    with ExitStack() as stack:
        handles = [
            {p: stack.enter_context(safe_open(str(p), framework="pt")) for p in c.weight_files} for c in checkpoints
        ]
        metas = [tensor_meta(h, c) for h, c in zip(handles, checkpoints)]
        check_tensors(metas, checkpoints)
        partial.mkdir(parents=True)
        try:
            files = write_weights(partial, metas[0], handles, checkpoints, weights, max_bytes)
            for name in COPIED_FILES:
                if (checkpoints[0].folder / name).is_file():
                    shutil.copy2(checkpoints[0].folder / name, partial / name)
            info = merge_info(cfg, checkpoints, weights, files, started, time.perf_counter() - t0)
            (partial / "merge_info.json").write_text(json.dumps(info, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    if output.exists():
        output.rmdir()  # empty (checked above): the complete folder takes its place
    os.replace(partial, output)
    return output


def write_weights(
    folder: Path, meta: dict, handles: list[dict], checkpoints: list[Checkpoint], weights: list[float], max_bytes: int
) -> list[str]:
    """The averaged tensors as model.safetensors, or as shards + index; returns the file names."""
    from safetensors.torch import save_file

    names = sorted(meta)
    sizes = {n: math.prod(meta[n][0]) * DTYPE_BYTES[meta[n][1]] for n in names}
    shards = plan_shards(sizes, max_bytes)
    if len(shards) == 1:
        files = [SINGLE_FILE]
    else:
        files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for shard, file in zip(shards, files):
        tensors = {}
        for name in shard:
            sources = [h[c.files[name]] for h, c in zip(handles, checkpoints)]
            tensors[name] = merged_tensor(name, *meta[name], sources, weights)
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        log.info("wrote %s (%d tensors)", file, len(tensors))
        del tensors  # before the next shard's tensors are built
    if len(files) > 1:
        total_parameters = sum(math.prod(meta[n][0]) for n in names)
        weight_map = {n: file for shard, file in zip(shards, files) for n in shard}
        index = {
            "metadata": {"total_size": sum(sizes.values()), "total_parameters": total_parameters},
            "weight_map": weight_map,
        }
        (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return files


def merge_info(
    cfg: MergeConfig,
    checkpoints: list[Checkpoint],
    weights: list[float],
    files: list[str],
    started: datetime,
    seconds: float,
) -> dict:
    """What merge_info.json records: enough to tell later which runs, weights and files made it."""
    given = cfg.weights or [1.0] * len(checkpoints)
    inputs = []
    for ckpt, weight, given_weight in zip(checkpoints, weights, given):
        described = [
            {"name": p.name, "bytes": p.stat().st_size, "sha256": file_sha256(p) if cfg.checksums else None}
            for p in ckpt.weight_files
        ]
        inputs.append(
            {
                "given": ckpt.given,
                "folder": str(ckpt.folder.resolve()),
                "weight": weight,
                "given_weight": given_weight,
                "files": described,
            }
        )
    return {
        "inputs": inputs,
        "accumulate_dtype": "float64",
        "output_files": files,
        "files_copied_from": str(checkpoints[0].folder.resolve()),
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "merge_seconds": round(seconds, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    cfg = job_config(MergeConfig, argv, "training.merge")
    if cfg is None:  # --print-config
        return 0
    try:
        folder = merge(cfg)
    except (ConfigError, MergeError, OSError) as exc:
        raise SystemExit(f"training.merge: {exc}") from None
    print(f"merged {len(cfg.inputs)} checkpoints into {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
