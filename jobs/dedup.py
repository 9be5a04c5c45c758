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
from curation.dedup.decontam import DecontamConfig, Decontaminate
from curation.dedup.near_image import ImageDedup, ImageDedupConfig
from curation.dedup.near_text import NearDedup, NearTextDedupConfig
from curation.exact_dedup import ExactDedup, ExactDedupConfig
from curation.runner import run_steps
from curation.schema.manifest import OutputFolderError, read_manifest
from curation.spark import session
from curation.steps import Step
from curation.workdir import WorkFolder, hash_key
from curation.writer import WriterConfig, code_version, prepare_folder, write_output


@dataclass
class DedupJobConfig:
    input: str = ""
    output: str = ""
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_dedup: NearTextDedupConfig = field(default_factory=NearTextDedupConfig)
    image_dedup: ImageDedupConfig = field(default_factory=ImageDedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    checkpoint_dir: str = ""  # reliable checkpoints for connected components (default: local)
    writer: WriterConfig = field(default_factory=WriterConfig)
    card: bool = True


def pipeline(cfg: DedupJobConfig) -> list[Step]:
    return [ExactDedup(cfg.exact_dedup), NearDedup(cfg.near_dedup), ImageDedup(cfg.image_dedup), Decontaminate(cfg.decontam)]


def run(cfg: DedupJobConfig, spark=None) -> dict:
    if not cfg.input or not cfg.output:
        raise configuration.ConfigError("give input=DIR (a keyeforge shard folder) and output=DIR")
    manifest = read_manifest(cfg.input)  # refuses an incomplete folder with a clear message
    if not manifest.get("shards"):
        raise OutputFolderError(f"the manifest of {cfg.input} lists no shards")
    if Path(cfg.output).resolve() == Path(cfg.input).resolve():
        raise OutputFolderError("output must be another folder than input (the kept shards are copies of the input's)")
    # The manifest's shards (no glob: stray files are not read, and Spark does not look for
    # streaming metadata under a pattern).
    shards = [str(Path(cfg.input) / shard["path"]) for shard in manifest["shards"]]
    steps = pipeline(cfg)
    out = Path(cfg.output)
    prepare_folder(out)
    spark = spark or session("keyeforge dedup")
    if cfg.checkpoint_dir:
        spark.sparkContext.setCheckpointDir(cfg.checkpoint_dir)
    started = time.time()
    key = hash_key("dedup", code_version(), [(s["path"], s["sha256"]) for s in manifest["shards"]])
    # The shards are the rows as they are (no copy): they hold exactly the contract's columns, so
    # giving the schema spares a job reading every footer.
    result = run_steps(
        spark, None, steps, WorkFolder(out), key, sources=[], base_files=shards, base_schema=from_arrow_schema(schema.SCHEMA)
    )
    manifest = write_output(
        result.frame, str(out), result.step_names, dataclasses.asdict(cfg), cfg.writer, card=cfg.card,
        title="keyeforge deduplicated shards", row_files=shards, stats={"job": "dedup", **result.stats},
    )
    print(
        f"dedup: {manifest['rows']:,} rows kept in {len(manifest['shards'])} shards, "
        f"{manifest['rejects']['rows']:,} rejected -> {cfg.output} ({time.time() - started:.1f}s)"
    )
    return manifest


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
