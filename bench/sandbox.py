"""Benchmark (not a test): what the sandbox for model-written code costs per run.

    python bench/sandbox.py [--runs 30] [--workers 2]

Three ways to run the same Python script with this venv's interpreter, each timed from the
caller's side (start to result):
  * plain: ``subprocess.run([python, "-s", "-B", script], cwd=folder)`` with the inputs already in
    the folder and the sandbox's environment - the floor: no isolation, no limits, no output
    handling;
  * unsafe_subprocess: ``run_python(..., mode="unsafe_subprocess")`` - our supervision without
    isolation (temporary working folder with the inputs copied in, prlimit, output caps, the
    timeout, the files read back);
  * bwrap: ``run_python(...)`` - the sandbox (the same, plus bubblewrap's namespaces and mounts;
    run by root, also the uid maps and the setpriv step).
Scripts: ``pass`` (startup latency), ``import numpy, PIL`` (what model-written code starts with),
and a PIL rotate of a 512x512 PNG given as image_0.png, saved back as out.png (a typical agentic
step). Latency: median and 90th percentile of `runs` sequential runs, the three ways taking
turns (a shared machine's load drifts; this way the drift falls on all three alike). Throughput:
runs/s of the rotate with `workers` threads calling at once (the ways taking turns too). The first
call of a process also runs the sandbox's capability check (a trial run); it is timed apart.
Prints a table and writes bench/results/sandbox.json, with the machine and its load average (the
machine may be shared). On a loaded machine with autogroup scheduling, each sandbox is a session
of its own and so gets a CPU share of its own beside the other sessions, where plain subprocesses
share their caller's: there the sandbox's throughput can come out above plain's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hostinfo import cpu_model  # noqa: E402 (bench/ is on sys.path)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from synthesis.sandbox import check_sandbox, run_python  # noqa: E402
from synthesis.sandbox.isolation import SANDBOX_ENV, sandbox_python  # noqa: E402

SCRIPTS = {
    "pass": "pass\n",
    "import numpy, PIL": "import numpy, PIL.Image\n",
    "PIL rotate 512x512": "from PIL import Image\nImage.open('image_0.png').rotate(90).save('out.png')\nprint('ok')\n",
}
WAYS = ("plain", "unsafe_subprocess", "bwrap")
# The sandbox's fixed environment (one BLAS thread among others) for the plain runs too, so the
# difference is the isolation and supervision, not numpy starting threads.
PLAIN_ENV = dict(SANDBOX_ENV, PATH="/usr/bin:/bin")


def input_image() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def run_once(way: str, code: str, files: dict[str, bytes], folder: Path) -> float:
    started = time.perf_counter()
    if way == "plain":
        done = subprocess.run([sandbox_python(), "-s", "-B", str(folder / "script.py")], cwd=folder,
                              capture_output=True, env=PLAIN_ENV, check=False)
        assert done.returncode == 0, done.stderr
    else:
        result = run_python(code, files=files, mode=way, timeout_s=60)
        assert result.ok, result
    return time.perf_counter() - started


def measure_latency(code: str, files: dict[str, bytes], runs: int) -> dict[str, dict]:
    """Each way `runs` times, the ways taking turns (a shared machine's load drifts: this way the
    drift falls on all three alike)."""
    wall: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="keyeforge-bench-sandbox-") as temp:
        folder = Path(temp)
        (folder / "script.py").write_text(code)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        for way in WAYS:
            run_once(way, code, files, folder)  # warm the page cache
        for _ in range(runs):
            for way in WAYS:
                wall[way].append(run_once(way, code, files, folder))
    numbers = {}
    for way in WAYS:
        times = sorted(wall[way])
        numbers[way] = {
            "median_ms": round(statistics.median(times) * 1000, 1),
            "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))] * 1000, 1),
            "runs_per_s_sequential": round(len(times) / sum(times), 2),
        }
    return numbers


def measure_throughput(code: str, files: dict[str, bytes], runs: int, workers: int,
                       rounds: int = 3) -> dict[str, float]:
    """Runs/s with `workers` threads calling at once; `runs` per way, in `rounds` rounds that
    take turns between the ways (as for the latency)."""
    elapsed = {way: 0.0 for way in WAYS}
    done = {way: 0 for way in WAYS}
    with tempfile.TemporaryDirectory(prefix="keyeforge-bench-sandbox-") as temp:
        folders = []
        for index in range(workers):
            folder = Path(temp) / str(index)
            folder.mkdir()
            (folder / "script.py").write_text(code)
            for name, data in files.items():
                (folder / name).write_bytes(data)
            folders.append(folder)
        with ThreadPoolExecutor(workers) as pool:
            for round_index in range(rounds):
                count = runs // rounds + (1 if round_index < runs % rounds else 0)
                for way in WAYS:
                    started = time.perf_counter()
                    list(pool.map(lambda i, way=way: run_once(way, code, files, folders[i % workers]), range(count)))
                    elapsed[way] += time.perf_counter() - started
                    done[way] += count
    return {way: round(done[way] / elapsed[way], 2) for way in WAYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="sequential runs per script and way")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads for the throughput run")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "sandbox.json"))
    args = parser.parse_args()

    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "run_as_root": os.geteuid() == 0,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    started = time.perf_counter()
    machine["bwrap"] = check_sandbox()
    first_call_check_ms = round((time.perf_counter() - started) * 1000, 1)

    image = {"image_0.png": input_image()}
    latency: dict[str, dict[str, dict]] = {}
    for script_name, code in SCRIPTS.items():
        files = image if "rotate" in script_name else {}
        latency[script_name] = measure_latency(code, files, args.runs)
    rotate = SCRIPTS["PIL rotate 512x512"]
    throughput = measure_throughput(rotate, image, args.runs, args.workers)
    machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]

    report = {"machine": machine, "runs": args.runs, "workers": args.workers,
              "capability_check_first_call_ms": first_call_check_ms, "latency": latency,
              "throughput_runs_per_s": {"script": "PIL rotate 512x512", **throughput}}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")

    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB, kernel "
          f"{machine['kernel']}, {machine['bwrap']}, load average {machine['load_average_at_start']} -> "
          f"{machine['load_average_at_end']}")
    print(f"first call's capability check: {first_call_check_ms} ms\n")
    print(f"{'script':<20} {'way':<18} {'median ms':>10} {'p90 ms':>8} {'runs/s':>8}")
    for script_name, ways in latency.items():
        for way, numbers in ways.items():
            print(f"{script_name:<20} {way:<18} {numbers['median_ms']:>10} {numbers['p90_ms']:>8} "
                  f"{numbers['runs_per_s_sequential']:>8}")
    print(f"\nPIL rotate, {args.workers} threads at once: " +
          ", ".join(f"{way} {rate} runs/s" for way, rate in throughput.items()))


if __name__ == "__main__":
    main()
