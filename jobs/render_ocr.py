"""Render OCR training data: ``spark-submit jobs/render_ocr.py count=N output=DIR [key=value ...]``.

Every key of ``synthesis.ocr_render.source.RenderSourceConfig`` can be set, e.g. ``seed=3``,
``languages={zh: 1.0}``, ``layout.weights={table: 1}``, ``effects.enabled=false``,
``fonts.folders=[/my/fonts]``, ``backgrounds=out/images`` (scene backgrounds from shards).
The same seed gives the same bytes, whatever the partition count.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pathlib import Path  # noqa: E402

from curation.config import job_config  # noqa: E402
from curation.runner import run_steps  # noqa: E402
from curation.spark import session  # noqa: E402
from curation.workdir import WorkFolder, hash_key  # noqa: E402
from curation.writer import WriterConfig, code_version, prepare_folder, write_output  # noqa: E402
from synthesis.ocr_render.source import STEP, RenderSourceConfig, rendered_source  # noqa: E402


@dataclass
class RenderJobConfig(RenderSourceConfig):
    output: str = "out/ocr_render"
    card: bool = True
    writer: WriterConfig = field(default_factory=WriterConfig)


def main(argv: list[str]) -> dict | None:
    cfg = job_config(RenderJobConfig, argv, "render_ocr")
    if cfg is None:
        return None
    out = Path(cfg.output)
    prepare_folder(out)
    spark = session("render_ocr")
    start = time.time()
    df = rendered_source(spark, cfg)
    key = hash_key("render_ocr", code_version(), dataclasses.asdict(cfg))
    result = run_steps(spark, df, [], WorkFolder(out), key, sources=[STEP])
    manifest = write_output(result.frame, str(out), result.step_names, config=dataclasses.asdict(cfg), writer=cfg.writer,
                            card=cfg.card, stats={"job": "render_ocr", **result.stats})
    print(
        json.dumps(
            {"output": cfg.output, "images": cfg.count, "rows": manifest["rows"],
             "rejected": manifest["rejects"]["rows"], "seconds": round(time.time() - start, 1)}
        )
    )
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
