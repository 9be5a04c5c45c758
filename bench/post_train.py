"""Post-training throughput (a benchmark, not a test): mpo with the reference model live against
precomputed, and rl (GRPO) rollout and train tokens/s.

    python bench/post_train.py [model=tiny | init=HF_FOLDER model=keye_8b] [pairs=96] [max_tokens=2048]
        [steps=6] [micro_batches=1] [deepspeed=configs/deepspeed/zero2.json] [peak_tflops=X]
        [rl_prompts=32] [rl_new_tokens=128]

Makes its own preference rows (a photo-sized image in every other pair, replies of a few hundred
tokens), writes them as a shard folder, scores them once with `training.precompute_ref` (timed),
then runs the same optimizer steps twice in this process through the real engine and the
preference task: `mpo.reference=live` (a frozen copy of the starting weights runs a forward per
step) and `precomputed` (no reference model at all). Batches are drawn before timing; the first
step is a warm-up. Reports train tokens/s (real tokens of the packed sequences per second), the
MFU of the policy's training FLOPs (forward + backward; the live reference's forward is work the
precomputed run does not do, so it is left out of both numerators), and on a GPU the peak memory.
rl: `rl_prompts` prompts (a 640x480 image in every other one), rl.prompts per micro-batch, each
rolled out rl.group_size times for rl_new_tokens tokens (with the KV cache, one batched generate
per prompt); rollout tokens/s = generated tokens / rollout seconds, train tokens/s = packed
prompt+response tokens / the rest of the step; MFU from the task's cost model.
Writes bench/results/post_train.json with the machine.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))

WORDS = ("the shape count colour left right above below square circle red blue green total answer step "
         "first then because so check again each row column value sum larger smaller equal").split()


def prompts_with_photos(n: int, seed: int = 0) -> list[tuple[dict, list[dict]]]:
    """n user turns asking a question, every other with a 640x480 JPEG of noise: (turn, images)."""
    import io

    import numpy as np
    from PIL import Image

    from curation.schema import image_entry, image_part, message

    pixels = np.random.default_rng(seed)
    out = []
    for i in range(n):
        images = []
        if i % 2 == 0:
            buffer = io.BytesIO()
            Image.fromarray(pixels.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=85)
            images = [image_entry(buffer.getvalue())]
        out.append((message("user", *([image_part(0)] if images else []), f"Question {i}: how many red squares are there?"),
                    images))
    return out


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    from curation.schema import make_row, message

    rng = random.Random(seed)

    def reply(words: int, answer: int) -> str:
        return "<think>\n" + " ".join(rng.choice(WORDS) for _ in range(words)) + f"\n</think>\n\n{answer}"

    rows = []
    for prompt, images in prompts_with_photos(n, seed):
        chosen = [prompt, message("assistant", reply(rng.randint(120, 320), 3))]
        rejected = [prompt, message("assistant", reply(rng.randint(120, 320), 4))]
        rows.append(make_row("bench", "preference", chosen, images, rejected=rejected))
    return rows


def write_folder(folder: Path, rows: list[dict]) -> Path:
    import pyarrow.parquet as pq

    from curation.schema import SCHEMA_VERSION, rows_to_table
    from curation.schema.manifest import file_sha256, write_manifest

    folder.mkdir(parents=True)
    path = folder / "part-00000.parquet"
    pq.write_table(rows_to_table(rows), path, row_group_size=16)
    write_manifest(folder, {"schema_version": SCHEMA_VERSION, "rows": len(rows), "bytes": path.stat().st_size,
                            "shards": [{"path": path.name, "rows": len(rows), "bytes": path.stat().st_size,
                                        "sha256": file_sha256(path)}]})
    return folder


def engine_and_plan(task, args: list[str], steps: int):
    """The stage's config, the task attached to a new engine, and steps + 1 steps of batches drawn
    before any timing (the first step is a warm-up)."""
    from training.engine import build_engine
    from training.processor import load_tokenizer
    from training.stages import load_stage

    cfg = load_stage(args)
    engine = build_engine(task.build_model(cfg), cfg, task)
    task.attach(engine, cfg)
    batches = iter(task.build_pipeline(cfg, load_tokenizer(), 0, 1))
    return cfg, task, engine, [[next(batches) for _ in range(cfg.micro_batches)] for _ in range(steps + 1)]


def run_mode(args: list[str], steps: int, peak: float | None) -> dict:
    import torch

    from training.engine import set_lr, train_step
    from training.schedules import Schedule
    from training.tasks.preference import PreferenceTask

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cfg, task, engine, plan = engine_and_plan(PreferenceTask(), args, steps)
    times = []
    for i, micro in enumerate(plan):  # the first step is a warm-up
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        set_lr(engine, Schedule("constant"), i)
        step = train_step(engine, task, micro, world=1)
        task.end_step(step.stats, step.totals)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    tokens = [sum(b.real_tokens for b in micro) for micro in plan[1:]]
    policy_flops = [3 * sum(task.cost(b) / (3 + task.live) for b in micro) for micro in plan[1:]]
    return {
        "reference": cfg.mpo.reference,
        "step_seconds_median": statistics.median(times[1:]),
        "tokens_per_step_mean": statistics.mean(tokens),
        "pairs_per_step_mean": statistics.mean(sum(len(b.sample_ids) for b in micro) for micro in plan[1:]),
        "train_tokens_per_s_median": statistics.median(n / s for n, s in zip(tokens, times[1:])),
        "mfu_median": statistics.median(f / s / peak for f, s in zip(policy_flops, times[1:])) if peak else None,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def rl_rows(n: int, seed: int = 0) -> list[dict]:
    """`rl` prompts, a photo-sized image in every other one, answers to score against."""
    from curation.schema import make_row

    return [make_row("bench", "rl", [prompt], images, answer=str(i % 7), extra={"answer_kind": "number"})
            for i, (prompt, images) in enumerate(prompts_with_photos(n, seed))]


def run_rl(args: list[str], steps: int, peak: float | None) -> dict:
    """GRPO steps through the engine: the rl task's own rollout and train rates per step."""
    import torch

    from training.engine import set_lr, train_step
    from training.schedules import Schedule
    from training.tasks.rl import RlTask

    cfg, task, engine, plan = engine_and_plan(RlTask(), args, steps)
    records = []
    for i, micro in enumerate(plan):  # the first step is a warm-up
        started = time.perf_counter()
        set_lr(engine, Schedule("constant"), i)
        step = train_step(engine, task, micro, world=1)
        values = task.metrics(step.stats, step.totals)
        seconds = time.perf_counter() - started
        flops = sum(task.cost(b) for b in micro)
        records.append((values, seconds, flops, step.stats))
    timed = records[1:]
    return {
        "task": "rl",
        "settings": {"deepspeed": cfg.deepspeed, **{k: v for k, v in vars(cfg.rl).items()
                                                    if k in ("prompts", "group_size", "max_new_tokens", "top_k", "gather_once")}},
        "step_seconds_median": statistics.median(s for _, s, _, _ in timed),
        "rollout_tokens_per_step_mean": statistics.mean(st["rollout_tokens"] for _, _, _, st in timed),
        "rollout_tokens_per_s_median": statistics.median(v["rollout_tokens_per_s"] for v, _, _, _ in timed),
        "train_tokens_per_s_median": statistics.median(v["train_tokens_per_s"] for v, _, _, _ in timed),
        "mfu_median": statistics.median(f / s / peak for _, s, f, _ in timed) if peak else None,
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
    }


def main(argv: list[str]) -> None:
    import torch

    from hostinfo import cpu_model
    from training.metrics import device_peak_flops
    from training.precompute_ref import precompute
    from training.stages import load_stage

    opts = dict(a.split("=", 1) for a in argv)
    steps, pairs = int(opts.pop("steps", 6)), int(opts.pop("pairs", 96))
    rl_prompts, rl_new_tokens = int(opts.pop("rl_prompts", 32)), int(opts.pop("rl_new_tokens", 128))
    opts.setdefault("max_tokens", "2048")
    peak, peak_source = device_peak_flops(float(opts["peak_tflops"]) if "peak_tflops" in opts else None)
    common = ["stage=mpo", "schedule.name=constant", "export=false", "shuffle_buffer=16", "packer_buffer=16",
              *(f"{k}={v}" for k, v in opts.items())]
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_folder(Path(tmp) / "pairs", preference_rows(pairs))
        started = time.perf_counter()
        precompute(load_stage([*common, f"data={folder}"]), folder, Path(tmp) / "scored")
        precompute_seconds = time.perf_counter() - started
        results = [run_mode([*common, f"data={folder}", "mpo.reference=live"], steps, peak),
                   run_mode([*common, f"data={Path(tmp) / 'scored'}", "mpo.reference=precomputed"], steps, peak)]
        prompts = write_folder(Path(tmp) / "prompts", rl_rows(rl_prompts))
        rl_common = ["stage=rl", "export=false", "shuffle_buffer=16", f"rl.max_new_tokens={rl_new_tokens}",
                     *(f"{k}={v}" for k, v in opts.items() if k != "max_tokens")]
        rl = run_rl([*rl_common, f"data={prompts}"], steps, peak)
        # ZeRO-3: the weights gathered once for the rollout phase against per generated token
        zero3 = [run_rl([*rl_common, f"data={prompts}", "deepspeed=configs/deepspeed/zero3.json",
                         f"rl.gather_once={once}"], steps, peak) for once in ("true", "false")]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU {cpu_model()}, {torch.get_num_threads()} threads"
    live, pre = results
    summary = {
        "device": device,
        "model": opts.get("init") or opts.get("model", "tiny"),
        "settings": common,
        "pairs_in_folder": pairs,
        "precompute_seconds": precompute_seconds,
        "peak_flops": peak,
        "peak_source": peak_source,
        "runs": results,
        "precomputed_over_live_tokens_per_s": pre["train_tokens_per_s_median"] / live["train_tokens_per_s_median"],
        "rl": rl,
        "rl_zero3_gather_once": zero3[0],
        "rl_zero3_gather_per_token": zero3[1],
    }
    for run in results:
        mfu = f", MFU {run['mfu_median']:.3g}" if run["mfu_median"] is not None else ""
        print(f"reference {run['reference']:<11} {run['train_tokens_per_s_median']:10.1f} train tokens/s, "
              f"{run['step_seconds_median']:.3f} s/step, {run['tokens_per_step_mean']:.0f} tokens/step{mfu}")
    print(f"precomputed / live: {summary['precomputed_over_live_tokens_per_s']:.2f}x; "
          f"precompute took {precompute_seconds:.1f} s for {pairs} pairs ({device})")
    print(f"rl: {rl['rollout_tokens_per_s_median']:.1f} rollout tokens/s, {rl['train_tokens_per_s_median']:.1f} "
          f"train tokens/s, {rl['step_seconds_median']:.2f} s/step ({rl['settings']})")
    print(f"rl under ZeRO-3: rollout {zero3[0]['rollout_tokens_per_s_median']:.1f} tokens/s gathering once per "
          f"rollout phase, {zero3[1]['rollout_tokens_per_s_median']:.1f} gathering per token")
    out = ROOT / "bench" / "results" / "post_train.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
