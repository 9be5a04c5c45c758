"""`spark-submit jobs/build_pretrain.py` end to end on the bundled sample: the folder it writes,
the funnel, every planted bad input with its reason, the card, identical bytes on a re-run (other
partitioning, a Spark standalone cluster) and a clean finish over a killed run's leftovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from curation import config as configuration
from curation.writer import MANIFEST

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}


def submit(*args: str, master: str = "local[2]", timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "spark-submit"), "--master", master, "--conf", f"spark.pyspark.python={sys.executable}",
           "jobs/build_pretrain.py", *args]
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def shard_bytes(folder: Path) -> dict[str, bytes]:
    files = sorted(folder.glob("part-*.parquet")) + sorted((folder / "_rejects").glob("part-*.parquet"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def cli_output(tmp_path_factory, sample_corpus):
    out = tmp_path_factory.mktemp("cli") / "pretrain"
    result = submit(f"output={out}", f"sample_dir={sample_corpus}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows kept" in result.stdout
    return out


def test_output_folder_layout(cli_output):
    manifest = json.loads((cli_output / MANIFEST).read_text())
    names = {p.name for p in cli_output.iterdir()}
    assert names == {"_manifest.json", "_funnel.json", "_stats.json", "_rejects", "card"} | {s["path"] for s in manifest["shards"]}
    newest_other = max(p.stat().st_mtime_ns for p in cli_output.rglob("*") if p.is_file() and p.name != MANIFEST)
    assert (cli_output / MANIFEST).stat().st_mtime_ns >= newest_other  # written last
    assert set(manifest) >= {"schema_version", "shards", "config", "code_version"}
    for shard in manifest["shards"]:
        assert set(shard) == {"path", "rows", "bytes", "sha256"}
    assert manifest["config"]["clip"]["model"] == "tiny-random"
    # every step's time and own statistics, beside the funnel, and in the card
    stats = json.loads((cli_output / "_stats.json").read_text())
    steps = {s["step"]: s for s in stats["steps"]}
    assert list(steps) == ["validate", "exact_dedup", "near_dedup", "image_dedup", "clip"]
    assert all(s["seconds"] >= 0 and s["rows_in"] >= s["rows_out"] and not s["reused"] for s in steps.values())
    assert steps["near_dedup"]["stats"]["confirmed_pairs"] <= steps["near_dedup"]["stats"]["candidate_pairs"]
    assert sum(int(k) * v for k, v in steps["near_dedup"]["stats"]["cluster_sizes"].items()) >= steps["near_dedup"]["stats"]["duplicate_rows"]
    assert set(steps["clip"]["stats"]["score_quantiles"]) == {"p05", "p25", "p50", "p75", "p95"}
    assert steps["validate"]["stats"]["refused"] == steps["validate"]["rows_in"] - steps["validate"]["rows_out"]
    funnel = {s["step"]: s for s in json.loads((cli_output / "_funnel.json").read_text())["steps"]}
    assert all(funnel[name]["in"] == s["rows_in"] and funnel[name]["out"] == s["rows_out"] for name, s in steps.items())
    card = (cli_output / "card" / "README.md").read_text()
    assert "## Steps" in card and "candidate_pairs: " in card and "score_quantiles.p50: " in card


def test_funnel_balances(cli_output):
    funnel = json.loads((cli_output / "_funnel.json").read_text())
    manifest = json.loads((cli_output / MANIFEST).read_text())
    assert [s["step"] for s in funnel["steps"]] == ["ingest", "validate", "exact_dedup", "near_dedup", "image_dedup", "clip"]
    for step in funnel["steps"]:
        assert step["in"] == step["out"] + sum(step["rejected"].values()), step
    for before, after in zip(funnel["steps"], funnel["steps"][1:]):
        assert after["in"] == before["out"]
    assert funnel["input_rows"] == manifest["rows"] + manifest["rejects"]["rows"]
    assert funnel["kept_rows"] == manifest["rows"]
    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in cli_output.glob("part-*.parquet"))
    rejected = pq.read_table(cli_output / "_rejects").num_rows
    assert funnel["kept_rows"] == kept and funnel["input_rows"] == kept + rejected


def test_planted_bad_inputs_each_have_their_reason(cli_output, sample_corpus):
    planted = json.loads((sample_corpus / "_planted.json").read_text())
    rejects = pq.read_table(cli_output / "_rejects").to_pylist()
    by_origin = {(r["source"], r["origin"]): r for r in rejects}
    for bad in planted["bad"]:
        got = by_origin.get((bad["source"], bad["origin"]))
        assert got is not None, f"{bad} not in _rejects"
        assert got["reason"] == bad["reason"], (bad, got)
        assert got["detail"], got
    reasons = [b["reason"] for b in planted["bad"]]
    assert len(set(reasons)) == len(reasons)  # each planted input has its own reason
    duplicates = {(d["source"], d["origin"]) for d in planted["duplicates"]}
    assert duplicates and all(by_origin[d]["reason"] == "exact_duplicate" for d in duplicates)
    ids = [i for p in sorted(cli_output.glob("part-*.parquet")) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert len(ids) == len(set(ids))


def test_card(cli_output):
    text = (cli_output / "card" / "README.md").read_text()
    assert text.startswith("---\n")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["configs"][0]["data_files"][0]["path"] == "part-*.parquet"
    assert set(meta["language"]) == {"en", "zh"}
    assert "**The CLIP scores in this dataset come from `tiny-random`" in text
    funnel = json.loads((cli_output / "_funnel.json").read_text())
    for step in funnel["steps"]:
        assert f"| {step['step']} | {step['in']} | {step['out']} |" in text
    for section in ("## Rows per source and kind", "## Rejects", "## Schema", "## Tokens (estimated)"):
        assert section in text
    assert (cli_output / "card" / "index.html").read_text().count("<table>") >= 4
    assert (cli_output / "card" / "funnel.png").stat().st_size > 1000


def test_rerun_gives_identical_bytes(cli_output, sample_corpus, spark, tmp_path):
    """In-process, on a session with a different default parallelism and shuffle partitions."""
    from jobs.build_pretrain import BuildPretrainConfig, run

    cfg = configuration.load(BuildPretrainConfig, [f"output={tmp_path / 'again'}", f"sample_dir={sample_corpus}"])
    run(cfg, spark)
    assert shard_bytes(tmp_path / "again") == shard_bytes(cli_output)
    assert (tmp_path / "again" / "_funnel.json").read_text() == (cli_output / "_funnel.json").read_text()


@pytest.mark.slow  # ~61 s (two spark-submits and a kill); step reuse in-process: tests/curation/test_runner.py
def test_killed_after_clip_resumes_with_clip_reused_and_the_same_bytes(cli_output, sample_corpus, tmp_path):
    """SIGKILL to the driver and its JVM once the CLIP step's result is persisted (the writer is
    running): the same command again reuses every step, CLIP included, and writes the bytes of
    an uninterrupted run. Then a new clip.threshold reuses the persisted scores and filters again."""
    out = tmp_path / "killed"
    cmd = [str(BIN / "spark-submit"), "--master", "local[2]", "--conf", f"spark.pyspark.python={sys.executable}",
           "jobs/build_pretrain.py", f"output={out}", f"sample_dir={sample_corpus}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 400
    while not list(out.glob("_work/clip-*/_complete.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
    proc.wait()
    assert list(out.glob("_work/clip-*/_complete.json")) and not (out / MANIFEST).exists()

    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((out / "_stats.json").read_text())
    by_step = {s["step"]: s for s in stats["steps"]}
    assert stats["base"]["reused"] and all(s["reused"] for s in stats["steps"]), stats
    assert by_step["clip"]["stats"]["scored"] > 0
    assert shard_bytes(out) == shard_bytes(cli_output)
    assert (out / "_funnel.json").read_text() == (cli_output / "_funnel.json").read_text()
    assert not (out / "_work").exists()



def test_a_new_clip_threshold_reuses_the_scores(sample_corpus, spark, tmp_path):
    """With the work folder kept, a second run with another CLIP threshold recomputes nothing
    before CLIP, reuses the persisted scores and filters them again."""
    from jobs.build_pretrain import BuildPretrainConfig, run

    args = [f"output={tmp_path / 'out'}", f"sources={sample_corpus / 'table.parquet'}", "near_dedup.enabled=false",
            "image_dedup.enabled=false", "card=false", "keep_work=true"]
    run(configuration.load(BuildPretrainConfig, args), spark)
    first = {s["step"]: s for s in json.loads((tmp_path / "out" / "_stats.json").read_text())["steps"]}
    assert not any(s["reused"] for s in first.values()) and not first["clip"]["stats"]["scores_reused"]
    run(configuration.load(BuildPretrainConfig, [*args, "clip.mode=threshold", "clip.threshold=0.0"]), spark)
    stats = json.loads((tmp_path / "out" / "_stats.json").read_text())
    by_step = {s["step"]: s for s in stats["steps"]}
    assert stats["base"]["reused"] and by_step["validate"]["reused"] and by_step["exact_dedup"]["reused"]
    assert not by_step["clip"]["reused"] and by_step["clip"]["stats"]["scores_reused"]
    assert by_step["clip"]["stats"]["score_quantiles"] == first["clip"]["stats"]["score_quantiles"]
    funnel = json.loads((tmp_path / "out" / "_funnel.json").read_text())
    assert set(funnel["steps"][-1]["rejected"]) <= {"clip_below_threshold"}


def test_bad_configuration_is_refused_before_work(tmp_path):
    result = subprocess.run([sys.executable, "jobs/build_pretrain.py", "clip.treshold=0.3"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "unknown key 'clip.treshold'" in result.stderr and "clip.threshold" in result.stderr
    result = subprocess.run([sys.executable, "jobs/build_pretrain.py", "validate.min_side=big"], cwd=ROOT, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "validate.min_side expects an integer" in result.stderr
    printed = subprocess.run([sys.executable, "jobs/build_pretrain.py", "--print-config", "clip.enabled=false"],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert printed.returncode == 0 and yaml.safe_load(printed.stdout)["clip"]["enabled"] is False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.cluster
def test_standalone_cluster_gives_the_local_output(cli_output, sample_corpus, tmp_path):
    spark_class = str(BIN / "spark-class")
    port, ui, worker_ui = _free_port(), _free_port(), _free_port()
    env = {**ENV, "SPARK_LOG_DIR": str(tmp_path / "logs"), "SPARK_WORKER_DIR": str(tmp_path / "work")}
    master = subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    worker = subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                               "--host", "127.0.0.1", "--cores", "2", "--memory", "2g", "--webui-port", str(worker_ui)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json", timeout=2))
                if state.get("aliveworkers", 0) >= 1:
                    break
            except OSError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the standalone worker did not register with the master")
        out = tmp_path / "cluster"
        result = submit(f"output={out}", f"sample_dir={sample_corpus}", master=f"spark://127.0.0.1:{port}")
        assert result.returncode == 0, result.stderr[-3000:]
        assert shard_bytes(out) == shard_bytes(cli_output)
        assert (out / "_funnel.json").read_text() == (cli_output / "_funnel.json").read_text()
    finally:
        for proc in (worker, master):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


def test_rendered_ocr_source_joins_the_pipeline(sample_corpus, spark, tmp_path):
    from jobs.build_pretrain import BuildPretrainConfig, run

    cfg = configuration.load(BuildPretrainConfig, [
        f"output={tmp_path / 'ocr'}", f"sources={sample_corpus / 'table.parquet'}",
        "render_ocr.enabled=true", "render_ocr.count=6", "clip.enabled=false",
        "near_dedup.enabled=false", "image_dedup.enabled=false",
    ])
    run(cfg, spark)
    funnel = json.loads((tmp_path / "ocr" / "_funnel.json").read_text())
    assert [s["step"] for s in funnel["steps"]] == ["ingest", "render_ocr", "validate", "exact_dedup"]
    for step in funnel["steps"]:
        assert step["in"] == step["out"] + sum(step["rejected"].values())
    kinds = [k for p in (tmp_path / "ocr").glob("part-*.parquet") for k in pq.read_table(p, columns=["kind"]).column("kind").to_pylist()]
    assert kinds.count("caption") == 100 and kinds.count("ocr") >= 6
