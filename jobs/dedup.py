"""Deduplicate and decontaminate any keyeforge shard folder.

    spark-submit jobs/dedup.py input=out/pretrain output=out/pretrain_dedup
    spark-submit jobs/dedup.py input=IN output=OUT near_dedup.threshold=0.7 image_dedup.enabled=false
    spark-submit jobs/dedup.py input=IN output=OUT --config configs/decontam.yaml   # decontam.benchmarks
    python jobs/dedup.py --print-config

Steps, in order, each switchable with `<step>.enabled=false`: exact_dedup (same content id),
near_dedup (MinHash-LSH text near-duplicates), image_dedup (same pixels / pHash), decontam
(benchmark overlaps; runs when decontam.benchmarks lists any). The output folder has the usual
`_rejects/`, `_funnel.json`, card and `_manifest.json` (written last); its shards are the input
shards without their rejected rows, one output shard per input shard, rows in input order.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql.pandas.types import from_arrow_schema

from curation import config as configuration
from curation import schema
from curation.dedup import (
    DecontamConfig,
    ImageDedupConfig,
    NearTextDedupConfig,
    decontaminate,
    image_dedup,
    near_dedup_text,
)
from curation.exact_dedup import ExactDedupConfig, exact_dedup
from curation.filtered_copy import with_row_positions
from curation.spark import session
from curation.writer import OutputFolderError, WriterConfig, read_manifest, write_output


@dataclass
class DedupJobConfig:
    input: str = ""
    output: str = ""
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_dedup: NearTextDedupConfig = field(default_factory=NearTextDedupConfig)
    image_dedup: ImageDedupConfig = field(default_factory=ImageDedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    checkpoint_dir: str = ""  # reliable checkpoints for connected components (default: local)
    # Input splits, and tasks of the signature pass when it reads the shards itself: at least this
    # many (0: 4 per core). About one per core would leave cores idle while the last large split's
    # signatures are computed.
    min_partitions: int = 0
    writer: WriterConfig = field(default_factory=WriterConfig)
    card: bool = True


# (config field = step name, step function) in pipeline order.
STEPS = [
    ("exact_dedup", exact_dedup),
    ("near_dedup", near_dedup_text),
    ("image_dedup", image_dedup),
    ("decontam", decontaminate),
]


def run(cfg: DedupJobConfig, spark=None) -> dict:
    if not cfg.input or not cfg.output:
        raise configuration.ConfigError("give input=DIR (a keyeforge shard folder) and output=DIR")
    manifest = read_manifest(cfg.input)  # refuses an incomplete folder with a clear message
    if not manifest.get("shards"):
        raise OutputFolderError(f"the manifest of {cfg.input} lists no shards")
    shards = [str(Path(cfg.input) / shard["path"]) for shard in manifest["shards"]]
    spark = spark or session("keyeforge dedup")
    if cfg.checkpoint_dir:
        spark.sparkContext.setCheckpointDir(cfg.checkpoint_dir)
    splits = "spark.sql.files.minPartitionNum"
    previous = spark.conf.get(splits, None)
    spark.conf.set(splits, str(cfg.min_partitions or 4 * spark.sparkContext.defaultParallelism))
    started = time.time()
    try:
        manifest = _run_steps(cfg, spark, shards, started)
    finally:  # a session given by the caller keeps its own setting
        if previous is None:
            spark.conf.unset(splits)
        else:
            spark.conf.set(splits, previous)
    print(
        f"dedup: {manifest['rows']:,} rows kept in {len(manifest['shards'])} shards, "
        f"{manifest['rejects']['rows']:,} rejected -> {cfg.output} ({time.time() - started:.1f}s)"
    )
    return manifest


def _run_steps(cfg: DedupJobConfig, spark, shards: list[str], started: float) -> dict:
    # The manifest's shards (no glob: stray files are not read, and Spark does not look for
    # streaming metadata under a pattern). They hold exactly the contract's columns: giving the
    # schema skips a job reading every footer.
    # Each row's file and index come along: the kept shards are copies of the input shards
    # without the rows rejected at those positions.
    df = with_row_positions(spark.read.schema(from_arrow_schema(schema.SCHEMA)).parquet(*shards))
    # Near-dedup reads the texts from the shards itself (not through the JVM).
    step_args = {"near_dedup": {"source_files": shards}}
    names = []
    for name, step in STEPS:
        step_cfg = getattr(cfg, name)
        if step_cfg.enabled and not (name == "decontam" and not step_cfg.benchmarks):
            df = step(df, step_cfg, **step_args.get(name, {}))
            names.append(name)
            print(f"dedup: {name} planned ({time.time() - started:.1f}s)", flush=True)
    return write_output(
        df,
        cfg.output,
        names,
        dataclasses.asdict(cfg),
        cfg.writer,
        card=cfg.card,
        title="keyeforge deduplicated shards",
        # The steps only mark rows: the kept shards are the input shards without their rejects.
        row_files=shards,
    )


def main(argv: list[str]) -> None:
    cfg = configuration.job_config(DedupJobConfig, argv, "dedup")
    if cfg is None:
        return
    try:
        run(cfg)
    except (configuration.ConfigError, OutputFolderError) as exc:
        raise SystemExit(f"dedup: {exc}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
