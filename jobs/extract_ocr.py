"""OCR rows from text-dense images: ``spark-submit jobs/extract_ocr.py input=DIR output=DIR``.

``input`` is a folder of contract shards (part-*.parquet); each row's first image is read by the
OCR engine (``engine.name=rapidocr`` by default, ``engine.name=paddleocr`` where PaddleOCR 3.x is
installed). Other keys: ``min_score``, ``min_chars``, ``max_side``, ``batch_size``,
``engine.threads``, ``engine.det_model_dir``/``engine.rec_model_dir``. Images without usable text
go to ``_rejects/`` with a reason.
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
from synthesis.ocr_extract.step import STEP, ExtractConfig, extract_ocr  # noqa: E402


@dataclass
class ExtractJobConfig(ExtractConfig):
    input: str = ""
    output: str = "out/ocr_extract"
    partitions: int = 0  # 0: as read
    card: bool = True
    writer: WriterConfig = field(default_factory=WriterConfig)


def main(argv: list[str]) -> dict | None:
    cfg = job_config(ExtractJobConfig, argv, "extract_ocr")
    if cfg is None:
        return None
    if not cfg.input:
        raise SystemExit("extract_ocr: input=DIR is required: a folder of contract shards (part-*.parquet)")
    spark = session("extract_ocr")
    start = time.time()
    df = spark.read.parquet(os.path.join(cfg.input, "part-*.parquet"))
    if cfg.partitions:
        df = df.repartition(cfg.partitions, "id")
    out = extract_ocr(df, cfg)
    manifest = write_output(out, cfg.output, steps=[STEP], config=dataclasses.asdict(cfg), writer=cfg.writer, card=cfg.card)
    print(json.dumps({"output": cfg.output, "rows": manifest["rows"], "rejected": manifest["rejects"]["rows"],
                      "seconds": round(time.time() - start, 1)}))
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
