"""How evenly a global step's work lands on data-parallel ranks (a benchmark, not a test).

    python bench/balance.py [--per-rank 4] [--ranks 8 64 512] [--seed 0]

A realistic mix of samples (text-only; small images; large document-like images up to the 16384-
token cap; multi-image; videos at 2 fps up to the 24576-token cap), Keye-VL-8B dimensions. Samples
are packed online (first fit over 8 open sequences, a stand-in for the Packer) into sequences of at
most --max-tokens LLM tokens. Each global step gives every rank --per-rank sequences on average, and
we compare, by the FLOPs cost model (training/data/cost.py), the max / mean rank cost of

    random       sequences dealt to ranks as they come (what data parallelism does by default)
    llm_tokens   the balancer, but fed LLM token counts instead of FLOPs
    lpt / kk     greedy longest-first / Karmarkar-Karp on FLOPs
    best         the better of the two, then single moves/swaps off the most loaded rank
                 (`training.data.balance_costs` with free counts: ranks may run different
                 numbers of sequences, which ZeRO-2/3 cannot; shown for what that would reach)
    equal        every rank gets exactly --per-rank sequences: LPT into ranks with room, then
                 swaps (`balance_costs(..., per_rank=m)`, what the trainer runs through
                 training/global_step.py: ZeRO-2/3 need the same number of micro-steps on every rank)

1.00 is perfect; a synchronous step takes (max/mean) times the ideal. "bound" is a lower bound on
what any assignment can reach (see `lower_bound`): where it is above 1, the sequences themselves
are too coarse to split evenly. Reported: mean and worst
over steps, and the milliseconds `balance_costs` takes per step. Prints a table and writes
bench/results/balance.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation import schema
from training.data.balance import balance_costs, greedy_lpt, karmarkar_karp
from training.data.cost import (
    ModelDims,
    SampleShape,
    image_grid,
    sample_flops,
    video_grid,
)

NAMES = ("bound", "random", "llm_tokens", "lpt", "kk", "best", "equal")
MIX = {"text": 0.35, "small_image": 0.30, "large_image": 0.12, "multi_image": 0.08, "video": 0.15}


def text_tokens(rng: np.random.Generator, median: float, sigma: float) -> int:
    return int(np.clip(rng.lognormal(np.log(median), sigma), 8, 16000))


def make_samples(n: int, seed: int, max_tokens: int) -> tuple[list[SampleShape], list[str]]:
    rng = np.random.default_rng(seed)
    kinds = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    samples = []
    for kind in kinds:
        if kind == "text":
            grids, text = (), text_tokens(rng, 500, 1.1)
        elif kind == "small_image":
            grids, text = (image_grid(*rng.integers(224, 800, size=2)),), text_tokens(rng, 150, 0.9)
        elif kind == "large_image":
            grids, text = (image_grid(*rng.integers(1000, 4000, size=2)),), text_tokens(rng, 600, 0.9)
        elif kind == "multi_image":
            grids = tuple(image_grid(*rng.integers(224, 1000, size=2)) for _ in range(rng.integers(2, 7)))
            text = text_tokens(rng, 300, 0.9)
        else:
            height, width = [(360, 640), (480, 854), (720, 1280)][rng.integers(0, 3)]
            seconds = rng.uniform(8, 300)
            grid = video_grid(height, width, int(seconds * schema.VIDEO_FPS))
            assert grid[0] * grid[1] * grid[2] // 4 == schema.video_tokens(
                height, width, int(seconds * schema.VIDEO_FPS)
            )
            grids, text = (grid,), text_tokens(rng, 300, 0.9)
        vision = sum(t * h * w for t, h, w in grids) // 4
        samples.append(SampleShape(min(text, max_tokens - vision), grids))  # the Packer refuses longer
    return samples, list(kinds)


def pack(samples: list[SampleShape], max_tokens: int, open_sequences: int = 8) -> list[list[SampleShape]]:
    """Online first-fit over a few open sequences (a stand-in for the Packer): a sample goes into
    the first open sequence with room; when none has room, the fullest is closed for a new one."""
    done, open_, used = [], [], []
    for sample in samples:
        tokens = sample.llm_tokens()
        slot = next((i for i, u in enumerate(used) if u + tokens <= max_tokens), None)
        if slot is None:
            if len(open_) == open_sequences:
                fullest = int(np.argmax(used))
                done.append(open_.pop(fullest))
                used.pop(fullest)
            open_.append([])
            used.append(0)
            slot = len(open_) - 1
        open_[slot].append(sample)
        used[slot] += tokens
    return done + open_


def lower_bound(costs: np.ndarray, ranks: int) -> float:
    """No assignment's max load is below this: the mean load, and for every j, of the j*k+1
    costliest sequences some rank holds j+1, so at least the j+1 cheapest of those together
    (j = 0 is the costliest single sequence)."""
    desc = np.sort(costs)[::-1]
    bound = costs.sum() / ranks
    for j in range((len(costs) - 1) // ranks + 1):
        top = desc[: j * ranks + 1]
        bound = max(bound, float(top[-(j + 1) :].sum()))
    return bound


def imbalance(costs: np.ndarray, groups) -> float:
    loads = np.array([costs[list(g)].sum() for g in groups])
    return float(loads.max() / loads.mean())


def run(ranks: int, per_rank: int, steps: int, flops: np.ndarray, tokens: np.ndarray, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    results = {name: [] for name in NAMES}
    millis, millis_equal = [], []
    n = ranks * per_rank
    for step in range(steps):
        pick = rng.choice(len(flops), size=n, replace=False)
        cost, tok = flops[pick], tokens[pick]
        results["bound"].append(lower_bound(cost, ranks) / (cost.sum() / ranks))
        results["random"].append(imbalance(cost, np.array_split(np.arange(n), ranks)))
        results["llm_tokens"].append(imbalance(cost, balance_costs(tok.tolist(), ranks).ranks))
        results["lpt"].append(imbalance(cost, greedy_lpt(cost.tolist(), ranks).ranks))
        results["kk"].append(imbalance(cost, karmarkar_karp(cost.tolist(), ranks).ranks))
        start = time.perf_counter()
        best = balance_costs(cost.tolist(), ranks)
        millis.append((time.perf_counter() - start) * 1000)
        results["best"].append(best.imbalance)
        start = time.perf_counter()
        equal = balance_costs(cost.tolist(), ranks, per_rank=per_rank)
        millis_equal.append((time.perf_counter() - start) * 1000)
        results["equal"].append(equal.imbalance)
    out = {
        name: {"mean": round(float(np.mean(v)), 4), "worst": round(float(np.max(v)), 4)} for name, v in results.items()
    }
    return {"ranks": ranks, "per_rank": per_rank, "steps": steps, "max_over_mean": out,
            "balance_ms_median": round(float(np.median(millis)), 1),
            "equal_ms_median": round(float(np.median(millis_equal)), 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 64, 512])
    parser.add_argument("--per-rank", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=32768)
    parser.add_argument(
        "--sequences-per-setting", type=int, default=8192, help="steps = this / (ranks * per_rank), >= 4"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "balance.json"))
    args = parser.parse_args()

    dims = ModelDims()
    samples, kinds = make_samples(120_000, args.seed, args.max_tokens)
    sequences = pack(samples, args.max_tokens)
    flops = np.array([sum(sample_flops(s, dims) for s in seq) for seq in sequences])
    tokens = np.array([sum(s.llm_tokens() for s in seq) for seq in sequences], dtype=float)
    print(
        f"{len(samples)} samples ({', '.join(f'{k} {kinds.count(k)}' for k in MIX)}) packed into "
        f"{len(sequences)} sequences of <= {args.max_tokens} tokens; sequence cost / mean: "
        f"p5 {np.percentile(flops, 5) / flops.mean():.2f}, p95 {np.percentile(flops, 95) / flops.mean():.2f}, "
        f"max {flops.max() / flops.mean():.2f}; tokens/mean max {tokens.max() / tokens.mean():.2f}"
    )

    rows = []
    header = (
        f"{'ranks':>5} {'seq/rank':>8} {'steps':>5} | "
        + " | ".join(f"{name:>12}" for name in NAMES)
        + f" | {'ms best':>7} | {'ms equal':>8}"
    )
    print("\nmax/mean rank FLOPs per step, mean (worst) over steps")
    print(header)
    print("-" * len(header))
    for per_rank in args.per_rank:
        for ranks in args.ranks:
            steps = max(4, args.sequences_per_setting // (ranks * per_rank))
            row = run(ranks, per_rank, steps, flops, tokens, args.seed + ranks * 1000 + per_rank)
            rows.append(row)
            cells = " | ".join(f"{r['mean']:.3f} ({r['worst']:.2f})" for r in row["max_over_mean"].values())
            print(f"{ranks:>5} {per_rank:>8} {steps:>5} | {cells} | {row['balance_ms_median']:>7} | "
                  f"{row['equal_ms_median']:>8}")

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "note": "shared 2-core CPU, other jobs running"},
        "settings": {"seed": args.seed, "max_tokens": args.max_tokens, "mix": MIX, "samples": len(samples),
                     "sequences": len(sequences), "model": dims.__dict__},
        "sequence_cost_over_mean": {"p5": round(float(np.percentile(flops, 5) / flops.mean()), 3),
                                    "p95": round(float(np.percentile(flops, 95) / flops.mean()), 3),
                                    "max": round(float(flops.max() / flops.mean()), 3)},
        "results": rows,
        "goal": "best max/mean <= 1.05 at 8, 64 and 512 ranks",
        "load_average": os.getloadavg(),
    }  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
