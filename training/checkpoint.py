"""Checkpoints of a training run: when to save, what a checkpoint holds, which one to resume from.

    checkpoints = Checkpointer(output, every=cfg.save_every, keep=cfg.keep_checkpoints)
    step = checkpoints.resume(engine, pipeline)   # the newest complete checkpoint's step, 0 if none
    ...
    if checkpoints.due(step, last_step): checkpoints.save(engine, step, pipeline)

OUTPUT/checkpoints/step_N/ holds DeepSpeed's save_checkpoint (module, optimizer and its fp32
partitions; DeepSpeed writes these with torch.save and reads them back with
torch.load(weights_only=False): files this run wrote, never data), plus side files without
pickle, one per rank: `trainer_rank{r}.json` (step, the data pipeline's state: reader cursor,
packer buffer, counters; python's RNG state) and `rng_rank{r}.safetensors` (torch CPU/CUDA
generator states). `COMPLETE` is written last, by rank 0, once every rank has written its files:
a folder without it (a run killed while saving) is passed over, so the newest complete checkpoint
is always one that can be resumed from. The reader's cursor, the RNG states and the engine are
saved together, so a resumed run continues at the exact next sample, bit for bit.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

COMPLETE = "COMPLETE"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _step_of(path: Path) -> int:
    return int(path.name.split("_", 1)[1])


def complete_checkpoints(output: str | Path) -> list[Path]:
    """OUTPUT's complete checkpoints, oldest first."""
    root = Path(output) / "checkpoints"
    found = [p for p in root.glob("step_*") if (p / COMPLETE).is_file()] if root.is_dir() else []
    return sorted(found, key=_step_of)


class Checkpointer:
    """Saves every `every` steps (0: only at the end of the run), keeps the newest `keep` complete
    checkpoints (0: all), resumes from the newest complete one."""

    def __init__(self, output: str | Path, every: int = 0, keep: int = 2):
        self.output, self.every, self.keep = Path(output), every, keep
        self.root = self.output / "checkpoints"

    def newest(self) -> Path | None:
        found = complete_checkpoints(self.output)
        return found[-1] if found else None

    def due(self, step: int, last_step: int) -> bool:
        """A periodic save after `step`; the last step is saved by the caller when the run ends."""
        return bool(self.every) and step % self.every == 0 and step < last_step

    def save(self, engine, step: int, pipeline, task=None) -> Path:
        rank, folder = _rank(), self.root / f"step_{step}"
        engine.save_checkpoint(str(self.root), tag=folder.name)
        state = {"step": step, "data": pipeline.state_dict(), "python_random": _jsonable(random.getstate()),
                 "task": task.state_dict() if task is not None else {}}
        (folder / f"trainer_rank{rank}.json").write_text(json.dumps(state))
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["torch_cuda"] = torch.cuda.get_rng_state()
        save_file(rng, str(folder / f"rng_rank{rank}.safetensors"))
        _barrier()  # every rank's files are on disk before the folder is marked complete
        if rank == 0:
            (folder / COMPLETE).write_text(str(step))
            for old in complete_checkpoints(self.output)[: -self.keep] if self.keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return folder

    def resume(self, engine, pipeline, task=None) -> int:
        """Load the newest complete checkpoint into the engine, the pipeline, the task's running
        state (training/tasks/base.py) and the RNGs; its step
        (0 when there is none: a fresh run)."""
        path = self.newest()
        if path is None:
            return 0
        rank = _rank()
        loaded, _ = engine.load_checkpoint(str(path.parent), tag=path.name)
        if loaded is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint {path}")
        state = json.loads((path / f"trainer_rank{rank}.json").read_text())
        pipeline.load_state_dict(state["data"])
        if task is not None:
            task.load_state_dict(state.get("task", {}))
        random.setstate(_tupled(state["python_random"]))
        rng = load_file(str(path / f"rng_rank{rank}.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        if "torch_cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["torch_cuda"])
        return int(state["step"])


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
