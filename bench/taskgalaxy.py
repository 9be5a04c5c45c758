"""Tagging throughput: rows per second per core of TaskGalaxy tagging (question text embedded and
matched against every leaf of the taxonomy) beside sentence-transformers embedding the same texts
directly, one process, all-MiniLM-L6-v2 on the CPU.

    python bench/taskgalaxy.py [--rows 5000] [--threads 1]

Texts: the tests' labelled questions with varied numbers and objects, so no two are equal.
Writes bench/results/taskgalaxy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "taskgalaxy"))

from hostinfo import cpu_model  # noqa: E402


def texts(n: int) -> list[str]:
    from labelled_questions import LABELLED

    rng = random.Random(0)
    things = ["apples", "chairs", "cars", "birds", "books", "cups", "trees", "boxes"]
    return [f"{LABELLED[i % len(LABELLED)][0]} ({rng.choice(things)} {rng.randint(1, 999)})" for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from taskgalaxy.embed import text_embedder
    from taskgalaxy.tagging import TypeIndex
    from taskgalaxy.taxonomy import Taxonomy

    data = texts(args.rows)
    embedder = text_embedder()
    t0 = time.perf_counter()
    index = TypeIndex(Taxonomy.load(), embedder)
    setup = time.perf_counter() - t0
    embedder.encode(data[:64])  # warm-up
    t0 = time.perf_counter()
    embedder.encode(data)
    direct = time.perf_counter() - t0
    t0 = time.perf_counter()
    for start in range(0, len(data), 256):  # the step's batches
        index.tag(data[start:start + 256])
    tagging = time.perf_counter() - t0
    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": args.threads},
        "rows": args.rows, "leaf_types": len(index.paths), "index_seconds": round(setup, 2),
        "sentence_transformers_rows_per_s_per_core": round(args.rows / direct / args.threads, 1),
        "tagging_rows_per_s_per_core": round(args.rows / tagging / args.threads, 1),
    }
    print(json.dumps(result, indent=1))
    (ROOT / "bench" / "results" / "taskgalaxy.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
