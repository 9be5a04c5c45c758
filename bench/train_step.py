"""Training-step throughput through the real engine (DeepSpeed, the stage's loss, the data
pipeline): tokens/s and estimated MFU on whatever device there is (a benchmark, not a test).

    python bench/train_step.py [model=tiny] [data=out/pretrain] [max_tokens=1024] [steps=6] [peak_tflops=X]
        [deepspeed=configs/deepspeed/zero2.json] [micro_batches=1] [gradient_checkpointing=false]

Batches are drawn from the pipeline before timing (reading and processing are bench/loader.py's
subject); each step is one optimizer step of `micro_batches` packed sequences. FLOPs come from the
cost model (training/data/cost.py, forward + 2x backward, lm_head on loss positions only:
engine.train_flops); the device peak from a table by GPU name
(training.metrics.PEAK_TFLOPS, dense bf16) or, on a CPU, a measured fp32 matmul (peak_tflops=
overrides both). Prints a table and writes bench/results/train_step.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))


def main(argv: list[str]) -> None:
    import torch

    from training.data import DataPipeline, ShardReader
    from training.engine import (
        build_engine,
        set_lr,
        train_step,
    )
    from training.tasks.lm import LMTask, model_dims, resolve_model, train_flops
    from training.metrics import device_peak_flops
    from training.processor import KeyeProcessor, load_tokenizer
    from training.schedules import Schedule
    from training.stages import load_stage

    opts = dict(a.split("=", 1) for a in argv)
    steps = int(opts.pop("steps", 6))
    cfg = load_stage([f"{k}={v}" for k, v in opts.items()] + ["schedule.name=constant", "export=false"])
    model = resolve_model(cfg)
    engine = build_engine(model, cfg)
    reader = ShardReader(cfg.data, seed=cfg.seed, buffer_size=cfg.shuffle_buffer)
    pipeline = DataPipeline(reader, KeyeProcessor(load_tokenizer()), max_tokens=cfg.max_tokens,
                            buffer_size=cfg.packer_buffer)
    batches = iter(pipeline)
    plan = [[next(batches) for _ in range(cfg.micro_batches)] for _ in range(steps + 1)]
    dims = model_dims(engine.module.config)
    peak, source = device_peak_flops(cfg.peak_tflops)
    schedule = Schedule("constant")
    times = []
    for i, micro in enumerate(plan):  # the first step is a warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        set_lr(engine, schedule, i)
        train_step(engine, LMTask(), micro, world=1)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    timed = plan[1:]
    tokens = [sum(b.real_tokens for b in m) for m in timed]
    flops = [train_flops(m, dims) for m in timed]
    rates = [n / s for n, s in zip(tokens, times[1:])]
    mfus = [f / s / peak for f, s in zip(flops, times[1:])] if peak else [float("nan")]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    result = {
        "device": device,
        "model": cfg.model,
        "deepspeed": cfg.deepspeed,
        "precision": "bf16" if engine.bfloat16_enabled() else "fp32",
        "max_tokens": cfg.max_tokens,
        "micro_batches": cfg.micro_batches,
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "steps_timed": steps,
        "step_seconds_median": statistics.median(times[1:]),
        "tokens_per_step_mean": statistics.mean(tokens),
        "tokens_per_s_median": statistics.median(rates),
        "mfu_median": statistics.median(mfus),
        "peak_flops": peak,
        "peak_source": source,
        "train_flops_per_step_mean": statistics.mean(flops),
    }
    width = max(map(len, result))
    for key, value in result.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"{key:<{width}}  {shown}")
    out = ROOT / "bench" / "results" / "train_step.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
