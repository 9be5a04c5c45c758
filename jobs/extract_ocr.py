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

from pathlib import Path  # noqa: E402

from curation.config import job_config  # noqa: E402
from curation.runner import run_steps  # noqa: E402
from curation.schema.manifest import shard_paths  # noqa: E402
from curation.spark import session  # noqa: E402
from curation.workdir import WorkFolder, hash_key  # noqa: E402
from curation.writer import WriterConfig, code_version, prepare_folder, write_output  # noqa: E402
from synthesis.ocr_extract.step import ExtractConfig, ExtractOcr  # noqa: E402


@dataclass
class ExtractJobConfig(ExtractConfig):
    input: str = ""
    output: str = "out/ocr_extract"
    partitions: int = 0  # at least this many input splits (0: as Spark splits the shards)
    card: bool = True
    writer: WriterConfig = field(default_factory=WriterConfig)


def main(argv: list[str]) -> dict | None:
    cfg = job_config(ExtractJobConfig, argv, "extract_ocr")
    if cfg is None:
        return None
    if not cfg.input:
        raise SystemExit("extract_ocr: input=DIR is required: a folder of contract shards (part-*.parquet)")
    files = [str(p) for p in shard_paths(cfg.input)] if (Path(cfg.input) / "_manifest.json").exists() else sorted(
        str(p) for p in Path(cfg.input).glob("part-*.parquet")
    )
    if not files:
        raise SystemExit(f"extract_ocr: {cfg.input} holds no part-*.parquet shards")
    step = ExtractOcr(cfg)
    out = Path(cfg.output)
    prepare_folder(out)
    spark = session("extract_ocr")
    start = time.time()
    if cfg.partitions:
        spark.conf.set("spark.sql.files.minPartitionNum", str(cfg.partitions))
    key = hash_key("extract_ocr", code_version(), [(f, os.path.getsize(f), os.path.getmtime(f)) for f in files])
    result = run_steps(spark, None, [step], WorkFolder(out), key, sources=[], base_files=files)
    manifest = write_output(result.frame, str(out), result.step_names, config=dataclasses.asdict(cfg), writer=cfg.writer,
                            card=cfg.card, stats={"job": "extract_ocr", **result.stats})
    print(json.dumps({"output": cfg.output, "rows": manifest["rows"], "rejected": manifest["rejects"]["rows"],
                      "seconds": round(time.time() - start, 1)}))
    return manifest


if __name__ == "__main__":
    main(sys.argv[1:])
