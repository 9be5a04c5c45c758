"""Build an SFT mixture: tag every row with TaskGalaxy task types, then sample a mixture balanced
over the types -> shards + card.

    spark-submit jobs/build_sft.py                                    # the demo's outputs -> out/sft
    spark-submit jobs/build_sft.py sources=/data/sft_a,/data/sft_b output=out/sft balance.total=100000 balance.cap=2000
    spark-submit jobs/build_sft.py tag.taxonomy=my_taxonomy.jsonl tag.threshold=0.3 balance.temperature=0.3
    spark-submit jobs/build_sft.py difficulty.enabled=true difficulty.client.base_urls=[http://host:8000/v1] \
        difficulty.models=[model-a,model-b] difficulty.samples=4 difficulty.max_pass_rate=0.75

Sources are shard folders (contract Parquet, e.g. what the other jobs write). With no sources the
demo's outputs that exist are used: out/pretrain (captions, rendered OCR), out/cot/* (synthetic
QA in the reasoning modes) and out/video. Rows that already carry task types keep them
(`tag.keep_existing`). With models configured, questions the models answer right too often are
refused as too_easy (taskgalaxy.difficulty; pass rates in extra.difficulty) before the balance.
Rows the balance leaves out are in `_rejects/` with reason balanced_out.
`python -m training.launch stage=sft` trains on out/sft.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pathlib import Path  # noqa: E402

from curation import config as configuration  # noqa: E402
from curation import schema  # noqa: E402
from curation.runner import run_steps  # noqa: E402
from curation.schema.manifest import shard_paths  # noqa: E402
from curation.spark import session  # noqa: E402
from curation.workdir import WorkFolder, hash_key  # noqa: E402
from curation.writer import WriterConfig, code_version, prepare_folder, write_output  # noqa: E402
from curation.steps import with_reject_column  # noqa: E402
from taskgalaxy.balance import BalanceConfig  # noqa: E402
from taskgalaxy.difficulty import DifficultyConfig, RateDifficulty  # noqa: E402
from taskgalaxy.generate import STEP as GENERATE_STEP  # noqa: E402
from taskgalaxy.generate import GenerateConfig, generation_plan, judge_tally  # noqa: E402
from taskgalaxy.steps import BalanceMixture, TagTaskTypes  # noqa: E402
from taskgalaxy.tagging import TagConfig  # noqa: E402

DEMO_SOURCES = ["out/pretrain", "out/cot/think", "out/cot/no_think", "out/cot/auto_think", "out/cot/agentic", "out/video"]


@dataclass
class BuildSftConfig:
    sources: list[str] = field(default_factory=list)  # shard folders; empty: the demo's outputs that exist
    output: str = "out/sft"
    # TaskGalaxy generation (off until a model is configured): generate.enabled=true
    # generate.images=DIR[,DIR] generate.llm.base_urls=[URL] generate.llm.model=NAME generate.judge...
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    tag: TagConfig = field(default_factory=TagConfig)
    # pass rates by sampled answers (off until models are configured): difficulty.enabled=true
    # difficulty.client.base_urls=[URL] difficulty.models=[A,B] difficulty.samples=4 difficulty.max_pass_rate=0.75
    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    card: bool = True
    keep_work: bool = False
    writer: WriterConfig = field(default_factory=WriterConfig)


def _spark_schema():
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema.SCHEMA)


SPARK_SCHEMA = _spark_schema()


def shard_files(folder: str) -> list[str]:
    root = Path(folder)
    if (root / "_manifest.json").exists():
        return [str(p) for p in shard_paths(root)]
    files = sorted(str(p) for p in root.glob("part-*.parquet"))
    if not files:
        raise SystemExit(f"build_sft: {folder} holds no part-*.parquet shards")
    return files


def run(cfg: BuildSftConfig, spark=None) -> dict:
    sources = cfg.sources or [s for s in DEMO_SOURCES if (Path(s) / "_manifest.json").exists()]
    if not sources:
        raise SystemExit("build_sft: no sources given and none of the demo's outputs exist "
                         f"({', '.join(DEMO_SOURCES)}): run `make demo` first or set sources=DIR[,DIR...]")
    files = [f for folder in sources for f in shard_files(folder)]
    out = Path(cfg.output)
    prepare_folder(out)
    spark = spark or session("keyeforge build_sft")
    started = time.time()
    key = hash_key("build_sft", code_version(), [(f, os.path.getsize(f), os.path.getmtime(f)) for f in files])
    steps = [TagTaskTypes(cfg.tag), RateDifficulty(cfg.difficulty), BalanceMixture(cfg.balance, taxonomy=cfg.tag.taxonomy)]
    # read and written once into the work folder: shards of several folders share file names,
    # and the row keys need distinct ones
    rows = with_reject_column(spark.read.schema(SPARK_SCHEMA).parquet(*files).select(*schema.COLUMNS))
    names = ["read_shards"]
    if cfg.generate.enabled:  # generated, judged QA rows (and the refused ones) join the pool
        images = [f for folder in (cfg.generate.images or sources) for f in shard_files(folder)]
        rows = rows.unionByName(generation_plan(spark, images, cfg.generate).frame())
        names.append(GENERATE_STEP)
        key = hash_key(key, dataclasses.asdict(cfg.generate))
    result = run_steps(spark, rows, steps, WorkFolder(out), key, sources=names)
    stats = {"job": "build_sft", **result.stats}
    if cfg.generate.enabled:  # over every judged pair, also those a later step refused (the card shows it)
        stats["judges"] = judge_tally(result.frame)
    resolved = dataclasses.asdict(dataclasses.replace(cfg, sources=sources))
    manifest = write_output(result.frame, str(out), result.step_names, resolved, cfg.writer, card=cfg.card,
                            title="keyeforge SFT mixture", stats=stats,
                            keep_work=cfg.keep_work)
    print(f"build_sft: {manifest['rows']:,} rows kept in {len(manifest['shards'])} shards, "
          f"{manifest['rejects']['rows']:,} rejected -> {cfg.output} ({time.time() - started:.1f}s)")
    return manifest


def main(argv: list[str]) -> None:
    cfg = configuration.job_config(BuildSftConfig, argv, "build_sft")
    if cfg is not None:
        run(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
