"""Benchmark: jobs/dedup.py (Spark, local[2]) beside datasketch.MinHashLSH in one process.

    python bench/dedup.py                       # 10k and 100k documents
    python bench/dedup.py --sizes 10000,100000,1000000 --datasketch-max 1000000
    python bench/dedup.py --sizes 100000 --ours-hashes token,sha1 --output bench/results/dedup_sha1.json

For each size a corpus of ~3 KB English-like documents (Zipf word frequencies) is generated
streaming into shards (never held in memory), with planted near-duplicates: 10% of documents are
copies of an earlier original with 1-12 word edits (exact Jaccard 0.98 down to ~0.78 with 5-word
shingles). Both systems get the same documents and parameters (threshold, num_perm, seed, 5-word
shingles of the same normalised tokens). Measured:

* ours: wall time of `spark-submit --master local[2] jobs/dedup.py` with the JVM options the
  Makefile gives jobs (log configuration; the quick JIT compiler only, unless --jit tiered; the
  class-data-sharing archive of `make spark-cds` unless --cds off; `both` runs either way) (JVM start, reading shards,
  near-text dedup, writing shards, rejects and funnel, JVM stop), i.e. end to end; exact_dedup and
  image_dedup are switched off since datasketch does neither. The job's own phase timings are
  kept as the profile. `--ours-hashes token,sha1` also runs it with near_dedup.hash=sha1, whose
  signatures equal datasketch's default ones;
* datasketch: one Python process reading the same shards, shingling, MinHash.generator (its bulk
  path: one permutation set), default hashfunc (SHA-1) and scheme, MinHashLSH.insert for all,
  then query for all (candidate pairs);
* recall: planted pairs with Jaccard >= threshold + 0.1 found (same cluster / candidate pair);
  precision: reported pairs (ours: rejected row -> kept row; datasketch: candidate pairs) with
  exact Jaccard >= threshold.

The load average is recorded before and after every measurement: on a shared machine a loaded
run is repeated rather than reported. Not a test: prints a table and writes bench/results/dedup.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from hostinfo import cpu_model  # bench/ is on sys.path: scripts run as python bench/X.py
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
            pq.write_table(
                schema.rows_to_table(rows),
                folder / f"part-{shard:05d}.parquet",
                compression="zstd",
                row_group_size=1024,
            )
            rows, shard = [], shard + 1
    if rows:
        pq.write_table(
            schema.rows_to_table(rows), folder / f"part-{shard:05d}.parquet", compression="zstd", row_group_size=1024
        )
    shards = [{"path": f.name} for f in sorted(folder.glob("part-*.parquet"))]
    (folder / "_manifest.json").write_text(
        json.dumps({"rows": n_docs, "shards": shards, "generated_by": "bench/dedup.py"})
    )
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
    return {
        i: m[0]["content"][0]["text"]
        for i, m in zip(data.column("id").to_pylist(), data.column("messages").to_pylist())
    }


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
    return {
        "recall": recall,
        "precision": good / max(1, len(reported)),
        "pairs_reported": len(reported),
        "pairs_similar": len(similar),
    }


CDS_ARCHIVE = ROOT / ".spark-cds" / "spark.jsa"  # made by `make spark-cds` (part of `make setup`)


def submit_opts(cds: bool, tiered: bool = False) -> str:
    """The JVM options the Makefile gives Spark jobs: its log configuration, the quick JIT compiler
    only (unless `tiered`: the JVM's default, with the optimising compiler) and, when asked for and
    made, the class-data-sharing archive."""
    opts = f"-Dlog4j2.configurationFile={ROOT / 'configs' / 'spark' / 'log4j2.properties'}"
    if not tiered:
        opts += " -XX:TieredStopAtLevel=1"
    if cds:
        opts += f" -XX:SharedArchiveFile={CDS_ARCHIVE} -Xlog:cds=off -Xlog:cds+dynamic=off"
    return opts


def run_ours(
    folder: Path,
    out: Path,
    threshold: float,
    num_perm: int,
    hash_name: str = "token",
    cds: bool = True,
    tiered: bool = False,
) -> tuple[float, dict]:
    """(wall seconds of the whole spark-submit, the job's phase timings)."""
    env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_SUBMIT_OPTS": submit_opts(cds, tiered),
    }
    cmd = [
        str(Path(sys.executable).parent / "spark-submit"),
        "--master",
        "local[2]",
        "--driver-memory",
        "6g",
        "--conf",
        "spark.sql.shuffle.partitions=8",
        str(ROOT / "jobs" / "dedup.py"),
        f"input={folder}",
        f"output={out}",
        f"near_dedup.threshold={threshold}",
        f"near_dedup.num_perm={num_perm}",
        f"near_dedup.hash={hash_name}",
        "exact_dedup.enabled=false",
        "image_dedup.enabled=false",
        "card=false",
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, check=False, env=env, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"jobs/dedup.py failed ({proc.returncode})")
    return seconds, job_phases(proc.stdout + proc.stderr, seconds)


def job_phases(log: str, total: float) -> dict:
    """Seconds per phase from the job's progress lines; `other` is JVM start and stop, planning."""
    phases = {}
    for line in re.split(r"[\r\n]", log):
        if m := re.search(
            r"near_dedup: (signatures|candidate pairs|confirmed pairs|connected components|duplicates chosen).* in ([\d.]+)s",
            line,
        ):
            phases[m.group(1)] = float(m.group(2))
        elif m := re.search(r"\] (running .*|funnel|shards|rejects): ([\d.]+)s", line):
            phases["writer: " + m.group(1)] = float(m.group(2))
    phases["other (JVM start/stop, planning)"] = total - sum(phases.values())
    return {k: round(v, 1) for k, v in phases.items()}


def ours_pairs(out: Path) -> set[frozenset]:
    rejects = pq.ParquetDataset(sorted((out / "_rejects").glob("part-*.parquet"))).read().to_pylist()
    return {frozenset((r["id"], r["detail"])) for r in rejects if r["reason"] == "near_duplicate"}


def run_datasketch(folder: Path, threshold: float, num_perm: int) -> tuple[float, set[frozenset]]:
    """datasketch as its documentation recommends for many documents: MinHash.generator (one
    permutation set, copied per document), its default hashfunc (SHA-1) and scheme, MinHashLSH."""
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    ids: list[str] = []

    def shingle_lists():
        seen = set()
        for file in sorted(folder.glob("part-*.parquet")):
            table = pq.read_table(file, columns=["id", "messages"])
            for doc_id, messages in zip(table.column("id").to_pylist(), table.column("messages").to_pylist()):
                if doc_id in seen:  # an exact copy (same content id) is one document, as in ours
                    continue
                seen.add(doc_id)
                ids.append(doc_id)
                text = "\n".join(p["text"] for m in messages for p in m["content"] if p["type"] == "text")
                yield [s.encode("utf-8") for s in shingles(text)]

    sketches = list(MinHash.generator(shingle_lists(), num_perm=num_perm, seed=1))
    for doc_id, m in zip(ids, sketches):
        lsh.insert(doc_id, m)
    pairs = set()
    for doc_id, m in zip(ids, sketches):
        for other in lsh.query(m):
            if other != doc_id:
                pairs.add(frozenset((doc_id, other)))
    return time.perf_counter() - start, pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--datasketch-max", type=int, default=1_000_000, help="largest size datasketch runs at")
    ap.add_argument("--systems", default="ours,datasketch", help="which to run: ours, datasketch or both")
    ap.add_argument("--ours-hashes", default="token", help="near_dedup.hash values to run ours with: token, sha1")
    ap.add_argument(
        "--cds",
        choices=["on", "off", "both"],
        default="on",
        help="Spark JVM with the class-data-sharing archive of `make spark-cds` (on), without (off), or both",
    )
    ap.add_argument(
        "--jit",
        choices=["c1", "tiered", "both"],
        default="c1",
        help="Spark JVM with the quick JIT compiler only, as the Makefile runs jobs (c1), the JVM's default "
        "tiered compilation (tiered), or both",
    )
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--workdir", default="/tmp/keyeforge_bench_dedup")
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "dedup.json"))
    args = ap.parse_args()
    work = Path(args.workdir)
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "spark_master": "local[2]",
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
    }
    if args.cds != "off" and not CDS_ARCHIVE.exists():
        raise SystemExit(f"{CDS_ARCHIVE} is missing: run `make spark-cds` first, or pass --cds off")
    machine["spark_cds_archive"] = args.cds
    machine["spark_jit"] = args.jit
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        corpus = work / f"corpus_{n}"
        t0 = time.perf_counter()
        planted = generate(corpus, n)
        gen_s = time.perf_counter() - t0
        truth = truth_pairs(planted["groups"], planted["texts"])
        print(f"[{n}] generated in {gen_s:.0f}s; {len(truth)} planted pairs", flush=True)

        row: dict = {"docs": n}
        variants = [
            (h, cds, tiered)
            for h in args.ours_hashes.split(",")
            for cds in {"on": [True], "off": [False], "both": [True, False]}[args.cds]
            for tiered in {"c1": [False], "tiered": [True], "both": [False, True]}[args.jit]
        ]
        for hash_name, cds, tiered in variants if "ours" in args.systems else []:
            key = (
                "ours"
                + ("" if hash_name == "token" else f"_{hash_name}")
                + ("" if cds or args.cds == "off" else "_no_cds")
                + ("_tiered" if tiered and args.jit == "both" else "")
            )
            out = work / f"out_{n}"
            load_before = os.getloadavg()
            ours_s, profile = run_ours(corpus, out, args.threshold, args.num_perm, hash_name, cds, tiered)
            load_after = os.getloadavg()
            rejects = pq.ParquetDataset(sorted((out / "_rejects").glob("part-*.parquet"))).read().to_pylist()
            root = {r["id"]: r["detail"] for r in rejects if r["reason"] == "near_duplicate"}

            def ours_same(a, b, root=root):  # same cluster: both map to one kept row
                return root.get(a, a) == root.get(b, b)

            quality = score(ours_pairs(out), ours_same, truth, planted["texts"], corpus, args.threshold)
            row.update(
                {
                    f"{key}_s": ours_s,
                    f"{key}_docs_per_s": n / ours_s,
                    **{f"{key}_{k}": v for k, v in quality.items()},
                    f"{key}_profile_s": profile,
                    f"{key}_load": [load_before[0], load_after[0]],
                }
            )
            print(f"[{n}] {key}: {ours_s:.1f}s {profile} load {load_before[0]:.2f} -> {load_after[0]:.2f}", flush=True)
        if "datasketch" in args.systems and n <= args.datasketch_max:
            load_before = os.getloadavg()
            ds_s, ds_pairs = run_datasketch(corpus, args.threshold, args.num_perm)
            load_after = os.getloadavg()

            def ds_same(a, b, ds_pairs=ds_pairs):  # a candidate pair of the LSH index
                return frozenset((a, b)) in ds_pairs

            quality = score(ds_pairs, ds_same, truth, planted["texts"], corpus, args.threshold)
            row.update(
                {
                    "datasketch_s": ds_s,
                    "datasketch_docs_per_s": n / ds_s,
                    **{f"datasketch_{k}": v for k, v in quality.items()},
                    "datasketch_load": [load_before[0], load_after[0]],
                }
            )
            if "ours_s" in row:
                row["speedup"] = ds_s / row["ours_s"]
            print(f"[{n}] datasketch: {ds_s:.1f}s load {load_before[0]:.2f} -> {load_after[0]:.2f}", flush=True)
        results.append(row)
        _print_table(results)
        report = {"machine": machine, "threshold": args.threshold, "num_perm": args.num_perm, "results": results}
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    if len(results) > 1 and all("ours_s" in r for r in results[-2:]):
        base, last = results[-2], results[-1]
        ratio = base["ours_docs_per_s"] / last["ours_docs_per_s"]
        print(f"per-document cost {last['docs']} vs {base['docs']}: {ratio:.2f}x")


def _print_table(results: list[dict]) -> None:
    head = f"{'docs':>9} {'ours docs/s':>12} {'datasketch docs/s':>18} {'speedup':>8} {'ours R/P':>12} {'datasketch R/P':>15}"
    print(head)
    for r in results:
        ours = f"{r['ours_docs_per_s']:.0f}" if "ours_s" in r else "-"
        ours_rp = f"{r['ours_recall']:.3f}/{r['ours_precision']:.3f}" if "ours_s" in r else "-"
        ds = f"{r['datasketch_docs_per_s']:.0f}" if "datasketch_s" in r else "-"
        sp = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        dsrp = f"{r['datasketch_recall']:.3f}/{r['datasketch_precision']:.3f}" if "datasketch_s" in r else "-"
        print(f"{r['docs']:>9} {ours:>12} {ds:>18} {sp:>8} {ours_rp:>12} {dsrp:>15}")
        if "ours_sha1_s" in r:
            print(f"{'':>9} {r['ours_sha1_docs_per_s']:>12.0f} (ours with hash=sha1, datasketch's default signatures)")
        if "ours_no_cds_s" in r:
            print(f"{'':>9} {r['ours_no_cds_docs_per_s']:>12.0f} (ours without the JVM class archive)")


if __name__ == "__main__":
    main()
