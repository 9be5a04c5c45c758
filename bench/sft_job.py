"""`spark-submit jobs/build_sft.py` at real size, then `training.launch stage=sft` on what it wrote.

    python bench/sft_job.py [--rows 6000] [--work out/bench-sft]

Makes a pool of `--rows` question-answer rows, each with a photo-like 640x480 JPEG (bench/photos.py,
~70 KB), skewed over task families as real pools are (half of them counting questions), in contract
shards of 500 rows. A server on 127.0.0.1 in this process (synthesis.model_client.rule_server) plays
the models: TaskGalaxy's writer and three judges for `--generate` images of the pool, and two
solvers for the difficulty step, each answering a question right with a rate fixed by the
question's hash, so pass rates spread over [0, 1]. The job generates, tags, rates difficulty (4
samples x 2 models), balances (cap 300 per type) and writes out/bench-sft/sft; the driver JVM's and Python workers' peak RSS are sampled
(bench/scale.py's sampler). Then two SFT steps of the tiny model read the mixture (peak RSS of the
trainer). Writes bench/results/sft_job.json.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow.parquet as pq  # noqa: E402
from hostinfo import cpu_model  # noqa: E402
from photos import pixels  # noqa: E402
from scale import Sampler, sampled_run  # noqa: E402

from curation import schema  # noqa: E402
from synthesis.model_client.rule_server import RuleServer, completion, user_texts  # noqa: E402

THINGS = ["apples", "people", "cars", "birds", "chairs", "boats", "windows", "books"]
# (share, template): counting dominates, as it does in pools built from detection data
TEMPLATES = [
    (0.50, "How many {t} are there in the picture?"),
    (0.08, "What does the sign next to the {t} say?"),
    (0.07, "Is the {t} to the left or to the right of the table?"),
    (0.06, "What is the highest value in the bar chart about {t}?"),
    (0.05, "What color are the {t} in this photo?"),
    (0.05, "What is the area of the triangle drawn beside the {t}?"),
    (0.04, "What happens next in this video of {t}?"),
    (0.04, "Give the bounding box of the largest of the {t}."),
    (0.04, "Which button should I tap to buy the {t} on this screen?"),
    (0.04, "Why are the {t} wet in this scene?"),
    (0.03, "Write a detailed caption of this photo of {t}."),
]
ROWS_PER_SHARD = 500


def row(index: int) -> dict:
    u = (int(hashlib.sha256(f"q{index}".encode()).hexdigest()[:8], 16) % 10_000) / 10_000
    acc = 0.0
    for share, template in TEMPLATES:
        acc += share
        if u < acc:
            break
    thing = THINGS[index % len(THINGS)]
    question = template.format(t=thing) + f" (#{index})"
    answer = str(index % 17) if template.startswith("How many") else f"{thing} answer {index % 5}"
    buf = io.BytesIO()
    pixels(index, 640, 480).save(buf, format="JPEG", quality=90)
    m = schema.message
    return schema.make_row("bench_pool", "vqa", [m("user", schema.image_part(0), question), m("assistant", answer)],
                           [schema.image_entry(buf.getvalue())])


def _write_shard(args: tuple[str, int, int]) -> int:
    folder, start, stop = args
    rows = [row(i) for i in range(start, stop)]
    pq.write_table(schema.rows_to_table(rows), Path(folder) / f"part-{start // ROWS_PER_SHARD:05d}.parquet")
    return len(rows)


def make_pool(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    todo = [(str(folder), s, min(count, s + ROWS_PER_SHARD)) for s in range(0, count, ROWS_PER_SHARD)
            if not (folder / f"part-{s // ROWS_PER_SHARD:05d}.parquet").exists()]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_write_shard, todo))


def solver_reply(body: dict) -> tuple[int, dict]:
    """The solvers: a question is answered right with probability r(question, model), drawn per
    sample from the request's own hash, so replies are the same on every run."""
    text = " ".join(user_texts(body)).strip()
    if body["model"] in ("writer", "judge-1", "judge-2", "judge-3"):
        return 200, generation_reply(body, text)
    n = int(body.get("n") or 1)
    found = re.search(r"\(#(\d+)\)", text)
    if not found:  # a question the generation path wrote: the solvers cannot tell
        return 200, completion(body, ["\\boxed{I cannot tell}"])
    index = int(found.group(1))
    right = str(index % 17) if text.startswith("How many") else None
    key = hashlib.sha256(f"{body['model']}:{index}".encode()).digest()
    ok = [right is not None and key[1 + k] / 255 < key[0] / 255 for k in range(n)]
    return 200, completion(body, [f"\\boxed{{{right if good else 'I cannot tell'}}}" for good in ok])


def generation_reply(body: dict, text: str) -> dict:
    """TaskGalaxy's models: the filter keeps the first two candidates, the writer writes a
    question, the judges say yes except judge-3 on every third question."""
    if text.startswith("Here are candidate task types"):
        listed = re.findall(r"^- ([^:\n]+):", text, flags=re.M)
        return completion(body, [json.dumps({"task_types": listed[:2]})])
    if text.startswith("Task type:") and "Question:" not in text:
        path = re.search(r"Task type: (\S[^(]*?) \(", text).group(1)
        return completion(body, [json.dumps({"question": f"Which {path.split('~')[-1]} is shown?", "answer": "the left one"})])
    ok = not (body["model"] == "judge-3" and int(hashlib.sha256(text.encode()).hexdigest(), 16) % 3 == 0)
    return completion(body, [json.dumps({"task_type_fits": ok, "question_fits": ok, "answer_correct": ok})])


def generation_counts(out: Path, images: int) -> dict | None:
    """Rows the generation path added to the mixture, and its refusals by reason."""
    if not images:
        return None
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    kept = ds.dataset(sorted(str(f) for f in out.glob("part-*.parquet")), format="parquet").to_table(columns=["source"])
    rejects = ds.dataset(str(out / "_rejects"), format="parquet").to_table(columns=["step", "reason"]).to_pylist()
    refused: dict[str, int] = {}
    for r in rejects:
        if r["step"] == "taskgalaxy_generate":
            refused[r["reason"]] = refused.get(r["reason"], 0) + 1
    return {"images": images, "rows_kept_in_mixture": int(pc.sum(pc.equal(kept.column("source"), "taskgalaxy")).as_py() or 0),
            "refused_by_reason": refused}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--generate", type=int, default=1000, help="images through TaskGalaxy's generation path (0: off)")
    parser.add_argument("--work", default="out/bench-sft")
    parser.add_argument("--out", default="bench/results/sft_job.json")
    args = parser.parse_args()
    work = Path(args.work)
    pool = work / f"pool-{args.rows}"
    t0 = time.perf_counter()
    make_pool(pool, args.rows)
    pool_bytes = sum(p.stat().st_size for p in pool.glob("*.parquet"))
    print(f"pool: {args.rows} rows, {pool_bytes / 2**20:.0f} MiB (made in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)

    out = work / "sft"
    server = RuleServer(solver_reply)
    cmd = [str(ROOT / ".venv" / "bin" / "spark-submit"), "--master", "local[2]", "jobs/build_sft.py", f"sources={pool}",
           f"output={out}", "balance.cap=300", "difficulty.enabled=true", f"difficulty.client.base_urls=[{server.url}]",
           "difficulty.models=[solver-a,solver-b]", "difficulty.samples=4", "difficulty.max_pass_rate=0.75"]
    if args.generate:
        cmd += ["generate.enabled=true", f"generate.max_images={args.generate}", f"generate.llm.base_urls=[{server.url}]",
                "generate.llm.model=writer", f"generate.judge.base_urls=[{server.url}]"]
    load_before = os.getloadavg()
    with server:
        code, seconds, peak = sampled_run(cmd, work / "job.log", [out / "_work"])
    if code != 0:
        raise SystemExit(f"build_sft failed ({code}); see {work / 'job.log'}")
    manifest = json.loads((out / "_manifest.json").read_text())
    steps = {s["step"]: s for s in json.loads((out / "_stats.json").read_text())["steps"]}

    train_out = work / "train"
    train_cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "training.launch", "stage=sft", f"data=[{out}]",
                 f"output={train_out}", "max_steps=2"]
    started = time.perf_counter()
    with open(work / "train.log", "w") as log:
        proc = subprocess.Popen(train_cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        sampler = Sampler(proc.pid, [])
        sampler.start()
        train_code = proc.wait()
        sampler.done.set()
        sampler.join()
    if train_code != 0:
        raise SystemExit(f"training failed ({train_code}); see {work / 'train.log'}")
    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "input": {"rows": args.rows, "bytes": pool_bytes, "images": "640x480 JPEG q90, one a row"},
        "build_sft": {
            "seconds": round(seconds, 1), "rows_per_second": round(args.rows / seconds, 1),
            "rows_kept": manifest["rows"], "rows_rejected": manifest["rejects"]["rows"], "output_bytes": manifest["bytes"],
            "generation": generation_counts(out, args.generate),
            "step_seconds": {name: s.get("seconds") for name, s in steps.items()},
            "difficulty": {k: steps["difficulty"]["stats"][k] for k in ("scored", "unscored", "too_easy", "mean_pass_rate",
                                                                         "pass_rate_histogram")},
            "balance": {k: steps["balance_mixture"]["stats"][k] for k in ("types_in", "types_kept", "rows_in", "rows_kept",
                                                                          "entropy_bits_before", "entropy_bits_after")},
            "model_requests": len(server.requests),
            "peak_rss_mib": {k: round(v / 2**20) for k, v in peak.items() if k != "staging_disk"},
            "peak_work_folder_mib": round(peak["staging_disk"] / 2**20),
        },
        "train_sft_2_steps": {"seconds": round(time.perf_counter() - started, 1),
                              "peak_rss_mib": {k: round(v / 2**20) for k, v in sampler.peak.items() if k != "staging_disk"}},
        "load_before": load_before, "load_after": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
