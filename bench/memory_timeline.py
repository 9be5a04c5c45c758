"""Which step of a job holds the memory: run a job, stamp its progress lines, sample the RSS of its
JVM and Python workers every 0.5 s, and print the peaks per step.

    python bench/memory_timeline.py -- .venv/bin/spark-submit --master local[2] jobs/build_pretrain.py sources=... output=...

A step's window runs from its "[keyeforge] <step>: ... rows in" line (or any line naming a new
phase: "reading the sources", "writing ...") to the next one. Writes the samples and windows as
JSON next to --out.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from scale import _children, _rss_and_kind, spark_env  # noqa: E402

PHASE = re.compile(r"^\[keyeforge\] (.+?)(?::| \.\.\.)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/results/memory_timeline.json")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = [c for c in args.command if c != "--"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, env=spark_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    phases: list[tuple[float, str]] = [(0.0, "start")]
    samples: list[tuple[float, int, list[int]]] = []  # (t, jvm bytes, worker bytes each)
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.5):
            jvm, workers = 0, []
            for pid in [proc.pid, *_children(proc.pid)]:
                rss, kind = _rss_and_kind(pid)
                if kind == "jvm":
                    jvm = max(jvm, rss)
                elif kind == "worker":
                    workers.append(rss)
            samples.append((time.perf_counter() - started, jvm, workers))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for line in proc.stdout:
        sys.stdout.write(line)
        found = PHASE.match(line)
        if found and found.group(1) != phases[-1][1]:
            phases.append((time.perf_counter() - started, found.group(1)))
    code = proc.wait()
    done.set()
    sampler.join()
    phases.append((time.perf_counter() - started, "end"))
    windows = []
    for (t0, name), (t1, _) in zip(phases, phases[1:]):
        inside = [s for s in samples if t0 <= s[0] < t1]
        windows.append({"phase": name, "seconds": round(t1 - t0, 1),
                        "jvm_mib": round(max((s[1] for s in inside), default=0) / 2**20),
                        "worker_max_mib": round(max((max(s[2], default=0) for s in inside), default=0) / 2**20),
                        "workers_sum_mib": round(max((sum(s[2]) for s in inside), default=0) / 2**20)})
    print(f"\nexit {code}; peaks per phase (MiB):", file=sys.stderr)
    for w in windows:
        print(f"  {w['phase'][:40]:40s} {w['seconds']:7.1f} s  jvm {w['jvm_mib']:6d}  worker max {w['worker_max_mib']:6d}  "
              f"workers sum {w['workers_sum_mib']:6d}", file=sys.stderr)
    Path(args.out).write_text(json.dumps({"command": command, "exit": code, "windows": windows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
