"""Build pretraining shards: ingest (+ rendered OCR) -> validate -> exact dedup -> near-duplicate
text -> duplicate images -> benchmark decontamination -> CLIP filter -> shards + card.

    spark-submit jobs/build_pretrain.py                                  # bundled sample, local
    spark-submit jobs/build_pretrain.py sources=/data/laion output=out/laion clip.threshold=0.28
    spark-submit jobs/build_pretrain.py render_ocr.enabled=true render_ocr.count=5000
    spark-submit --master spark://host:7077 jobs/build_pretrain.py --config configs/pretrain.yaml
    python jobs/build_pretrain.py --print-config                         # the resolved configuration

With no sources the bundled sample corpus is generated (deterministically) under `sample_dir` and
used. Every step can be switched off with `<step>.enabled=false`. A killed run resumes: run the same
command again and the steps it finished are reused from `OUTPUT/_work/`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from curation import config as configuration
from curation import sample_corpus
from curation.clip_filter import ClipConfig, ClipFilter
from curation.dedup.decontam import DecontamConfig, Decontaminate
from curation.dedup.near_image import ImageDedup, ImageDedupConfig
from curation.dedup.near_text import NearDedup, NearTextDedupConfig
from curation.exact_dedup import ExactDedup, ExactDedupConfig
from curation.runner import run_steps
from curation.sources import IngestConfig, fingerprint, source_plans
from curation.spark import session
from curation.steps import Step
from curation.validate import Validate, ValidateConfig
from curation.workdir import WorkFolder, hash_key
from curation.writer import WriterConfig, code_version, prepare_folder, write_output
from synthesis.ocr_render.source import STEP as RENDER_STEP
from synthesis.ocr_render.source import RenderSourceConfig, rendered_plan


@dataclass
class BuildPretrainConfig:
    sources: list[str] = field(default_factory=list)  # PATH or name=PATH; empty: the bundled sample
    output: str = "out/pretrain"
    sample_dir: str = "out/sample"
    seed: int = 0
    ingest: IngestConfig = field(default_factory=IngestConfig)
    # Rendered OCR samples added as one more source (synthesis.ocr_render); off by default.
    render_ocr: RenderSourceConfig = field(default_factory=lambda: RenderSourceConfig(enabled=False))
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_dedup: NearTextDedupConfig = field(default_factory=NearTextDedupConfig)
    image_dedup: ImageDedupConfig = field(default_factory=ImageDedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)  # runs when benchmarks are listed
    clip: ClipConfig = field(default_factory=ClipConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    card: bool = True
    # Keep OUTPUT/_work after success: a later run with other filter settings (a CLIP threshold)
    # then reuses every persisted result. Off: the work folder goes when the manifest is written.
    keep_work: bool = False


def pipeline(cfg: BuildPretrainConfig) -> list[Step]:
    """The steps, in order (each switched off by its config's `enabled`)."""
    return [
        Validate(cfg.validate),
        ExactDedup(cfg.exact_dedup),
        NearDedup(cfg.near_dedup),
        ImageDedup(cfg.image_dedup),
        Decontaminate(cfg.decontam),
        ClipFilter(cfg.clip),
    ]


def run(cfg: BuildPretrainConfig, spark=None) -> dict:
    sources = cfg.sources or sample_corpus.source_paths(sample_corpus.generate(cfg.sample_dir, seed=cfg.seed))
    steps = pipeline(cfg)  # a step whose package is missing fails here, before any work
    out = Path(cfg.output)
    prepare_folder(out)
    spark = spark or session("keyeforge build_pretrain")
    started = time.time()
    plans = source_plans(spark, sources, cfg.ingest)  # read in the tasks that write the rows
    names = ["ingest"]
    if cfg.render_ocr.enabled:
        plans.append(rendered_plan(spark, cfg.render_ocr))
        names.append(RENDER_STEP)
    # The input's key: the sources as they are now and everything that turns them into rows.
    key = hash_key("build_pretrain", code_version(), fingerprint(sources), cfg.ingest, cfg.render_ocr)
    result = run_steps(spark, plans, steps, WorkFolder(out), key, sources=names)
    resolved = dataclasses.asdict(dataclasses.replace(cfg, sources=sources))
    manifest = write_output(
        result.frame, str(out), result.step_names, resolved, cfg.writer, card=cfg.card,
        title="keyeforge pretraining shards", stats={"job": "build_pretrain", **result.stats}, keep_work=cfg.keep_work,
    )
    print(
        f"build_pretrain: {manifest['rows']:,} rows kept in {len(manifest['shards'])} shards, "
        f"{manifest['rejects']['rows']:,} rejected -> {cfg.output} ({time.time() - started:.1f}s)"
    )
    return manifest


def main(argv: list[str]) -> None:
    cfg = configuration.job_config(BuildPretrainConfig, argv, "build_pretrain")
    if cfg is not None:
        run(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
