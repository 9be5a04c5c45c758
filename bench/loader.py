"""Throughput and padding of the trainer's data path on one core (a benchmark, not a test).

    python bench/loader.py [--folder out/loader_demo] [--max-tokens 4096 8192] [--epochs 3]

Runs over a shard folder (default: the demo shards that
`PYSPARK_PYTHON=$PWD/.venv/bin/python .venv/bin/python jobs/build_pretrain.py output=out/loader_demo`
builds), with torch and the tokenizer held to one thread, three passes per setting:

    reader      ShardReader alone (Parquet row groups -> row dicts, mixing, shuffle buffer)
    +processor  ... -> KeyeProcessor (chat template, tokenizer, image decode/resize/patches, 3D positions)
    +packer     ... -> DataPipeline (truncation policy, rolling FFD, packed tensors): what training gets

Rates are per CPU-second of this process (`time.process_time`), i.e. per core, so they stay
meaningful on a shared machine; wall-clock rates are reported next to them. Tokens are LLM tokens
(text + merged vision tokens). Padding is (max_tokens - used) / max_tokens over the emitted
sequences: "steady" counts the sequences made while rows were still coming (what a streaming run
sees), "all" adds the partly filled ones flushed when the data ended. Prints a table and writes
bench/results/loader.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core: no tokenizer thread pool

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.data import DataPipeline, ShardReader
from training.processor import KeyeProcessor


class Clock:
    def __enter__(self):
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu, self.wall = time.process_time() - self.cpu, time.perf_counter() - self.wall


def rates(name: str, samples: int, tokens: int, clock: Clock) -> dict:
    return {
        "stage": name,
        "samples": samples,
        "tokens": tokens,
        "cpu_s": round(clock.cpu, 3),
        "wall_s": round(clock.wall, 3),
        "samples_per_cpu_s": round(samples / clock.cpu, 1),
        "tokens_per_cpu_s": round(tokens / clock.cpu),
        "samples_per_wall_s": round(samples / clock.wall, 1),
        "tokens_per_wall_s": round(tokens / clock.wall),
    }


def run(folder: str, processor: KeyeProcessor, max_tokens: int, epochs: int, seed: int) -> dict:
    def reader() -> ShardReader:
        return ShardReader([folder], seed=seed, epochs=epochs)

    with Clock() as clock:
        rows = sum(1 for _ in reader())
    stages = [rates("reader", rows, 0, clock)]

    with Clock() as clock:
        tokens = sum(len(processor(row).input_ids) for row in reader())
    stages.append(rates("+processor", rows, tokens, clock))

    pipeline = DataPipeline(reader(), processor, max_tokens=max_tokens)
    steady = Counter()
    with Clock() as clock:
        for batch in pipeline:
            if not pipeline.draining:
                steady.update(sequences=1, used=batch.real_tokens)
    totals = pipeline.totals
    stages.append(rates("+packer", totals["samples"], totals["real_tokens"], clock))
    slots = steady["sequences"] * max_tokens
    return {
        "max_tokens": max_tokens,
        "epochs": epochs,
        "rows": rows,
        "mean_tokens_per_sample": round(tokens / rows, 1),
        "sequences": totals["sequences"],
        "samples_per_sequence": round(totals["samples"] / totals["sequences"], 1),
        "padding_steady": round(1 - steady["used"] / slots, 5) if slots else None,
        "padding_all": round(pipeline.padding_fraction, 5),
        "skipped": dict(pipeline.skipped),
        "truncated": totals["truncated"],
        "stages": stages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", default=str(ROOT / "out" / "loader_demo"))
    parser.add_argument("--max-tokens", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--epochs", type=int, default=3, help="passes over the folder per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "loader.json"))
    args = parser.parse_args()
    if not (Path(args.folder) / "_manifest.json").is_file():
        sys.exit(
            f"no shard folder at {args.folder}; build the demo shards with\n"
            "  PYSPARK_PYTHON=$PWD/.venv/bin/python .venv/bin/python jobs/build_pretrain.py output=out/loader_demo"
        )
    torch.set_num_threads(1)
    processor = KeyeProcessor()
    results = [run(args.folder, processor, m, args.epochs, args.seed) for m in args.max_tokens]

    print(f"\n{args.folder}: one core, {args.epochs} epochs per setting")
    header = (
        f"{'max_tok':>7} {'stage':<10} {'samples':>7} {'samples/s':>9} {'tokens/s':>9} "
        f"{'(wall s/s)':>10} {'(wall tok/s)':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for s in r["stages"]:
            tokens = f"{s['tokens_per_cpu_s']:>9}" if s["tokens"] else f"{'-':>9}"
            wall_tokens = f"{s['tokens_per_wall_s']:>12}" if s["tokens"] else f"{'-':>12}"
            print(
                f"{r['max_tokens']:>7} {s['stage']:<10} {s['samples']:>7} {s['samples_per_cpu_s']:>9} {tokens} "
                f"{s['samples_per_wall_s']:>10} {wall_tokens}"
            )
    print("\npadding (max_tokens - used) / max_tokens")
    print(f"{'max_tok':>7} {'sequences':>9} {'samples/seq':>11} {'steady':>8} {'all':>8}  skipped")
    for r in results:
        print(
            f"{r['max_tokens']:>7} {r['sequences']:>9} {r['samples_per_sequence']:>11} "
            f"{r['padding_steady']:>8.2%} {r['padding_all']:>8.2%}  {r['skipped'] or '-'}"
        )

    result = {
        "benchmark": "loader",
        "folder": os.path.relpath(args.folder, ROOT),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": 1,
            "load_average_1min": round(os.getloadavg()[0], 2),
            "note": "shared 2-core CPU, other jobs running; rates per CPU-second of one process",
        },
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
