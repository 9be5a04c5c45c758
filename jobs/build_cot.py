"""Build reasoning data for the CoT cold start and the post-training stages:

    OUTPUT/think/ no_think/ auto_think/ agentic/   one folder per thinking mode (cot_coldstart)
    OUTPUT/preference/                            chosen / rejected pairs (mpo)
    OUTPUT/rl/                                    prompts with answers (rl)

    spark-submit jobs/build_cot.py                                     # offline: synthetic tasks
    spark-submit jobs/build_cot.py count=2000 output=/data/cot
    spark-submit jobs/build_cot.py prompts=/data/prompts teacher.enabled=true \\
        teacher.client.base_urls=http://gpu1:8000/v1,http://gpu2:8000/v1 teacher.client.model=Qwen/Qwen2.5-VL-72B-Instruct
    python jobs/build_cot.py --print-config

With no arguments every folder holds `count` samples of the verifiable synthetic tasks
(synthesis.reasoning: counting, bar charts, arithmetic, rotated / low-contrast / small text), each
answer confirmed by a check independent of its generator, in English and Chinese; agentic samples
run their code in the sandbox (synthesis.sandbox) and show exactly what it printed. With
`teacher.enabled=true` a model (synthesis.model_client) also answers the prompts of `prompts=`
(shard folders of rows with an `answer`, or JSONL: synthesis.cot.prompts) in each mode, and only replies with the right answer
are kept. Each folder is a complete output folder: shards, rejects with reasons, funnel, stats
and a card with the tasks, languages, decisions and reply lengths it holds.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pyspark.sql import functions as F

from curation import config as configuration
from curation.runner import run_steps
from curation.schema.manifest import OutputFolderError
from curation.sources import fingerprint
from curation.spark import session
from curation.workdir import WorkFolder, hash_key
from curation.writer import WriterConfig, code_version, prepare_folder, write_output
from synthesis.cot.describe import describe
from synthesis.cot.synthetic import FOLDERS, STEP, SyntheticConfig, synthetic_plan
from synthesis.cot.prompts import prompt_rows
from synthesis.cot.teacher import FOLDER, TeacherConfig, teacher_frame


@dataclass
class BuildCotConfig(SyntheticConfig):
    """The synthetic settings (count, seed, kinds, languages, templates, sandbox, ...) and these."""

    output: str = "out/cot"
    # which of the six to write
    folders: list[Literal["think", "no_think", "auto_think", "agentic", "preference", "rl"]] = field(
        default_factory=lambda: list(FOLDERS)
    )
    prompts: list[str] = field(default_factory=list)  # shard folders or JSONL files of prompts with answers (teacher)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    card: bool = True


def run(cfg: BuildCotConfig, spark=None) -> dict[str, dict]:
    unknown = set(cfg.folders) - set(FOLDERS)
    if unknown:
        raise configuration.ConfigError(f"folders: unknown {sorted(unknown)}; valid: {', '.join(FOLDERS)}")
    if cfg.teacher.enabled and not cfg.prompts:
        raise configuration.ConfigError("teacher.enabled=true needs prompts=PATH[,PATH...] (shard folders or JSONL with answers)")
    spark = spark or session("keyeforge build_cot")
    synthetic = SyntheticConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SyntheticConfig)})
    teacher = _teacher_rows(spark, cfg) if cfg.teacher.enabled else None
    started = time.time()
    manifests = {}
    for folder in cfg.folders:
        out = Path(cfg.output) / folder
        prepare_folder(out)
        sources = [synthetic_plan(spark, folder, synthetic)] if cfg.count > 0 else []
        names = [STEP] if sources else []
        key_parts = ["build_cot", folder, code_version(), dataclasses.asdict(synthetic)]
        if teacher is not None and folder in cfg.teacher.modes:
            sources = _with_teacher(spark, sources, teacher.where(F.col(FOLDER) == folder).drop(FOLDER))
            names.append("teacher")
            key_parts.append([fingerprint(cfg.prompts), dataclasses.asdict(cfg.teacher)])
        if not sources:
            continue
        result = run_steps(spark, sources, [], WorkFolder(out), hash_key(*key_parts), sources=names)
        stats = {"job": "build_cot", "folder": folder, **result.stats, "contents": describe(result.frame)}
        manifests[folder] = write_output(
            result.frame, str(out), result.step_names, dataclasses.asdict(cfg), cfg.writer, card=cfg.card,
            title=f"keyeforge reasoning data: {folder}", stats=stats,
        )
        print(f"build_cot: {folder}: {manifests[folder]['rows']:,} rows, {manifests[folder]['rejects']['rows']:,} refused",
              flush=True)
    WorkFolder(Path(cfg.output) / "_teacher").remove()  # every folder that used it is complete
    print(f"build_cot: {len(manifests)} folders -> {cfg.output} ({time.time() - started:.1f}s)")
    return manifests


def _teacher_rows(spark, cfg: BuildCotConfig):
    """Every teacher row of every mode, computed once (persisted under OUTPUT/_teacher/)."""
    work = WorkFolder(Path(cfg.output) / "_teacher")
    key = hash_key("teacher", code_version(), fingerprint(cfg.prompts), dataclasses.asdict(cfg.teacher),
                   dataclasses.asdict(cfg.sandbox))
    record = work.find("rows", key)
    if record is None:
        frame = teacher_frame(prompt_rows(spark, cfg.prompts), cfg.teacher, cfg.sandbox, cfg.templates)
        record = work.write_rows("rows", key, frame)
    return work.read_rows(spark, record).drop("_row", "_bytes")


def _with_teacher(spark, plans, teacher_rows):
    """The synthetic plans' rows and the teacher's, as one frame."""
    from functools import reduce

    from pyspark.sql import DataFrame

    frames = [plan.frame() for plan in plans]
    return reduce(DataFrame.unionByName, [*frames, teacher_rows.select(*frames[0].columns) if frames else teacher_rows])


def main(argv: list[str]) -> None:
    cfg = configuration.job_config(BuildCotConfig, argv, "build_cot")
    if cfg is None:
        return
    try:
        run(cfg)
    except (configuration.ConfigError, OutputFolderError) as exc:
        raise SystemExit(f"build_cot: {exc}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
