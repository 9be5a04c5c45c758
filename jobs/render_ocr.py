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

from curation.config import job_config  # noqa: E402
from curation.spark import session  # noqa: E402
from curation.writer import WriterConfig, write_output  # noqa: E402
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
    spark = session("render_ocr")
    start = time.time()
    df = rendered_source(spark, cfg)
    manifest = write_output(df, cfg.output, steps=[STEP], config=dataclasses.asdict(cfg), writer=cfg.writer, card=cfg.card)
    print(
        json.dumps(
            {"output": cfg.output, "images": cfg.count, "rows": manifest["rows"],
             "rejected": manifest["rejects"]["rows"], "seconds": round(time.time() - start, 1)}
        )
    )
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
