"""Build video shards: decode -> sample frames by Keye's rules -> transcribe -> interleave clips and
words by time -> caption rows and video tasks -> shards + card.

    spark-submit jobs/build_video.py                                   # bundled sample, local
    spark-submit jobs/build_video.py sources=/data/clips,/data/more.tar output=out/clips
    spark-submit jobs/build_video.py sources=talks.jsonl speech.engine=whisper speech.whisper_path=/models/whisper
    spark-submit jobs/build_video.py clips.mode=sentences frames.fps=1 tasks.matching=false
    python jobs/build_video.py --print-config                          # the resolved configuration

Sources are folders, tars and tables (.jsonl / .parquet) of video files with optional sidecars
(see synthesis.video.source). With no sources the bundled sample (synthesis.video.sample) is
generated under `sample_dir` and used. Every input that gives no row is in `_rejects/` with its
reason; a re-run of the same command with the same inputs reuses the rows from `OUTPUT/_work/`.
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
from curation.runner import run_steps  # noqa: E402
from curation.sources import fingerprint  # noqa: E402
from curation.spark import session  # noqa: E402
from curation.workdir import WorkFolder, hash_key  # noqa: E402
from curation.writer import WriterConfig, code_version, prepare_folder, write_output  # noqa: E402
from synthesis.video.rows import STEP  # noqa: E402
from synthesis.video.sample import make_sample  # noqa: E402
from synthesis.video.source import VideoConfig, video_plan  # noqa: E402


@dataclass
class BuildVideoConfig(VideoConfig):
    sources: list[str] = field(default_factory=list)  # folders, tars, tables; empty: the bundled sample
    output: str = "out/video"
    sample_dir: str = "out/video_sample"
    partitions: int = 0  # tasks over the groups (0: twice the default parallelism)
    card: bool = True
    keep_work: bool = False
    writer: WriterConfig = field(default_factory=WriterConfig)


def sample_sources(folder: Path) -> list[str]:
    return [str(folder / "folder"), str(folder / "videos.tar"), str(folder / "table.jsonl")]


def run(cfg: BuildVideoConfig, spark=None) -> dict:
    sources = cfg.sources or sample_sources(make_sample(cfg.sample_dir))
    out = Path(cfg.output)
    prepare_folder(out)
    spark = spark or session("keyeforge build_video")
    started = time.time()
    plan = video_plan(spark, sources, cfg, cfg.partitions)
    settings = dataclasses.asdict(cfg)
    for key in ("output", "card", "keep_work", "writer", "sample_dir", "partitions"):
        settings.pop(key)
    key = hash_key("build_video", code_version(), fingerprint(sources), settings)
    result = run_steps(spark, [plan], [], WorkFolder(out), key, sources=[STEP])
    resolved = dataclasses.asdict(dataclasses.replace(cfg, sources=sources))
    manifest = write_output(
        result.frame, str(out), result.step_names, resolved, cfg.writer, card=cfg.card,
        title="keyeforge video shards", stats={"job": "build_video", **result.stats}, keep_work=cfg.keep_work,
    )
    print(
        f"build_video: {manifest['rows']:,} rows kept in {len(manifest['shards'])} shards, "
        f"{manifest['rejects']['rows']:,} rejected -> {cfg.output} ({time.time() - started:.1f}s)"
    )
    return manifest


def main(argv: list[str]) -> None:
    cfg = configuration.job_config(BuildVideoConfig, argv, "build_video")
    if cfg is not None:
        run(cfg)


if __name__ == "__main__":
    main(sys.argv[1:])
