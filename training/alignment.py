"""Iterative alignment (Keye-VL report §4.2.3): rounds of rejection sampling into preference pairs,
then MPO from the current weights.

    python -m training.launch stage=iterative_alignment            # configs/stages/iterative_alignment.yaml

Round r (1..alignment.rounds), in OUTPUT/round_{r}/:
1. pairs/: `alignment.prompts` prompts of `data` (`rl` rows: prompt + answer; round r takes the
   next slice, wrapping around) are each sampled `rl.group_size` times from the current weights in
   a thinking mode drawn by `rl.modes` (training/tasks/rl.py's sampler: batched generate, KV cache,
   randomness a function of (seed, round, row)); every reply is scored with the rule rewards and,
   when weighted, the judge (`rl.rewards`, training/rewards.py); pairs are best against worst,
   second best against second worst, ..., while the score margin is at least `alignment.margin`,
   at most `alignment.pairs_per_prompt` per prompt. Written as a keyeforge folder of `preference`
   rows (each reply's scores, the margin, the round and the weights it came from in `extra`) with
   its funnel (prompts in; prompts that gave a pair out; the others by reason) and a card.
2. train/: the mpo stage (task preference) for `max_steps` steps on those pairs, starting from the
   previous round's export (round 1: `init` / `model`), its reference being those same weights.

Resuming: a round whose train/export exists is done; a pairs folder with its manifest is reused
(an incomplete one is made again, the same bytes: sampling is deterministic); the MPO run resumes
from its own newest checkpoint. So the same command after a kill goes on at the round and step it
was killed in. Several ranks: each samples its share of the prompts (rank r: every world-th), rank
0 writes the folder once all are in; the MPO round trains on all ranks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

log = logging.getLogger(__name__)

MARGIN_BELOW = "margin_below"
NOT_RL = "not_rl"


def pairs_of(scores: list[float], margin: float, cap: int) -> list[tuple[int, int]]:
    """(chosen, rejected) indices: best vs worst, next best vs next worst, ... while the margin holds."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    pairs = []
    for k in range(min(cap, len(order) // 2)):
        best, worst = order[k], order[-1 - k]
        if scores[best] - scores[worst] < margin:
            break
        pairs.append((best, worst))
    return pairs


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def round_prompts(cfg, round_index: int) -> list[dict]:
    """This round's slice of the prompt rows, in the folders' manifest order (round r: rows
    (r-1)*P .. r*P-1, wrapping around); read row group by row group, only as far as needed."""
    import pyarrow.parquet as pq

    from curation.schema.manifest import list_shards

    shards = [shard for folder in cfg.data for shard in list_shards(folder)]
    total = sum(shard.rows for shard in shards)
    if not total:
        raise ValueError(f"no prompt rows in {cfg.data}")
    want = cfg.alignment.prompts
    wanted = {((round_index - 1) * want + k) % total: k for k in range(want)}
    found: dict[int, dict] = {}
    start = 0
    for shard in shards:
        parquet = pq.ParquetFile(shard.path)
        for group, rows in enumerate(shard.row_group_rows):
            here = [i for i in range(start, start + rows) if i in wanted]
            if here:
                table = parquet.read_row_group(group).to_pylist()
                found.update({wanted[i]: dict(table[i - start]) for i in here})
            start += rows
    return [found[k] for k in range(want)]


def policy_name(cfg, round_index: int) -> str:
    """The weights a round samples from, as the pairs record it: the start (init folder, or model and
    seed) in round 1, the previous round's MPO export after (relative to OUTPUT, so two runs of
    the same configuration write the same bytes wherever they write them)."""
    if round_index > 1:
        return f"round_{round_index - 1}/train/export"
    return str(cfg.init) if cfg.init else f"{cfg.model}@seed{cfg.seed}"


def sample_pairs(cfg, model_source: str, round_index: int, folder: Path) -> dict:
    """Step 1 of a round (see the module docstring); returns the folder's manifest."""
    import pyarrow.parquet as pq
    import torch

    from curation.card import build_card
    from curation.schema import make_row, rows_to_table
    from curation.schema.manifest import read_manifest
    from training.engine import rank_world, use_bf16
    from training.tasks.rl import RlTask

    if (folder / "_manifest.json").is_file():
        return read_manifest(folder)
    rank, world = rank_world()
    parts = folder / "_parts"
    parts.mkdir(parents=True, exist_ok=True)
    sampler = RlTask()
    sampler.setup_sampling(cfg)
    model = sampler.build_model(dataclasses.replace(cfg, init=model_source) if model_source else cfg)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    model = model.to(device, dtype=torch.bfloat16 if use_bf16(cfg) else None).eval()
    rows, funnel, scored = [], Counter(), []
    mine = [row for index, row in enumerate(round_prompts(cfg, round_index)) if index % world == rank]
    funnel["in"] += len(mine)
    funnel[NOT_RL] += sum(1 for row in mine if row.get("kind") != "rl" or not row.get("answer"))
    mine = [row for row in mine if row.get("kind") == "rl" and row.get("answer")]
    modes = [sampler.mode_for(row["id"], "round", round_index) for row in mine]
    sampled = []
    for start in range(0, len(mine), cfg.rl.prompts):  # rl.prompts prompts a generate
        chunk = slice(start, start + cfg.rl.prompts)
        sampled += sampler.sample(model, mine[chunk], modes[chunk], cfg.rl.group_size, device, "round", round_index)
    for row, mode, (_, responses) in zip(mine, modes, sampled):
        replies = [reply for _, reply in responses]
        scores = sampler.score(replies, [row] * len(replies), [mode] * len(replies))
        scored += scores["total"]
        pairs = pairs_of(scores["total"], cfg.alignment.margin, cfg.alignment.pairs_per_prompt)
        if not pairs:
            funnel[MARGIN_BELOW] += 1
            continue
        funnel["out"] += 1
        for chosen, rejected in pairs:
            extra = {"round": round_index, "policy": policy_name(cfg, round_index), "prompt_id": row["id"],
                     "margin": scores["total"][chosen] - scores["total"][rejected],
                     "scores_chosen": {k: v[chosen] for k, v in scores.items()},
                     "scores_rejected": {k: v[rejected] for k, v in scores.items()},
                     "answer": row.get("answer")}
            rows.append(make_row(
                "iterative_alignment", "preference",
                [*row["messages"], {"role": "assistant", "content": [{"type": "text", "text": replies[chosen]}]}],
                row.get("images") or [], row.get("videos") or [],
                rejected=[*row["messages"], {"role": "assistant",
                                             "content": [{"type": "text", "text": replies[rejected]}]}],
                think_mode=mode, task_types=row.get("task_types") or [], lang=row.get("lang"), extra=extra))
    pq.write_table(rows_to_table(rows), parts / f"rank{rank:05d}.parquet", row_group_size=64)
    (parts / f"rank{rank:05d}.json").write_text(json.dumps({"funnel": dict(funnel), "scores": scored}))
    _barrier()
    if rank == 0:
        _write_folder(folder, parts, world, round_index, cfg)
        build_card(folder, title=f"iterative alignment round {round_index}: preference pairs")
    _barrier()
    return read_manifest(folder)


def _write_folder(folder: Path, parts: Path, world: int, round_index: int, cfg) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.schema import SCHEMA_VERSION
    from curation.schema.manifest import file_sha256, write_manifest

    tables = [pq.read_table(parts / f"rank{r:05d}.parquet") for r in range(world)]
    reports = [json.loads((parts / f"rank{r:05d}.json").read_text()) for r in range(world)]
    table = pa.concat_tables(tables)
    path = folder / "part-00000.parquet"
    pq.write_table(table, path, row_group_size=64)
    funnel = Counter()
    for report in reports:
        funnel.update(report["funnel"])
    scores = [s for report in reports for s in report["scores"]]
    rejected = {k: v for k, v in funnel.items() if k not in ("in", "out") and v}
    (folder / "_funnel.json").write_text(json.dumps({
        "input_rows": funnel["in"], "kept_rows": table.num_rows,
        "steps": [{"step": "sample_and_pair", "in": funnel["in"], "out": funnel["out"], "rejected": rejected}]}, indent=2))
    (folder / "_stats.json").write_text(json.dumps({
        "job": "iterative_alignment", "round": round_index, "policy": policy_name(cfg, round_index),
        "samples_per_prompt": cfg.rl.group_size, "margin": cfg.alignment.margin,
        "pairs_per_prompt": cfg.alignment.pairs_per_prompt, "replies_scored": len(scores),
        "score_mean": sum(scores) / len(scores) if scores else None}, indent=2))
    shutil.rmtree(parts)
    size = path.stat().st_size
    write_manifest(folder, {"schema_version": SCHEMA_VERSION, "rows": table.num_rows, "bytes": size,
                            "shards": [{"path": path.name, "rows": table.num_rows, "bytes": size,
                                        "sha256": file_sha256(path)}],
                            "config": {"round": round_index, "policy": policy_name(cfg, round_index)}})


def run_rounds(cfg):
    """Every round of the module docstring; the last round's TrainResult."""
    from training.engine import init_distributed
    from training.launch import run

    init_distributed()  # before the first round's sampling: ranks split the prompts
    output = cfg.output_dir
    source = cfg.init or ""
    result = None
    for round_index in range(1, cfg.alignment.rounds + 1):
        here = output / f"round_{round_index}"
        export = here / "train" / "export"
        if (export / "config.json").is_file():
            log.info("round %d done before: %s", round_index, export)
            source = str(export)
            continue
        pairs = here / "pairs"
        manifest = sample_pairs(cfg, source, round_index, pairs)
        log.info("round %d: %d pairs in %s", round_index, manifest["rows"], pairs)
        if not manifest["rows"]:
            raise RuntimeError(f"round {round_index}: no pair reached margin {cfg.alignment.margin} "
                               f"({pairs / '_funnel.json'}); lower alignment.margin or sample more")
        train = dataclasses.replace(cfg, data=[str(pairs)], data_weights=[], output=str(here / "train"),
                                    init=source or None, export=True, alignment=dataclasses.replace(cfg.alignment, rounds=0))
        result = run(train)
        source = str(export)
    if _is_rank0():
        lines = [f"# Iterative alignment: {cfg.alignment.rounds} rounds", ""]
        for round_index in range(1, cfg.alignment.rounds + 1):
            here = output / f"round_{round_index}"
            rows = json.loads((here / "pairs" / "_manifest.json").read_text())["rows"]
            lines.append(f"- round {round_index}: {rows} pairs ({here / 'pairs'}), MPO run {here / 'train'} "
                         f"(report.md), weights {here / 'train' / 'export'}")
        (output / "report.md").write_text("\n".join(lines) + "\n")
    return result


def _is_rank0() -> bool:
    from training.engine import rank_world

    return rank_world()[0] == 0
