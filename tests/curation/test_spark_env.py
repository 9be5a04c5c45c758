"""The local driver's heap is chosen from the machine (configs/spark/spark-env.sh for spark-submit,
curation.spark for plain Python runs), explicit settings win, and cluster masters are left alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from curation.spark import driver_memory, machine_memory

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "configs" / "spark" / "spark-env.sh"


def sourced(*args: str, **env: str) -> str:
    """SPARK_DRIVER_MEMORY after Spark's launcher sources the script with spark-class's arguments."""
    clean = {k: v for k, v in os.environ.items() if k not in ("SPARK_DRIVER_MEMORY", "MASTER")}
    command = f'set -- org.apache.spark.deploy.SparkSubmit "$@"; . "{SCRIPT}"; echo "[${{SPARK_DRIVER_MEMORY:-}}]"'
    out = subprocess.run(["bash", "-c", command, "bash", *args], env={**clean, **env, "SPARK_CONF_DIR": "/nonexistent"},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()[1:-1]


def test_python_rule():
    gib = 2**30
    assert driver_memory(2 * gib) == "1024m"  # never below 1 GiB
    assert driver_memory(24 * gib) == "6144m"  # a quarter
    assert driver_memory(256 * gib) == "16384m"  # never above 16 GiB
    assert 1024 <= int(driver_memory()[:-1]) <= 16384 and machine_memory() > 0


@pytest.mark.parametrize("args", [(), ("--master", "local[2]"), ("--master=local",), ("--conf", "spark.master=local[*]")])
def test_local_masters_get_the_same_quarter_as_python(args):
    assert sourced(*args, "job.py") == driver_memory()


@pytest.mark.parametrize(
    "args",
    [
        ("--master", "yarn"),
        ("--master", "spark://host:7077"),
        ("--master", "k8s://https://api:6443"),
        ("--driver-memory", "3g"),
        ("--master", "local[2]", "--conf", "spark.driver.memory=3g"),
    ],
)
def test_cluster_masters_and_explicit_memory_are_left_alone(args):
    assert sourced(*args, "job.py") == ""


def test_an_explicit_environment_value_wins():
    assert sourced("job.py", SPARK_DRIVER_MEMORY="700m") == "700m"


def test_the_temporary_names_do_not_leak_into_the_environment():
    clean = {k: v for k, v in os.environ.items() if k != "SPARK_DRIVER_MEMORY"}
    out = subprocess.run(["bash", "-c", f'set -a; set -- x job.py; . "{SCRIPT}"; set +a; env'], env=clean,
                         capture_output=True, text=True, check=True).stdout
    assert "_kf_" not in out and "SPARK_DRIVER_MEMORY=" in out


def conf_dir_after_sourcing(spark_home: Path, conf_dir: str) -> str:
    command = f'set -- org.apache.spark.deploy.SparkSubmit job.py; . "{SCRIPT}"; echo "$SPARK_CONF_DIR"'
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_CONF_DIR": conf_dir}
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_the_jvm_classpath_gets_an_empty_conf_folder_only_when_nothing_else_is_there(tmp_path):
    conf = tmp_path / "conf"
    (conf / "classpath").mkdir(parents=True)
    (conf / "spark-env.sh").write_text("# installed by make setup\n")
    assert conf_dir_after_sourcing(tmp_path, str(conf)) == str(conf / "classpath")
    # A user's own conf folder, or the venv's holding a user's spark-defaults.conf, stays as it is.
    assert conf_dir_after_sourcing(tmp_path, str(tmp_path / "mine")) == str(tmp_path / "mine")
    (conf / "spark-defaults.conf").write_text("spark.sql.shuffle.partitions 8\n")
    assert conf_dir_after_sourcing(tmp_path, str(conf)) == str(conf)


ARCHIVE = ROOT / ".spark-cds" / "spark.jsa"


@pytest.mark.skipif(not ARCHIVE.exists(), reason="no class-data-sharing archive: `make spark-cds` makes it")
def test_the_venvs_spark_submit_maps_the_class_archive():
    """With spark-env.sh installed, Spark's JVM still accepts make's archive: its classpath holds no
    non-empty folder (the JVM refuses one when recording and, silently, when mapping)."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_CONF_DIR", "SPARK_HOME", "SPARK_ENV_LOADED")}
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    env["SPARK_SUBMIT_OPTS"] = f"-XX:SharedArchiveFile={ARCHIVE} -Xlog:cds=info -Xlog:class+path=info"
    run = subprocess.run([str(bin_dir / "spark-submit"), "--version"], env=env, capture_output=True, text=True, timeout=120)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-2000:]
    # SparkSubmit's JVM maps the archive, then checks Spark's classpath against the recorded one
    # (the JVM drops the archive's classes on a mismatch, which make's -Xlog:cds=off keeps quiet).
    assert "Mapped dynamic region #0" in log and "checking shared classpath entry" in log
    assert "shared class paths mismatch" not in log, [l for l in log.splitlines() if "not empty" in l]
