"""Real multi-process training on CPU: `python -m training.launch num_gpus=2` starts two gloo ranks
through the DeepSpeed launcher (ZeRO-2). The run reads a finite folder (epochs=1) whose end the
ranks reach apart, balances every step, and must equal one process training each step's global
batch as micro-batches. A killed (SIGKILL) run, started again, resumes by itself and ends with the
weights and the sample ledger of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_helpers import assert_same_training, run_ranks
from keye_helpers import tiny, training_rows, write_shards
from tests.launch_helpers import kill_at_checkpoint, launch
from safetensors.torch import load_file

COMMON = ("max_tokens=192", "packer_buffer=8", "shuffle_buffer=8", "schedule.name=constant", "optimizer.grad_clip=0")
SGD = ("optimizer.name=sgd", "optimizer.lr=0.5", "optimizer.weight_decay=0")


def ledger_ids(output: Path) -> dict[int, list[tuple[int, int, list[str]]]]:
    """{rank: [(step, owner, ids) per sequence]} from OUTPUT/ledger/."""
    from training.metrics import read_ledger

    return {rank: [(r["step"], s["owner"], s["ids"]) for r in records for s in r["sequences"]]
            for rank, records in read_ledger(output).items()}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("dist") / "mix", training_rows(26), row_group_rows=4)


def test_two_ranks_balanced_to_the_end_equal_one_process(tmp_path, folder):
    from training.engine import build_engine, train_step
    from training.global_step import GlobalSteps
    from training.launch import build_pipeline
    from training.processor import load_tokenizer
    from training.stages import load_stage

    base = ("stage=pretrain", f"data={folder}", "max_steps=50", "epochs=1", "micro_batches=2", *COMMON, *SGD,
            "max_tokens=64")  # a few samples per sequence: several steps
    launch(*base, "num_gpus=2", f"output={tmp_path / 'dp'}")
    out = tmp_path / "dp"
    ledgers = ledger_ids(out)
    assert sorted(ledgers) == [0, 1]
    seen = [i for rank in ledgers for _, _, ids in ledgers[rank] for i in ids]
    assert len(seen) == len(set(seen))  # nothing trained twice
    read_by = {owner: {i for rank in ledgers for _, o, ids in ledgers[rank] if o == owner for i in ids}
               for owner in (0, 1)}
    assert read_by[0] and read_by[1] and not read_by[0] & read_by[1]  # the ranks read disjoint rows
    moved = sum(o != rank for rank in ledgers for _, o, _ in ledgers[rank])
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    dropped = sum(m.get("dropped_samples", 0) for m in metrics)
    assert "ranks: 2" in (out / "report.md").read_text()
    all_ids = {r["id"] for r in training_rows(26)}  # ids are content hashes: the same rows, the same ids
    assert len(all_ids - set(seen)) == dropped  # what is missing is exactly what was counted as dropped
    assert all(m["rank_imbalance"] <= m["rank_imbalance_unbalanced"] + 1e-12 for m in metrics)

    # One process, same data and plans: the ranks' GlobalSteps replayed as threads, each global
    # step's sequences run as micro-batches of a world of one.
    cfg = load_stage([*base, f"output={tmp_path / 'one'}"])
    tokenizer = load_tokenizer()
    pipes = [build_pipeline(cfg, tokenizer, rank, 2) for rank in (0, 1)]
    from training.tasks.lm import LMTask, model_dims, train_flops

    dims = model_dims(tiny().config)
    plans = run_ranks(2, lambda r, ex: GlobalSteps(pipes[r], 2, lambda b: train_flops([b], dims), rank=r, world=2,
                                                  exchange=ex))
    assert len(plans[0]) == len(metrics) and len(plans[0]) >= 3
    assert moved == sum(o != r for r in (0, 1) for p in plans[r] for o in p.owners)
    engine = build_engine(tiny(), cfg)
    for p0, p1 in zip(*plans):
        train_step(engine, LMTask(), p0.mine + p1.mine, world=1)
    two = load_file(str(out / "export" / "model.safetensors"))
    one, start = engine.module.state_dict(), tiny().state_dict()
    assert not torch.equal(one["lm_head.weight"], start["lm_head.weight"])
    # several SGD steps: equal up to float32 summation order, the update-derived bound of engine_helpers
    assert_same_training(two, one, start)


def test_sigkill_then_restart_resumes_exactly(tmp_path, folder):
    """SIGKILL to the whole process group once a checkpoint exists; the same command again resumes
    from the newest complete checkpoint and ends like an uninterrupted run, bit for bit, with a
    ledger that lists every step once and every sample once per delivery."""
    args = ("stage=pretrain", f"data={folder}", "max_steps=4", "save_every=2", "micro_batches=1", *COMMON,
            "optimizer.lr=0.001", "schedule.total_steps=4")
    straight = tmp_path / "straight"
    launch(*args, f"output={straight}")

    killed = tmp_path / "killed"
    kill_at_checkpoint(*args, output=killed, step=2)
    rows_before = (killed / "metrics.jsonl").read_text().splitlines()
    assert 2 <= len(rows_before) < 4

    launch(*args, f"output={killed}")
    report = (killed / "report.md").read_text()
    assert "resumed at" in report
    a, b = load_file(str(straight / "export" / "model.safetensors")), load_file(str(killed / "export" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert ledger_ids(killed) == ledger_ids(straight)
    steps = [step for step, _, _ in ledger_ids(killed)[0]]
    assert steps == list(range(1, 5))
    losses = [json.loads(x)["loss"] for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [json.loads(x)["loss"] for x in (killed / "metrics.jsonl").read_text().splitlines()] == losses


def test_hostfile_without_ssh_starts_the_ranks_it_lists(tmp_path, folder):
    """A hostfile with one node of 2 slots, node_rank=0 and the master address: the way each node of
    a SLURM/Kubernetes job starts itself. The launcher starts both ranks, which train together."""
    from training.engine import _free_port

    hostfile = tmp_path / "hostfile"
    hostfile.write_text("localhost slots=2\n")
    out = tmp_path / "run"
    launch("stage=align", f"data={folder}", f"output={out}", "max_steps=2", *COMMON, f"hostfile={hostfile}",
           "node_rank=0", "master_addr=127.0.0.1", f"master_port={_free_port()}", "export=false")
    assert "ranks: 2" in (out / "report.md").read_text()
    assert sorted(ledger_ids(out)) == [0, 1]
