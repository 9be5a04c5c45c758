"""Fixtures shared by the whole suite: one local Spark session, the bundled sample corpus, and
the reference data of the released Keye-VL-8B-Preview (skipped when ../shared is absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT.parent / "shared" / "reference" / "keye-vl-8b-preview"

# Spark executors must run this interpreter (the venv with the project installed).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".torch_extensions"))
# Nothing is fetched at test time: hub clients fail fast instead of retrying a closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("keyeforge-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.python.worker.reuse", "true")
        .config("spark.log.level", "WARN")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory):
    from curation import sample_corpus

    return sample_corpus.generate(tmp_path_factory.mktemp("sample") / "corpus")


@pytest.fixture(scope="session")
def reference_dir():
    if not REFERENCE.is_dir():
        pytest.skip(f"reference data not found at {REFERENCE} (it sits in ../shared beside a development checkout)")
    return REFERENCE


@pytest.fixture
def keyed_frame(spark, tmp_path):
    """rows (dicts from curation.schema builders) -> a frame of them with `_row` keys, as the
    runner gives steps: written to Parquet and read back with curation.workdir.with_row_key."""
    import pyarrow.parquet as pq

    from curation import schema
    from curation.workdir import with_row_key

    made = []

    def make(rows, files: int = 1):
        rows = list(rows)
        folder = tmp_path / f"keyed{len(made)}"
        folder.mkdir()
        paths = []
        for i in range(files):
            path = folder / f"part-{i:05d}.parquet"
            pq.write_table(schema.rows_to_table(rows[i::files]), path, row_group_size=7)
            paths.append(str(path))
        made.append(folder)
        return with_row_key(spark.read.parquet(*paths), paths)

    return make
