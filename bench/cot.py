"""Benchmark (not a test): synthetic reasoning samples per second per core (synthesis.reasoning).

    python bench/cot.py [--seeds 30] [--repeats 3] [--sandbox bwrap]

In one single-threaded process (so each figure is per core), for every task kind and both
languages over --seeds seeds (seeds 50_000 on: not those the tests use):
  * generate      make_task: draw the image, the question, answer, reasoning, agentic code;
  * rows          a generated task written as think, no_think and auto_think vqa rows, an rl row
                  and a preference row (formatting only: what each sample costs beyond generating);
  * agentic       make_task + an agentic row: the code run in synthesis.sandbox (bubblewrap, or
                  --sandbox unsafe_subprocess), its output and saved images in the row;
  * check         check_task, the independent check (connected components, RapidOCR, bar heights);
  * pipeline      what the job does for one sample: generate, check, and one row, the mode cycled
                  think / no_think / auto_think / agentic — "samples per second per core";
and the share of tasks the check confirmed. Best of --repeats for the cheap stages (the machine is
shared); the check and pipeline stages run once over all seeds. Prints a table and writes
bench/results/cot.json with the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2
from hostinfo import cpu_model  # noqa: E402

from synthesis.reasoning import (
    LANGS,
    TASK_KINDS,
    ModeTemplates,
    check_task,
    make_task,
    mode_row,
    preference_row,
    rl_row,
)

SEED_BASE = 50_000
CYCLE = ("think", "no_think", "auto_think", "agentic")


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_at_start": list(os.getloadavg()),
    }


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn, items, repeats: int) -> float:
    """Best items/s of `repeats` passes of fn over items."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = max(best, rate(len(items), time.perf_counter() - start))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=30, help="seeds per kind and language")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sandbox", choices=["bwrap", "unsafe_subprocess"], default="bwrap")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cot.json"))
    args = ap.parse_args()
    cv2.setNumThreads(1)
    from synthesis.sandbox import run_python

    def sandbox(code, files):
        return run_python(code, files=files, mode=args.sandbox)

    templates = ModeTemplates.load()
    info = machine()
    for kind in TASK_KINDS:  # warm font caches and the OCR engine
        check_task(make_task(kind, 0, "zh"))
    results: dict = {}
    for kind in TASK_KINDS:
        keys = [(seed, lang) for seed in range(SEED_BASE, SEED_BASE + args.seeds) for lang in LANGS]
        tasks = [make_task(kind, seed, lang) for seed, lang in keys]
        generate = timed(lambda k, kind=kind: make_task(kind, *k), keys, args.repeats)

        def rows(task):
            for mode in ("think", "no_think", "auto_think"):
                mode_row(task, mode, templates)
            rl_row(task, "think")
            preference_row(task, "think", templates, "wrong_answer")

        rows_rate = timed(rows, tasks, args.repeats) * 5  # five rows per task
        agentic_keys = keys[: max(4, len(keys) // 4)]
        agentic = timed(
            lambda k, kind=kind: mode_row(make_task(kind, *k), "agentic", templates, sandbox_run=sandbox),
            agentic_keys,
            1,
        )
        start, confirmed, failures = time.perf_counter(), 0, []
        for task in tasks:
            ok, how = check_task(task)
            confirmed += ok
            if not ok:
                failures.append(f"{task.lang} seed {task.seed}: {how}")
        check = rate(len(tasks), time.perf_counter() - start)
        start, made = time.perf_counter(), 0
        for i, (seed, lang) in enumerate(keys):
            task = make_task(kind, seed, lang)
            if check_task(task)[0]:
                mode_row(task, CYCLE[i % len(CYCLE)], templates, sandbox_run=sandbox)
                made += 1
        pipeline = rate(len(keys), time.perf_counter() - start)
        results[kind] = {
            "tasks": len(keys),
            "generate_per_s": round(generate, 1),
            "format_rows_per_s": round(rows_rate, 1),
            "agentic_rows_per_s": round(agentic, 2),
            "check_per_s": round(check, 2),
            "pipeline_samples_per_s": round(pipeline, 2),
            "confirmed": confirmed,
            "confirmed_share": round(confirmed / len(keys), 4),
            "failures": failures[:10],
        }
        print(f"{kind}: {results[kind]}", file=sys.stderr, flush=True)
    # a mixture with equal shares of the kinds: harmonic mean of the per-kind rates
    overall = {
        name: round(len(TASK_KINDS) / sum(1 / r[name] for r in results.values()), 2)
        for name in ("generate_per_s", "agentic_rows_per_s", "check_per_s", "pipeline_samples_per_s")
    }
    info["load_avg_at_end"] = list(os.getloadavg())
    out = {
        "machine": info,
        "settings": {
            "seeds_per_kind_and_language": args.seeds,
            "repeats": args.repeats,
            "sandbox": args.sandbox,
            "threads_per_process": 1,
            "seed_base": SEED_BASE,
        },
        "per_kind": results,
        "equal_mix": overall,
    }
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_avg_at_start'][0]:.1f} at start, "
        f"{info['load_avg_at_end'][0]:.1f} at end; per core (1 thread); sandbox {args.sandbox}"
    )
    head = ("kind", "generate/s", "rows/s", "agentic rows/s", "checks/s", "samples/s", "confirmed")
    print("| " + " | ".join(head) + " |\n|" + "|".join("---" for _ in head) + "|")
    for kind, r in [*results.items(), ("equal mix", {**overall, "format_rows_per_s": None, "confirmed": None})]:
        confirmed = (
            f"{r['confirmed']}/{r['tasks']}"
            if r.get("confirmed") is not None
            else f"{sum(x['confirmed'] for x in results.values())}/{sum(x['tasks'] for x in results.values())}"
        )
        rows_cell = f"{r['format_rows_per_s']:.0f}" if r["format_rows_per_s"] else "-"
        print(
            f"| {kind} | {r['generate_per_s']:.1f} | {rows_cell} | {r['agentic_rows_per_s']:.2f} | "
            f"{r['check_per_s']:.2f} | {r['pipeline_samples_per_s']:.2f} | {confirmed} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
