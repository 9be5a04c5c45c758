"""Benchmark: jobs/dedup.py (Spark, local[2]) beside datasketch.MinHashLSH in one process.

    python bench/dedup.py                       # 10k and 100k documents
    python bench/dedup.py --sizes 10000,100000,1000000 --datasketch-max 100000
    python bench/dedup.py --sizes 1000000 --systems datasketch --datasketch-max 1000000 \
        --output bench/results/dedup_1m_datasketch.json

For each size a corpus of ~3 KB English-like documents (Zipf word frequencies) is generated
streaming into shards (never held in memory), with planted near-duplicates: 10% of documents are
copies of an earlier original with 1-12 word edits (exact Jaccard 0.98 down to ~0.78 with 5-word
shingles). Both systems get the same documents and parameters (threshold, num_perm, 5-word
shingles). Measured:

* ours: wall time of `spark-submit --master local[2] jobs/dedup.py` (JVM start, reading shards,
  near-text dedup, writing shards, rejects and funnel), i.e. end to end; exact_dedup and
  image_dedup are switched off since datasketch does neither;
* datasketch: one Python process reading the same shards, shingling, MinHash.update_batch,
  MinHashLSH.insert for all, then query for all (candidate pairs);
* recall: planted pairs with Jaccard >= threshold + 0.1 found (same cluster / candidate pair);
  precision: reported pairs (ours: rejected row -> kept row; datasketch: candidate pairs) with
  exact Jaccard >= threshold.

Not a test: prints a table and writes bench/results/dedup.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation import schema
from curation.dedup.shingles import jaccard, shingles

WORDS_PER_DOC = 500  # ~3 KB of text
DUP_RATE = 0.10
SHARD_DOCS = 20_000


def vocabulary(rng: np.random.Generator, size: int = 50_000) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, size)
    words = {"".join(rng.choice(letters, n)) for n in lengths}
    return np.array(sorted(words))


def generate(folder: Path, n_docs: int, seed: int = 0) -> dict:
    """Write the corpus shards; return the planted groups {original id: [copy ids]} and the
    texts of every document in a planted group (for exact Jaccard)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))
    cdf /= cdf[-1]
    originals: list[tuple[str, list[str]]] = []  # recent originals a copy can be made from
    groups: dict[str, list[str]] = {}
    texts: dict[str, str] = {}
    rows, shard = [], 0
    for i in range(n_docs):
        if originals and rng.random() < DUP_RATE:
            orig_id, words = originals[int(rng.integers(len(originals)))]
            words = list(words)
            for _ in range(int(rng.integers(1, 13))):
                pos = int(rng.integers(len(words)))
                op = rng.integers(3)
                if op == 0:
                    words[pos] = vocab[np.searchsorted(cdf, rng.random())]
                elif op == 1:
                    del words[pos]
                else:
                    words.insert(pos, vocab[np.searchsorted(cdf, rng.random())])
            text = " ".join(words)
            row = _row(text, i)
            groups.setdefault(orig_id, []).append(row["id"])
            texts[row["id"]] = text
        else:
            words = vocab[np.searchsorted(cdf, rng.random(WORDS_PER_DOC))].tolist()
            text = " ".join(words)
            row = _row(text, i)
            if len(originals) < 20_000:
                originals.append((row["id"], words))
                texts[row["id"]] = text
            elif rng.random() < 0.05:  # keep a bounded pool of originals (memory stays flat)
                slot = int(rng.integers(len(originals)))
                evicted = originals[slot][0]
                if evicted not in groups:  # its text is ground truth only if it has copies
                    texts.pop(evicted, None)
                originals[slot] = (row["id"], words)
                texts[row["id"]] = text
        rows.append(row)
        if len(rows) == SHARD_DOCS:
            pq.write_table(schema.rows_to_table(rows), folder / f"part-{shard:05d}.parquet", compression="zstd", row_group_size=1024)
            rows, shard = [], shard + 1
    if rows:
        pq.write_table(schema.rows_to_table(rows), folder / f"part-{shard:05d}.parquet", compression="zstd", row_group_size=1024)
    (folder / "_manifest.json").write_text(json.dumps({"rows": n_docs, "generated_by": "bench/dedup.py"}))
    # Only texts of planted groups are kept for ground truth.
    members = set(groups) | {c for cs in groups.values() for c in cs}
    return {"groups": groups, "texts": {k: v for k, v in texts.items() if k in members}}


def _row(text: str, i: int) -> dict:
    return schema.make_row("bench", "text", [schema.message("document", text)], extra={"origin": f"doc{i}"})


def truth_pairs(groups: dict, texts: dict) -> dict[frozenset, float]:
    out = {}
    for orig, copies in groups.items():
        members = [orig, *copies]
        sets = {m: shingles(texts[m]) for m in members}
        for a, b in itertools.combinations(members, 2):
            if a != b:  # an edit that changed nothing gives the same content id: not a pair
                out[frozenset((a, b))] = jaccard(sets[a], sets[b])
    return out


def read_texts(folder: Path, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    data = pds.dataset(sorted(folder.glob("part-*.parquet"))).to_table(
        columns=["id", "messages"], filter=pds.field("id").isin(pa.array(sorted(ids)))
    )
    return {i: m[0]["content"][0]["text"] for i, m in zip(data.column("id").to_pylist(), data.column("messages").to_pylist())}


def score(reported: set[frozenset], clusters_same, truth: dict, texts: dict, folder: Path, threshold: float) -> dict:
    similar = [p for p, j in truth.items() if j >= threshold + 0.1]
    recall = sum(clusters_same(*tuple(p)) for p in similar) / max(1, len(similar))
    unknown = {x for p in reported if p not in truth for x in p} - set(texts)
    extra = read_texts(folder, unknown)
    good = 0
    for p in reported:
        if p in truth:
            good += truth[p] >= threshold
        else:
            a, b = tuple(p)
            good += jaccard(shingles(texts.get(a) or extra[a]), shingles(texts.get(b) or extra[b])) >= threshold
    return {"recall": recall, "precision": good / max(1, len(reported)), "pairs_reported": len(reported), "pairs_similar": len(similar)}


def run_ours(folder: Path, out: Path, threshold: float, num_perm: int) -> tuple[float, Path]:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cmd = [
        str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]", "--driver-memory", "6g",
        "--conf", "spark.sql.shuffle.partitions=8", "--conf", "spark.ui.showConsoleProgress=false",
        str(ROOT / "jobs" / "dedup.py"), f"input={folder}", f"output={out}",
        f"near_dedup.threshold={threshold}", f"near_dedup.num_perm={num_perm}",
        "exact_dedup.enabled=false", "image_dedup.enabled=false", "card=false",
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return time.perf_counter() - start, out


def ours_pairs(out: Path) -> set[frozenset]:
    rejects = pq.ParquetDataset(sorted((out / "_rejects").glob("part-*.parquet"))).read().to_pylist()
    return {frozenset((r["id"], r["detail"])) for r in rejects if r["reason"] == "near_duplicate"}


def run_datasketch(folder: Path, threshold: float, num_perm: int) -> tuple[float, set[frozenset]]:
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sketches = []
    for file in sorted(folder.glob("part-*.parquet")):
        table = pq.read_table(file, columns=["id", "messages"])
        for doc_id, messages in zip(table.column("id").to_pylist(), table.column("messages").to_pylist()):
            text = "\n".join(p["text"] for m in messages for p in m["content"] if p["type"] == "text")
            if doc_id in lsh:  # an exact copy (same content id) is one document, as in ours
                continue
            m = MinHash(num_perm=num_perm, seed=1)
            m.update_batch([s.encode("utf-8") for s in shingles(text)])
            lsh.insert(doc_id, m)
            sketches.append((doc_id, m))
    pairs = set()
    for doc_id, m in sketches:
        for other in lsh.query(m):
            if other != doc_id:
                pairs.add(frozenset((doc_id, other)))
    return time.perf_counter() - start, pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--datasketch-max", type=int, default=100_000, help="largest size datasketch runs at")
    ap.add_argument("--systems", default="ours,datasketch", help="which to run: ours, datasketch or both")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--workdir", default="/tmp/keyeforge_bench_dedup")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "dedup.json"))
    args = ap.parse_args()
    work = Path(args.workdir)
    machine = {
        "cpu": _cpu_name(), "cores": os.cpu_count(), "spark_master": "local[2]",
        "load_average_at_start": os.getloadavg(), "python": platform.python_version(),
    }
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        corpus = work / f"corpus_{n}"
        t0 = time.perf_counter()
        planted = generate(corpus, n)
        gen_s = time.perf_counter() - t0
        truth = truth_pairs(planted["groups"], planted["texts"])
        print(f"[{n}] generated in {gen_s:.0f}s; {len(truth)} planted pairs", flush=True)

        row = {"docs": n}
        if "ours" in args.systems:
            ours_s, out = run_ours(corpus, work / f"out_{n}", args.threshold, args.num_perm)
            pairs = ours_pairs(out)
            rejects = pq.ParquetDataset(sorted((out / "_rejects").glob("part-*.parquet"))).read().to_pylist()
            root = {r["id"]: r["detail"] for r in rejects if r["reason"] == "near_duplicate"}

            def ours_same(a, b, root=root):  # same cluster: both map to one kept row
                return root.get(a, a) == root.get(b, b)

            quality = score(pairs, ours_same, truth, planted["texts"], corpus, args.threshold)
            row.update({"ours_s": ours_s, "ours_docs_per_s": n / ours_s, **{f"ours_{k}": v for k, v in quality.items()}})
            print(f"[{n}] ours: {ours_s:.1f}s", flush=True)
        if "datasketch" in args.systems and n <= args.datasketch_max:
            ds_s, ds_pairs = run_datasketch(corpus, args.threshold, args.num_perm)
            def ds_same(a, b, ds_pairs=ds_pairs):  # a candidate pair of the LSH index
                return frozenset((a, b)) in ds_pairs

            row.update({"datasketch_s": ds_s, "datasketch_docs_per_s": n / ds_s, **{f"datasketch_{k}": v for k, v in score(ds_pairs, ds_same, truth, planted["texts"], corpus, args.threshold).items()}})
            if "ours_s" in row:
                row["speedup"] = ds_s / row["ours_s"]
            print(f"[{n}] datasketch: {ds_s:.1f}s", flush=True)
        results.append(row)
        _print_table(results)
        Path(args.output).write_text(json.dumps({"machine": machine, "threshold": args.threshold, "num_perm": args.num_perm, "results": results}, indent=2) + "\n")
    if len(results) > 1 and all("ours_s" in r for r in results[-2:]):
        base = results[-2]
        print(f"per-document cost {results[-1]['docs']} vs {base['docs']}: {base['ours_docs_per_s'] / results[-1]['ours_docs_per_s']:.2f}x")


def _print_table(results: list[dict]) -> None:
    print(f"{'docs':>9} {'ours docs/s':>12} {'datasketch docs/s':>18} {'speedup':>8} {'ours R/P':>12} {'datasketch R/P':>15}")
    for r in results:
        ours = f"{r['ours_docs_per_s']:.0f}" if "ours_s" in r else "-"
        ours_rp = f"{r['ours_recall']:.3f}/{r['ours_precision']:.3f}" if "ours_s" in r else "-"
        ds = f"{r['datasketch_docs_per_s']:.0f}" if "datasketch_s" in r else "-"
        sp = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        dsrp = f"{r['datasketch_recall']:.3f}/{r['datasketch_precision']:.3f}" if "datasketch_s" in r else "-"
        print(f"{r['docs']:>9} {ours:>12} {ds:>18} {sp:>8} {ours_rp:>12} {dsrp:>15}")


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    main()
