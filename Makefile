# keyeforge: set-up, demo and tests. `make demo` and `make test` each set up what they need first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PADDLE_VENV := .venv-paddle
PADDLE_STAMP := $(PADDLE_VENV)/.installed
CDS_STAMP := .spark-cds/.made
SPARK_ENV_STAMP := $(VENV)/.spark-env
# The locks: every package of each venv at its exact version, as pip constraints (`make lock`
# writes them; set-up installs with `pip install -c LOCK`, so installs months apart are the same).
LOCK := locks/venv.txt
PADDLE_LOCK := locks/venv-paddle.txt
# What .venv-paddle holds beside keyeforge (installed there with --no-deps): PaddleOCR and what the
# PaddleOCR test imports. One list for `make lock` and the install.
PADDLE_REQUIREMENTS := "paddleocr==3.7.0" "paddlepaddle==3.3.1" "rapidocr-paddle==1.4.5" "numpy<2.4" \
	"pyspark[sql]>=4.0,<5" "pyarrow>=17" "pandas>=2.2,<3" pyyaml pillow fonttools pytest pytest-timeout
# System packages the tests need: Java for Spark, CJK fonts for OCR rendering, a font without CJK
# glyphs for the no-tofu test, Chromium to render the dataset card's index.html headless,
# bubblewrap for the sandbox that runs model-written code, espeak-ng to speak the video sample's audio.
APT_PACKAGES := openjdk-17-jre-headless fontconfig fonts-wqy-microhei fonts-noto-cjk fonts-dejavu-core chromium bubblewrap espeak-ng

export PYSPARK_PYTHON := $(abspath $(PY))
export PYSPARK_DRIVER_PYTHON := $(abspath $(PY))
export TORCH_EXTENSIONS_DIR := $(abspath .torch_extensions)
export SPARK_LOCAL_IP ?= 127.0.0.1
# JVM options of every Spark job make runs: the log configuration, and once `make spark-cds` has
# made it, the class-data-sharing archive (expanded when each command runs, so a job started
# right after the archive is made already maps it).
CDS_ARCHIVE := $(abspath .spark-cds/spark.jsa)
SPARK_LOG_OPTS := -Dlog4j2.configurationFile=$(abspath configs/spark/log4j2.properties)
# Local jobs: the driver JVM is the only executor, and the per-row work runs in Python workers or
# pyarrow, so the JVM's optimising (C2) compiler costs more CPU than its code saves: the dedup job
# measured 100k docs 20.9 -> 15.7 s, 1M 67.5 -> 66.9 s with the quick (C1) compiler only.
SPARK_JIT_OPTS := -XX:TieredStopAtLevel=1
USER_SUBMIT_OPTS := $(SPARK_SUBMIT_OPTS)
export SPARK_SUBMIT_OPTS = $(SPARK_LOG_OPTS) $(SPARK_JIT_OPTS) $(if $(wildcard $(CDS_ARCHIVE)),-XX:SharedArchiveFile=$(CDS_ARCHIVE) -Xlog:cds=off -Xlog:cds+dynamic=off) $(USER_SUBMIT_OPTS)

.PHONY: setup system-packages lock spark-cds demo test test-paddle test-all clean

setup: system-packages $(STAMP) $(SPARK_ENV_STAMP) $(CDS_STAMP)

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: keyeforge needs Python 3.11"; exit 1; }
	$(PYTHON) -c "$$LOCK_TOOL" check-made-from $(LOCK) pyproject
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) pip
	$(PY) -m pip install -q -c $(LOCK) torch torchvision
	$(PY) -m pip install -q -c $(LOCK) -e '.[test]'
	$(PY) -c "$$LOCK_TOOL" compare-venv $(LOCK)
	# DeepSpeed's CPU communication op is compiled on first use (~3 min): do it once here, cached
	# under TORCH_EXTENSIONS_DIR, so the demo and the tests start at once.
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	touch $(STAMP)

# Spark's environment script (configs/spark/spark-env.sh: a local driver's heap chosen from the
# machine) goes where the venv's spark-submit reads it: pyspark's own conf folder, with the empty
# `classpath/` folder the script points the JVM's classpath at (class-data sharing needs it empty).
$(SPARK_ENV_STAMP): configs/spark/spark-env.sh $(STAMP)
	conf=$$($(PY) -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "conf"))'); \
		mkdir -p "$$conf/classpath" && cp configs/spark/spark-env.sh "$$conf/spark-env.sh"
	touch $@

# Re-resolve both locks from their requirements (pyproject.toml's dependencies and test extra;
# PADDLE_REQUIREMENTS) against the package index, newest versions allowed: run it after changing
# either, or to move to newer releases; commit the locks. pip resolves in a throwaway venv with
# --dry-run, so nothing is downloaded but metadata (no multi-GB torch builds), and --ignore-installed,
# so every package is listed.
lock:
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: keyeforge needs Python 3.11"; exit 1; }
	@set -e; resolver=$$(mktemp -d); trap 'rm -rf "$$resolver"' EXIT; mkdir -p $(dir $(LOCK)); \
	$(PYTHON) -m venv "$$resolver/venv"; \
	"$$resolver/venv/bin/python" -m pip install -q --upgrade pip; \
	echo "resolving $(LOCK)"; \
	"$$resolver/venv/bin/python" -m pip install -q --dry-run --ignore-installed --report "$$resolver/venv.json" '.[test]'; \
	"$$resolver/venv/bin/python" -c "$$LOCK_TOOL" write "$$resolver/venv.json" $(LOCK) pyproject; \
	echo "resolving $(PADDLE_LOCK)"; \
	"$$resolver/venv/bin/python" -m pip install -q --dry-run --ignore-installed --report "$$resolver/paddle.json" $(PADDLE_REQUIREMENTS); \
	"$$resolver/venv/bin/python" -c "$$LOCK_TOOL" write "$$resolver/paddle.json" $(PADDLE_LOCK) $(PADDLE_REQUIREMENTS)
	@git diff --stat -- $(LOCK) $(PADDLE_LOCK) 2>/dev/null || true

# The locks' one tool, run by `make lock` and the installs (inline, so set-up needs no file beyond
# the Makefile and the locks).
#   write REPORT LOCK REQ...      the lock from pip's --report of a resolution of REQ...
#   check-made-from LOCK REQ...   fail unless LOCK was made from REQ... (a changed requirement without
#                                 `make lock` would otherwise install unpinned versions silently)
#   compare-venv LOCK             after an install: say what this venv holds beyond or apart from LOCK
# REQ `pyproject` stands for pyproject.toml's requires-python, dependencies and test extra.
define LOCK_TOOL
import hashlib, json, re, subprocess, sys, tomllib
from datetime import datetime, timezone

def requirements(args):
    if args == ["pyproject"]:
        project = tomllib.load(open("pyproject.toml", "rb"))["project"]
        return ["python" + project["requires-python"]] + project["dependencies"] + project["optional-dependencies"]["test"]
    return args

def describe(args):
    return "pyproject.toml (requires-python, dependencies, test extra)" if args == ["pyproject"] else " ".join(args)

def requirements_digest(args):
    return hashlib.sha256(json.dumps(requirements(args)).encode()).hexdigest()[:16]

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

def pins(lines):
    return {norm(n): (n, v) for n, _, v in (l.strip().partition("==") for l in lines if l.strip() and not l.startswith("#"))}

command, args = sys.argv[1], sys.argv[2:]
if command == "write":
    report_path, lock, reqs = args[0], args[1], args[2:]
    report = json.load(open(report_path))
    found = {norm(p["metadata"]["name"]): (p["metadata"]["name"], p["metadata"]["version"])
             for p in report["install"] if p["metadata"]["name"] != "keyeforge"}
    found["pip"] = ("pip", report["pip_version"])
    env = report["environment"]
    header = [
        f"# {lock}: pip constraints, every package at its exact version. Written by `make lock`; do not edit.",
        f"# Resolved from {describe(reqs)}",
        f"# by pip {report['pip_version']} (install --dry-run --ignore-installed --report) in a fresh venv,",
        f"# CPython {env['python_full_version']} on {env['sys_platform']} {env['platform_machine']}, {datetime.now(timezone.utc):%Y-%m-%d}.",
        f"# requirements sha256: {requirements_digest(reqs)}",
    ]
    body = [f"{n}=={v}" for _, (n, v) in sorted(found.items())]
    open(lock, "w").write("\n".join(header + body) + "\n")
    print(f"{lock}: {len(body)} packages")
elif command == "check-made-from":
    lock, reqs = args[0], args[1:]
    made_from = re.search(r"^# requirements sha256: (\w+)", open(lock).read(), re.M)
    if not made_from or made_from.group(1) != requirements_digest(reqs):
        sys.exit(f"{lock} was not made from the requirements in force ({describe(reqs)}): run `make lock` and commit the locks")
elif command == "compare-venv":
    lock = args[0]
    locked = pins(open(lock).read().splitlines())
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    installed = pins(frozen)
    extra = [f"{n}=={v}" for k, (n, v) in sorted(installed.items()) if k not in locked]
    differ = [f"{n} {v} (lock: {locked[k][1]})" for k, (n, v) in sorted(installed.items()) if k in locked and v != locked[k][1]]
    if differ:
        sys.exit(f"{sys.prefix} differs from {lock}: {', '.join(differ)}")
    if extra:
        print(f"note: {sys.prefix} also holds packages {lock} does not list (installed by hand?): {', '.join(extra)}")
endef
export LOCK_TOOL

# Spark's class-data-sharing archive. Most of a local job's first seconds go to loading and
# verifying Spark's classes; one run of the curation job on the bundled sample with
# -XX:ArchiveClassesAtExit records them, and every later JVM maps the archive instead (seconds
# sooner; bench/dedup.py measures with and without). It must be made with the classpath it is used
# with: Spark's jars of this venv. The JVM ignores a stale archive (after a pyspark upgrade the
# stamp below remakes it), so it never changes what a job computes.
spark-cds: $(CDS_STAMP)

$(CDS_STAMP): $(STAMP) $(SPARK_ENV_STAMP)
	rm -rf .spark-cds && mkdir -p .spark-cds
	SPARK_SUBMIT_OPTS="$(SPARK_LOG_OPTS) -XX:ArchiveClassesAtExit=$(CDS_ARCHIVE)" \
		$(VENV)/bin/spark-submit jobs/build_pretrain.py output=.spark-cds/sample-run card=false \
		> .spark-cds/record.log 2>&1 || { tail -20 .spark-cds/record.log; exit 1; }
	rm -rf .spark-cds/sample-run
	touch $(CDS_STAMP)

# The main jobs on the embedded default: local Spark over the bundled sample corpus and the generated
# video sample, then a short training stage of the tiny model on the shards they wrote (video rows
# need longer sequences than the pretrain stage's default); the reasoning data (verifiable
# synthetic tasks, offline), then a short CoT cold start on it and two MPO steps on its preference pairs;
# then an SFT mixture of all of it tagged with TaskGalaxy task types and balanced, and two SFT steps on it.
demo: setup
	$(VENV)/bin/spark-submit jobs/build_pretrain.py
	$(VENV)/bin/spark-submit jobs/build_video.py
	$(PY) -m training.launch data=out/pretrain,out/video max_tokens=8192
	$(VENV)/bin/spark-submit jobs/build_cot.py
	$(PY) -m training.launch stage=cot_coldstart
	$(PY) -m training.launch stage=mpo max_steps=2
	$(VENV)/bin/spark-submit jobs/build_sft.py balance.cap=24
	$(PY) -m training.launch stage=sft max_steps=2
	@echo "shards, funnel, rejects and card: out/pretrain (open out/pretrain/card/index.html); videos: out/video"
	@echo "training: out/train/pretrain (report.md, metrics.jsonl, tensorboard/, export/)"
	@echo "reasoning data: out/cot/{think,no_think,auto_think,agentic,preference,rl}; cold start: out/train/cot_coldstart; MPO: out/train/mpo; SFT mixture: out/sft, SFT: out/train/sft"

# The whole suite: the main venv, then the PaddleOCR tests in their own venv.
test: setup $(PADDLE_STAMP)
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-paddle

test-paddle: $(PADDLE_STAMP)
	PYSPARK_PYTHON=$(abspath $(PADDLE_VENV))/bin/python PYSPARK_DRIVER_PYTHON=$(abspath $(PADDLE_VENV))/bin/python \
		$(PADDLE_VENV)/bin/python -m pytest tests/synthesis/test_ocr_extract_paddle.py

$(PADDLE_STAMP): pyproject.toml $(PADDLE_LOCK)
	$(PYTHON) -c "$$LOCK_TOOL" check-made-from $(PADDLE_LOCK) $(PADDLE_REQUIREMENTS)
	[ -x $(PADDLE_VENV)/bin/python ] || $(PYTHON) -m venv $(PADDLE_VENV)
	$(PADDLE_VENV)/bin/python -m pip install -q -c $(PADDLE_LOCK) pip
	$(PADDLE_VENV)/bin/python -m pip install -q -c $(PADDLE_LOCK) $(PADDLE_REQUIREMENTS)
	$(PADDLE_VENV)/bin/python -m pip install -q --no-deps -e .
	$(PADDLE_VENV)/bin/python -c "$$LOCK_TOOL" compare-venv $(PADDLE_LOCK)
	touch $(PADDLE_STAMP)

# Including the tests marked slow (benchmarks-sized runs).
test-all: setup
	$(PY) -m pytest -m ''

clean:
	rm -rf out .pytest_cache .torch_extensions spark-warehouse .spark-cds
