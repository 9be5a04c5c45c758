"""The mpo stage (task `preference`): pairs packed together, MPO against a frozen reference (live or
precomputed by `training.precompute_ref`), the running delta, two ranks against one process, and a
SIGKILL'd run resumed bit for bit, delta included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from engine_helpers import assert_same_training, run_ranks
from keye_helpers import png, tiny, write_shards
from safetensors.torch import load_file
from tests.launch_helpers import kill_at_checkpoint, launch

from curation.config import ConfigError
from curation.schema import image_entry, image_part, make_row, message

COMMON = ("stage=mpo", "model=tiny", "max_tokens=256", "packer_buffer=8", "shuffle_buffer=8",
          "schedule.name=constant", "optimizer.grad_clip=0", "export=true")


def preference_rows(n: int, with_images: int = 3) -> list[dict]:
    """Separable pairs: the chosen reply always says yes, the rejected one no; a few rows carry an
    image (the pair shares it)."""
    rows = []
    for i in range(n):
        images = [image_entry(png(28 * (1 + i % 2), 56, seed=i))] if i < with_images else []
        parts = [image_part(0)] if images else []
        prompt = message("user", *parts, f"Is item {i} in order? Answer in a few words.")
        chosen = [prompt, message("assistant", f"Yes: item {i} is in order.")]
        rejected = [prompt, message("assistant", f"No, item {i} fails every check we have.")]
        rows.append(make_row("synthetic", "preference", chosen, images, rejected=rejected))
    return rows


@pytest.fixture(scope="module")
def pairs_folder(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("mpo") / "pairs", preference_rows(40), row_group_rows=8)


def metrics_of(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


def test_pairs_are_packed_together_chosen_then_rejected(pairs_folder):
    from training.data import ShardReader
    from training.data.pipeline import DataPipeline
    from training.processor import KeyeProcessor, load_tokenizer

    processor = KeyeProcessor(load_tokenizer())
    reader = ShardReader([pairs_folder], seed=0, buffer_size=4, epochs=1)
    rows = {r["id"]: r for r in preference_rows(40)}
    batches = list(DataPipeline(reader, processor, max_tokens=256, buffer_size=8, pairs=True))
    assert sum(len(b.sample_ids) for b in batches) == 40  # every pair once, none split
    for batch in batches:
        assert batch.samples_per_row == 2 and len(batch.sample_loss_tokens) == 2 * len(batch.sample_ids)
        bounds = batch.inputs["cu_seqlens"].tolist()
        for k, row_id in enumerate(batch.sample_ids):
            chosen = processor(rows[row_id]).input_ids
            rejected = processor(rows[row_id], messages=rows[row_id]["rejected"]).input_ids
            ids = batch.inputs["input_ids"][0]
            assert torch.equal(ids[bounds[2 * k] : bounds[2 * k + 1]], chosen)
            assert torch.equal(ids[bounds[2 * k + 1] : bounds[2 * k + 2]], rejected)
    # a pair over max_tokens is skipped whole, never cut; a non-preference row is not a pair
    reader = ShardReader([pairs_folder], seed=0, buffer_size=4, epochs=1)
    small = DataPipeline(reader, processor, max_tokens=40, buffer_size=8, pairs=True)
    assert list(small) == [] and small.skipped["too_long"] == 40


def test_mpo_learns_a_separable_preference_set_and_leaves_the_reference_alone(tmp_path, pairs_folder):
    from training.launch import run
    from training.stages import load_stage

    cfg = load_stage([*COMMON, f"data={pairs_folder}", f"output={tmp_path}", "max_steps=16", "micro_batches=1",
                      "optimizer.lr=2e-3", "mpo.beta=0.5", "export=false"])
    result = run(cfg)
    metrics = metrics_of(tmp_path)
    assert len(metrics) == 16
    late = [m["rewards/accuracy"] for m in metrics[-4:]]
    assert sum(late) / len(late) > 0.9, [m["rewards/accuracy"] for m in metrics]
    assert metrics[-1]["rewards/margin"] > metrics[0]["rewards/margin"]
    # the reference is the starting weights, still: the tiny model of the same seed, bit for bit
    start = tiny(0).state_dict()
    reference = result.task.reference.state_dict()
    assert [k for k in start if not torch.equal(start[k], reference[k])] == []
    assert not torch.equal(result.engine.module.lm_head.weight, start["lm_head.weight"])
    # delta of step t: the mean of beta x logratio over both responses of every pair of steps < t
    assert metrics[0]["mpo/delta"] == 0.0
    total = count = 0.0
    for m in metrics:
        assert m["mpo/delta"] == pytest.approx(total / count if count else 0.0, rel=1e-9, abs=1e-12)
        total += (m["rewards/chosen"] + m["rewards/rejected"]) * m["pairs"]
        count += 2 * m["pairs"]
    assert result.task.delta == pytest.approx(total / count, rel=1e-9)
    # the logged loss is the weighted sum of its logged terms
    last = metrics[-1]
    assert last["loss"] == pytest.approx(0.8 * last["loss/dpo"] + 0.2 * last["loss/bco"] + last["loss/sft"], rel=1e-5)


def test_precomputed_reference_never_loads_and_gives_the_live_losses(tmp_path, pairs_folder, monkeypatch):
    from training.launch import run
    from training.precompute_ref import precompute
    from training.stages import load_stage
    from training.tasks.preference import PreferenceTask

    args = [*COMMON, "max_steps=3", "micro_batches=2", "optimizer.lr=1e-3", "export=false"]
    precompute(load_stage([*args, f"data={pairs_folder}"]), pairs_folder, tmp_path / "scored")
    manifest = json.loads((tmp_path / "scored" / "_manifest.json").read_text())
    assert manifest["ref_logps"]["rows_scored"] == 40 and manifest["ref_logps"]["model"] == "tiny@seed0"

    live = run(load_stage([*args, f"data={pairs_folder}", f"output={tmp_path / 'live'}"]))

    def no_reference(self, engine, cfg):
        raise AssertionError("the reference model was built although its log-probs were precomputed")

    monkeypatch.setattr(PreferenceTask, "build_reference", no_reference)
    cfg = load_stage([*args, f"data={tmp_path / 'scored'}", f"output={tmp_path / 'pre'}", "mpo.reference=precomputed"])
    pre = run(cfg)
    assert pre.task.reference is None and live.task.reference is not None
    # the same pairs in the same sequences: the same losses, up to the reference's float32 sums
    # (precompute packs its own sequences; a summed log-prob of ~100 tokens moves by ~1e-6)
    for a, b in zip(metrics_of(tmp_path / "live"), metrics_of(tmp_path / "pre"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["rewards/margin"] == pytest.approx(a["rewards/margin"], abs=1e-4)

    # reference values of other starting weights, or none at all: refused with what to do
    with pytest.raises(ConfigError, match="computed with"):
        run(load_stage([*args, f"data={tmp_path / 'scored'}", f"output={tmp_path / 'seed1'}",
                        "mpo.reference=precomputed", "seed=1"]))
    with pytest.raises(ConfigError, match="precompute_ref"):
        run(load_stage([*args, f"data={pairs_folder}", f"output={tmp_path / 'none'}", "mpo.reference=precomputed"]))


def test_two_ranks_equal_one_process_with_the_same_global_batch(tmp_path, pairs_folder):
    """2 gloo ranks (ZeRO-2, SGD) against one process running each global step's sequences, as the
    ranks' step plans give them, as micro-batches: the same weights up to float32 summation order
    (engine_helpers argues the bound) and the same delta."""
    from training.engine import build_engine, train_step
    from training.global_step import GlobalSteps
    from training.processor import load_tokenizer
    from training.stages import load_stage
    from training.tasks.preference import PreferenceTask

    base = [*COMMON, f"data={pairs_folder}", "max_steps=2", "optimizer.name=sgd", "optimizer.lr=0.05",
            "optimizer.weight_decay=0", "max_tokens=128"]
    launch(*base, "micro_batches=1", "num_gpus=2", f"output={tmp_path / 'dp'}")
    metrics = metrics_of(tmp_path / "dp")
    assert len(metrics) == 2 and "ranks: 2" in (tmp_path / "dp" / "report.md").read_text()

    cfg = load_stage([*base, "micro_batches=1", f"output={tmp_path / 'one'}"])
    tokenizer = load_tokenizer()
    task = PreferenceTask()
    pipes = [task.build_pipeline(cfg, tokenizer, rank, 2) for rank in (0, 1)]
    engine = build_engine(tiny(), cfg, task)
    task.attach(engine, cfg)
    plans = run_ranks(2, lambda r, ex: GlobalSteps(pipes[r], 1, task.cost, rank=r, world=2, exchange=ex), steps=2)
    deltas = []
    for p0, p1 in zip(plans[0], plans[1], strict=True):
        deltas.append(task.delta)
        step = train_step(engine, task, p0.mine + p1.mine, world=1)
        task.end_step(step.stats, step.totals)
    assert [m["mpo/delta"] for m in metrics] == pytest.approx(deltas, rel=1e-5, abs=1e-9)
    two = load_file(str(tmp_path / "dp" / "export" / "model.safetensors"))
    one, start = engine.module.state_dict(), tiny().state_dict()
    assert not torch.equal(one["lm_head.weight"], start["lm_head.weight"])
    assert_same_training(two, one, start)


def test_sigkill_then_restart_resumes_exactly_delta_included(tmp_path, pairs_folder):
    args = (*COMMON, f"data={pairs_folder}", "max_steps=3", "save_every=2", "micro_batches=1", "optimizer.lr=1e-3",
            "max_tokens=128")
    straight = tmp_path / "straight"
    launch(*args, f"output={straight}")
    killed = tmp_path / "killed"
    kill_at_checkpoint(*args, output=killed, step=2)
    state = json.loads((killed / "checkpoints" / "step_2" / "trainer_rank0.json").read_text())
    assert state["task"]["delta_count"] > 0  # the running delta is in the checkpoint

    launch(*args, f"output={killed}")
    assert "resumed at" in (killed / "report.md").read_text()
    a, b = load_file(str(straight / "export" / "model.safetensors")), load_file(str(killed / "export" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    keys = ("loss", "mpo/delta", "rewards/chosen", "rewards/rejected", "loss/bco")
    assert [[m[k] for k in keys] for m in metrics_of(killed)] == [[m[k] for k in keys] for m in metrics_of(straight)]
    assert metrics_of(straight)[-1]["mpo/delta"] != 0.0


def test_zero3_runs_the_reference_as_its_own_partitioned_engine(tmp_path, pairs_folder):
    """Under ZeRO-3 the live reference is a DeepSpeed engine of its own (parameters partitioned
    like the policy's, gathered per forward), and the losses are ZeRO-2's (SGD: the same update up
    to float32 summation order)."""
    from training.launch import run
    from training.stages import load_stage

    args = [*COMMON, f"data={pairs_folder}", "max_steps=2", "micro_batches=1", "optimizer.name=sgd",
            "optimizer.lr=0.05", "optimizer.weight_decay=0", "export=false"]
    z2 = run(load_stage([*args, f"output={tmp_path / 'z2'}"]))
    z3 = run(load_stage([*args, f"output={tmp_path / 'z3'}", "deepspeed=configs/deepspeed/zero3.json"]))
    assert isinstance(z2.task.reference, torch.nn.Module) and not hasattr(z2.task.reference, "zero_optimization")
    assert z3.task.reference.zero_optimization_stage() == 3
    for a, b in zip(metrics_of(tmp_path / "z2"), metrics_of(tmp_path / "z3"), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["rewards/margin"] == pytest.approx(a["rewards/margin"], abs=1e-5)
