"""Per-step metrics: one JSON line per step (OUTPUT/metrics.jsonl), TensorBoard scalars
(OUTPUT/tensorboard), and a tqdm progress bar when stderr is a terminal. Rank 0 writes; other
ranks get a writer that does nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path


class MetricsWriter:
    def __init__(self, output: str | Path, total_steps: int, start_step: int = 0, enabled: bool = True,
                 tensorboard: bool = True, progress: bool | None = None):
        self.enabled = enabled
        self._file = self._tb = self._bar = None
        if not enabled:
            return
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        self._file = open(output / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(output / "tensorboard"))
        if progress if progress is not None else sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def resume_at(self, step: int) -> None:
        """A run resumed from the checkpoint of `step`: drop the lines logged after it (steps that
        a killed run did past its last checkpoint and that will now be run again)."""
        if not self.enabled:
            return
        self._file.close()
        self._file = truncate_jsonl(Path(self._file.name), step)
        if self._bar is not None:
            self._bar.n = step
            self._bar.refresh()

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}, sort_keys=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key, value, step)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{values.get('loss', float('nan')):.4f}", lr=f"{values.get('lr', 0):.2e}")
        elif step == 1 or step % 10 == 0 or values.get("final"):
            shown = {k: values[k] for k in ("loss", "lr", "grad_norm", "tokens_per_s") if k in values}
            print(f"step {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in shown.items()), flush=True)

    def close(self) -> None:
        for closer in (self._file, self._tb, self._bar):
            if closer is not None:
                closer.close()
        self._file = self._tb = self._bar = None


def truncate_jsonl(path: Path, step: int):
    """Keep the lines of a per-step JSONL file with "step" <= step (a torn last line of a killed
    run goes too); returns the file opened for appending."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True) if path.exists() else []
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError):  # the half-written line of a process killed mid-write
            continue
    path.write_text("".join(kept), encoding="utf-8")
    return open(path, "a", encoding="utf-8")  # the caller closes it


class Ledger:
    """OUTPUT/ledger/rank{r}.jsonl: per step, the sample ids this rank trained on and which rank
    read each sequence — the audit trail of what the weights have seen (after a resume it is cut
    back to the checkpoint, like metrics.jsonl, so it lists each step once)."""

    def __init__(self, output: str | Path, rank: int, enabled: bool = True):
        self._file = None
        if enabled:
            folder = Path(output) / "ledger"
            folder.mkdir(parents=True, exist_ok=True)
            self._file = open(folder / f"rank{rank}.jsonl", "a", encoding="utf-8")  # noqa: SIM115 (close())

    def resume_at(self, step: int) -> None:
        if self._file is not None:
            self._file.close()
            self._file = truncate_jsonl(Path(self._file.name), step)

    def log(self, step: int, sequences: list, owners: list[int]) -> None:
        if self._file is None:
            return
        record = {"step": step, "sequences": [{"owner": o, "ids": list(b.sample_ids)} for b, o in zip(sequences, owners)]}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_ledger(output: str | Path) -> dict[int, list[dict]]:
    """Every rank's ledger: {rank: [records in step order]}."""
    found = {}
    for path in sorted((Path(output) / "ledger").glob("rank*.jsonl")):
        found[int(path.stem[4:])] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return found


# Dense bf16 peak of one device, TFLOP/s (vendor datasheets, no sparsity), by a substring of its name.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0,
               "4090": 165.0, "V100": 125.0}


def measure_matmul_flops(size: int = 1024, repeats: int = 10, dtype=None) -> float:
    """FLOP/s of a square matmul on the CPU, the best of a few runs: the CPU's "peak" for MFU."""
    import time

    import torch

    a = torch.randn(size, size, dtype=dtype or torch.float32)
    b = torch.randn(size, size, dtype=dtype or torch.float32)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def device_peak_flops(given_tflops: float | None = None) -> tuple[float, str]:
    """(peak FLOP/s, where it came from): given, the table by GPU name, or measured on the CPU."""
    import torch

    if given_tflops:
        return given_tflops * 1e12, "given"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, tflops in PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"table:{key}"
        return 0.0, f"unknown GPU {name}"
    return measure_matmul_flops(), "measured CPU fp32 matmul"
