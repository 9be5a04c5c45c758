"""Build pretraining shards: ingest (+ rendered OCR) -> validate -> exact dedup -> near-duplicate
text -> duplicate images -> benchmark decontamination -> CLIP filter -> shards + card.

    spark-submit jobs/build_pretrain.py                                  # bundled sample, local
    spark-submit jobs/build_pretrain.py sources=/data/laion output=out/laion clip.threshold=0.28
    spark-submit jobs/build_pretrain.py render_ocr.enabled=true render_ocr.count=5000
    spark-submit --master spark://host:7077 jobs/build_pretrain.py --config configs/pretrain.yaml
    python jobs/build_pretrain.py --print-config                         # the resolved configuration

With no sources the bundled sample corpus is generated (deterministically) under `sample_dir` and
used. Every step can be switched off with `<step>.enabled=false`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field

from curation import config as configuration
from curation import sample_corpus
from curation.clip_filter import ClipConfig, clip_filter
from curation.dedup import DecontamConfig, ImageDedupConfig, NearTextDedupConfig, decontaminate, image_dedup, near_dedup_text
from curation.exact_dedup import ExactDedupConfig, exact_dedup
from curation.sources import IngestConfig, read_sources
from curation.spark import session
from curation.validate import ValidateConfig, validate
from curation.writer import WriterConfig, write_output
from synthesis.ocr_render.source import STEP as RENDER_STEP
from synthesis.ocr_render.source import RenderSourceConfig, add_rendered


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


# (config field, step function) in pipeline order; ingest is the sources themselves.
STEPS = [
    ("validate", validate),
    ("exact_dedup", exact_dedup),
    ("near_dedup", near_dedup_text),
    ("image_dedup", image_dedup),
    ("decontam", decontaminate),
    ("clip", clip_filter),
]


def run(cfg: BuildPretrainConfig, spark=None) -> dict:
    sources = cfg.sources or sample_corpus.source_paths(sample_corpus.generate(cfg.sample_dir, seed=cfg.seed))
    spark = spark or session("keyeforge build_pretrain")
    started = time.time()
    df = read_sources(spark, sources, cfg.ingest)
    names = ["ingest"]
    if cfg.render_ocr.enabled:
        df = add_rendered(spark, df, cfg.render_ocr)
        names.append(RENDER_STEP)
    for name, step in STEPS:
        step_cfg = getattr(cfg, name)
        if step_cfg.enabled and not (name == "decontam" and not step_cfg.benchmarks):
            df = step(df, step_cfg)
            names.append(name)
    resolved = dataclasses.asdict(dataclasses.replace(cfg, sources=sources))
    manifest = write_output(df, cfg.output, names, resolved, cfg.writer, card=cfg.card, title="keyeforge pretraining shards")
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
