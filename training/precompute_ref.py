"""`python -m training.precompute_ref data=IN output=OUT [init=HF_FOLDER | model=tiny seed=0] ...`:
the reference model's log-probs of every preference pair, written into a copy of the folder.

The mpo stage needs, per pair, the reference's summed log-probability of the chosen and of the
rejected response. Computed once here, training reads them from the rows
(`mpo.reference=precomputed`) and never builds or loads the reference model: half the weights
in memory, and one forward less per step.

OUT is IN with every shard rewritten row group by row group, each row's `extra` JSON given

    "ref_logps": {"chosen": float, "rejected": float, "model": "<init folder or model@seedN>"}

(`model` is what training checks against its own starting weights), and rejects, funnel, stats
and card copied; its manifest records the reference model, max_tokens and the rows left without
values (a row the mpo pipeline would skip: not a pair, unprocessable, over max_tokens) by reason.
Settings come from the mpo stage config (configs/stages/mpo.yaml) and key=value overrides, so
model, init, max_tokens and precision are the training run's own.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from curation.config import ConfigError
from curation.schema.manifest import (
    CARD,
    FUNNEL,
    MANIFEST,
    REJECTS,
    STATS,
    OutputFolderError,
    file_sha256,
    read_manifest,
    write_manifest,
)

log = logging.getLogger("training.precompute_ref")


class PairScorer:
    """Summed log-probs of [chosen, rejected] of many pairs, packed up to max_tokens a forward."""

    def __init__(self, model, max_tokens: int, device, dtype=None):
        self.model, self.max_tokens, self.device, self.dtype = model, max_tokens, device, dtype

    def __call__(self, pairs: list[list]) -> list[tuple[float, float]]:
        out, sequence, length = [], [], 0
        for samples in pairs:
            size = sum(len(s.input_ids) for s in samples)
            if sequence and length + size > self.max_tokens:
                out += self._run(sequence)
                sequence, length = [], 0
            sequence.append(samples)
            length += size
        return out + (self._run(sequence) if sequence else [])

    def _run(self, pairs: list[list]) -> list[tuple[float, float]]:
        import torch

        from training.data.packer import packed_inputs
        from training.losses import segment_sums
        from training.tasks.base import to_device

        inputs = to_device(packed_inputs([s for samples in pairs for s in samples]), self.device)
        if self.dtype is not None and inputs.get("pixel_values") is not None:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.no_grad():
            logps = segment_sums(self.model(**inputs, return_logits=False).token_logps, inputs["cu_seqlens"])
        values = logps.float().tolist()
        return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def precompute(cfg, source: Path, output: Path, batch_rows: int = 64) -> dict:
    """Write OUTPUT (see the module docstring); returns its manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from training.data.pipeline import pair_samples
    from training.engine import use_bf16
    from training.processor import KeyeProcessor, load_tokenizer
    from training.tasks.preference import PreferenceTask, reference_name

    manifest = read_manifest(source)
    if output.exists() and any(output.iterdir()):
        raise OutputFolderError(f"{output} exists and is not empty: give a new folder")
    output.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    dtype = torch.bfloat16 if use_bf16(cfg) else None
    model = PreferenceTask().build_model(cfg).to(device, dtype=dtype).eval()
    processor = KeyeProcessor(load_tokenizer())
    scorer = PairScorer(model, cfg.max_tokens, device, dtype)
    name = reference_name(cfg)
    skipped: Counter[str] = Counter()
    done = 0
    shards = []
    for entry in manifest["shards"]:
        path, target = source / entry["path"], output / entry["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        parquet = pq.ParquetFile(path)
        with pq.ParquetWriter(target, parquet.schema_arrow) as writer:
            for group in range(parquet.num_row_groups):  # one row group in, one out: the layout is kept
                rows = parquet.read_row_group(group).to_pylist()
                for start in range(0, len(rows), batch_rows):
                    chunk = rows[start : start + batch_rows]
                    paired = [(row, *pair_samples(processor, row, cfg.max_tokens)) for row in chunk]
                    scores = iter(scorer([samples for _, samples, _ in paired if samples is not None]))
                    for row, samples, reason in paired:
                        if samples is None:
                            skipped[reason] += 1
                            continue
                        chosen, rejected = next(scores)
                        extra = json.loads(row.get("extra") or "{}")
                        extra["ref_logps"] = {"chosen": chosen, "rejected": rejected, "model": name}
                        row["extra"] = json.dumps(extra, ensure_ascii=False, sort_keys=True)
                        done += 1
                writer.write_table(pa.Table.from_pylist(rows, schema=parquet.schema_arrow))
        shards.append({**entry, "bytes": target.stat().st_size, "sha256": file_sha256(target)})
        log.info("%s: %d pairs scored so far", entry["path"], done)
    for name_ in (REJECTS, CARD):
        if (source / name_).is_dir():
            shutil.copytree(source / name_, output / name_)
    for name_ in (FUNNEL, STATS):
        if (source / name_).is_file():
            shutil.copy2(source / name_, output / name_)
    manifest = {**manifest, "shards": shards, "bytes": sum(s["bytes"] for s in shards),
                "ref_logps": {"model": name, "max_tokens": cfg.max_tokens, "precision": "bf16" if dtype else "fp32",
                              "source": str(source), "rows_scored": done, "rows_without": dict(skipped)}}
    write_manifest(output, manifest)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    from training.stages import load_stage

    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        stage = [a for a in argv if a.startswith("stage=")] or ["stage=mpo"]
        cfg = load_stage([*stage, *(a for a in argv if not a.startswith("stage="))])
        if len(cfg.data) != 1 or not cfg.output:
            raise ConfigError("give one input folder and a new output folder: data=IN output=OUT")
        manifest = precompute(cfg, Path(cfg.data[0]), Path(cfg.output))
    except (ConfigError, OutputFolderError, OSError) as exc:
        raise SystemExit(f"training.precompute_ref: {exc}") from None
    ref = manifest["ref_logps"]
    print(f"{cfg.output}: {ref['rows_scored']} pairs with reference log-probs of {ref['model']}; "
          f"without: {ref['rows_without'] or 'none'} ({MANIFEST})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
