"""The engine on CPU (DeepSpeed ZeRO-1/2, gloo, one process): freezing and per-part learning
rates, the loss normalised by the step's loss tokens, checkpoints and exact resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from engine_helpers import (
    UPDATE_RTOL,
    assert_same_training,
    sgd_stage,
    stage,
    two_batches,
    update_error,
)
from keye_helpers import changed, parts_state, tiny, training_rows, write_shards

os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[2] / ".torch_extensions"))


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "mix", training_rows())


def test_param_groups_freeze_and_scale_lr():
    from training.engine import param_groups
    from training.stages import load_stage

    model = tiny()
    cfg = load_stage(["stage=pretrain", "optimizer.lr=0.01", "lr_mult.visual=0.1", "lr_mult.llm=0.5",
                      "train=visual,llm"])
    groups = param_groups(model, cfg)
    lrs = {(g["part"], g["weight_decay"] > 0): g["lr"] for g in groups}
    assert {part for part, _ in lrs} == {"visual", "llm"}  # no group for the frozen projector
    assert lrs[("visual", True)] == pytest.approx(0.001) and lrs[("llm", True)] == pytest.approx(0.005)
    assert all(g["weight_decay"] == 0 for g in groups if any(p.ndim < 2 for p in g["params"]))
    assert not any(p.requires_grad for p in model.mlp_AR.parameters())
    vit = model.visual.vision_model  # its pooling head and packing table are never used by the VLM: stay frozen
    unused = {id(p) for p in [*vit.head.parameters(), *vit.embeddings.packing_position_embedding.parameters()]}
    assert unused and all(p.requires_grad == (id(p) not in unused) for p in model.visual.parameters())
    grouped = sum(p.numel() for g in groups for p in g["params"])
    assert grouped == sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("zero", [1, 2])
def test_align_trains_only_the_projector(tmp_path, shard_folder, zero):
    from training.launch import run

    cfg = stage("align", tmp_path / "out", shard_folder, "max_steps=3", f"deepspeed=configs/deepspeed/zero{zero}.json")
    before = parts_state(tiny())
    result = run(cfg)
    assert result.step == 3
    after = parts_state(result.engine.module)
    assert not changed(before["visual"], after["visual"])  # bit-identical
    assert not changed(before["llm"], after["llm"])
    assert changed(before["projector"], after["projector"])


def test_pretrain_changes_every_part(tmp_path, shard_folder):
    from training.launch import run

    cfg = stage("pretrain", tmp_path / "out", shard_folder, "max_steps=2", "optimizer.lr=0.001")
    before = parts_state(tiny())
    result = run(cfg)
    after = parts_state(result.engine.module)
    for part in ("visual", "projector", "llm"):
        assert changed(before[part], after[part]), part
    lrs = {g["part"]: g["lr"] for g in result.engine.optimizer.param_groups}  # inside DeepSpeed's optimizer
    assert lrs["visual"] == pytest.approx(cfg.lr_mult.visual * lrs["llm"]) and cfg.lr_mult.visual != 1.0
    rows = [json.loads(line) for line in (cfg.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "mfu", "padding_fraction",
                "rank_imbalance"):
        assert rows[-1][key] is not None, key


def test_loss_is_normalised_by_the_steps_loss_tokens(tmp_path, shard_folder):
    """Two micro-batches with different loss-token counts, SGD with lr 1, no clipping: the update
    is minus the gradient of (sum of both batches' token losses) / (all their loss tokens),
    computed here by hand, in float64, from full logits on a copy of the model."""
    from training.engine import build_engine, train_step
    from training.losses import token_sum_cross_entropy
    from training.tasks.lm import LMTask

    micro = two_batches(shard_folder)  # a caption (with an image) and a chat
    counts = [b.loss_tokens for b in micro]
    assert counts[0] != counts[1]  # else a per-batch average would give the same answer
    cfg = sgd_stage(tmp_path / "out", shard_folder, micro_batches=2)
    start = tiny().state_dict()
    reference = tiny().double()
    engine = build_engine(tiny(), cfg)

    sums = []
    for b in micro:
        out = reference(**{k: v for k, v in b.inputs.items() if v is not None and k != "labels"})
        targets = reference.shift_labels(b.inputs["labels"], b.inputs.get("cu_seqlens"))
        sums.append(token_sum_cross_entropy(out.logits, targets))
    assert [n for _, n in sums] == counts
    weight = reference.lm_head.weight
    mean_of_means = (sums[0][0] / counts[0] + sums[1][0] / counts[1]) / 2  # what the engine must NOT do
    (wrong_grad,) = torch.autograd.grad(mean_of_means, weight, retain_graph=True)
    (sum(s for s, _ in sums) / sum(counts)).backward()
    # (parameters outside the forward, the ViT's unused pooling head, get no gradient and stay)
    expected = {n: (p.detach() - (p.grad if p.grad is not None else 0)).float()
                for n, p in reference.named_parameters()}
    assert reference.visual.vision_model.embeddings.patch_embedding.weight.grad.abs().max() > 0

    step = train_step(engine, LMTask(), micro, world=1)
    tokens = step.totals["loss_tokens"]
    assert tokens == sum(counts)
    # a sum of nonnegative token losses: float32 in any order is within tokens x eps of float64
    assert step.loss == pytest.approx(float(sum(s.detach() for s, _ in sums)) / tokens, rel=tokens * torch.finfo().eps)
    got = {n: p.detach() for n, p in engine.module.named_parameters()}
    assert_same_training(got, expected, start)  # float32 engine against the float64 step (engine_helpers)
    # the per-micro-batch average is another update, far outside that tolerance (0.04 of the update
    # with 6 and 7 loss tokens): the comparison above can fail
    wrong = {"lm_head.weight": (weight.detach() - wrong_grad).float()}
    assert update_error(got, wrong, start) > 10 * UPDATE_RTOL


RESUME = ("schedule.total_steps=6", "schedule.warmup_steps=2", "save_every=2", "optimizer.lr=0.001")


@pytest.fixture(scope="module")
def straight_six(tmp_path_factory, shard_folder):
    """Weights and losses of one uninterrupted 6-step run."""
    from training.launch import run

    out = tmp_path_factory.mktemp("straight")
    result = run(stage("pretrain", out, shard_folder, "max_steps=6", *RESUME))
    assert result.start_step == 0
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    return {k: v.clone() for k, v in result.engine.module.state_dict().items()}, losses


def test_resume_continues_bit_for_bit(tmp_path, shard_folder, straight_six):
    """4 steps (checkpoint at 2 and 4), then the same output with max_steps=6 resumes at 4; the
    weights equal those of one uninterrupted 6-step run exactly."""
    from training.checkpoint import complete_checkpoints
    from training.launch import run

    first = run(stage("pretrain", tmp_path, shard_folder, "max_steps=4", *RESUME))
    assert first.step == 4
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_2", "step_4"]
    resumed = run(stage("pretrain", tmp_path, shard_folder, "max_steps=6", *RESUME))
    assert (resumed.start_step, resumed.step) == (4, 6)
    weights, losses = straight_six
    a = resumed.engine.module.state_dict()
    assert a.keys() == weights.keys()
    assert all(torch.equal(a[k], weights[k]) for k in a), [k for k in a if not torch.equal(a[k], weights[k])][:5]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in rows] == losses


def test_incomplete_checkpoint_is_passed_over(tmp_path, shard_folder, straight_six):
    """A run killed while writing its step-4 checkpoint (no COMPLETE marker) resumes from step 2
    and still ends bit-identical to the uninterrupted run."""
    from training.launch import run

    run(stage("pretrain", tmp_path, shard_folder, "max_steps=4", *RESUME))
    (tmp_path / "checkpoints" / "step_4" / "COMPLETE").unlink()
    again = run(stage("pretrain", tmp_path, shard_folder, "max_steps=6", *RESUME))
    assert (again.start_step, again.step) == (2, 6)
    c = again.engine.module.state_dict()
    assert all(torch.equal(c[k], straight_six[0][k]) for k in c)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # steps 3-4 of the killed run dropped
    assert [r["loss"] for r in rows] == straight_six[1]


def test_a_non_finite_step_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, shard_folder, monkeypatch):
    """Step 3's loss is made NaN (the engine's loss-token sum of that step, poisoned): the run stops
    at step 3 with an error naming the step and the step's sample ids as the ledger lists them;
    nothing of step 3 is logged or saved, the newest complete checkpoint is step 2's, and a
    restart resumes from it."""
    from training.checkpoint import complete_checkpoints
    from training.engine import NonFiniteStepError
    from training.launch import run
    from training.metrics import read_ledger
    from training.tasks.lm import LMTask

    calls, lm_loss = [], LMTask.loss

    def poisoned_at_step_3(self, engine, batch, totals):  # one micro-batch per step: call 3 is step 3
        calls.append(1)
        result = lm_loss(self, engine, batch, totals)
        result.share = result.share * (float("nan") if len(calls) == 3 else 1.0)
        return result

    monkeypatch.setattr(LMTask, "loss", poisoned_at_step_3)
    cfg = stage("pretrain", tmp_path, shard_folder, "max_steps=6", "save_every=2")
    with pytest.raises(NonFiniteStepError) as caught:
        run(cfg)
    error = caught.value
    assert error.step == 3 and str(error).startswith("step 3: loss nan")
    step3 = [r for r in read_ledger(tmp_path)[0] if r["step"] == 3]
    ids = [i for sequence in step3[0]["sequences"] for i in sequence["ids"]]
    assert ids and error.sample_ids == ids and all(i in str(error) for i in ids)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_2"] == [error.last_good.name]
    assert not (tmp_path / "checkpoints" / "step_3").exists()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert "stopped: step 3" in (tmp_path / "report.md").read_text()

    monkeypatch.setattr(LMTask, "loss", lm_loss)
    again = run(cfg)
    assert (again.start_step, again.step) == (2, 6)
    assert [r["step"] for r in read_ledger(tmp_path)[0]] == [1, 2, 3, 4, 5, 6]  # the failed step 3 replaced


def test_zero3_with_activation_checkpointing_matches_zero2(tmp_path, shard_folder):
    """Same data, same init: ZeRO-3 + activation checkpointing gives ZeRO-2's losses and weights
    (up to float32 summation order: SGD, so the update-derived tolerance of engine_helpers applies),
    and its export gathers the partitioned weights."""
    from training.launch import run
    from training.model import KeyeForConditionalGeneration

    common = ("max_steps=2", "optimizer.name=sgd", "optimizer.lr=0.1", "optimizer.grad_clip=0",
              "optimizer.weight_decay=0")
    z2 = run(stage("pretrain", tmp_path / "z2", shard_folder, *common))
    z3 = run(stage("pretrain", tmp_path / "z3", shard_folder, *common, "deepspeed=configs/deepspeed/zero3.json",
                   "gradient_checkpointing=true", "export=true"))
    loss2 = [json.loads(x)["loss"] for x in (tmp_path / "z2" / "metrics.jsonl").read_text().splitlines()]
    loss3 = [json.loads(x)["loss"] for x in (tmp_path / "z3" / "metrics.jsonl").read_text().splitlines()]
    # step 1: the same weights; a sum of nonnegative token losses in another float32 order moves by
    # at most tokens x eps relative (< 1e-4 here); step 2 adds the weights' difference (below)
    assert loss3 == pytest.approx(loss2, rel=UPDATE_RTOL)
    exported = KeyeForConditionalGeneration.from_pretrained(z3.export).state_dict()
    start = tiny().state_dict()
    assert_same_training(exported, z2.engine.module.state_dict(), start)
    assert not torch.equal(exported["lm_head.weight"], start["lm_head.weight"])  # it trained


def test_mixture_weights_are_honoured_and_logged(tmp_path, shard_folder):
    """Two folders, one with a negligible weight: the logged mixture is all from the other one."""
    from training.launch import run

    second = write_shards(tmp_path / "rare", training_rows(8))
    cfg = stage("cot_coldstart", tmp_path / "out", shard_folder, "max_steps=2", f"data={shard_folder},{second}",
                "data_weights=[1, 0.000001]")  # (a,b lists stay strings in curation.config)
    run(cfg)
    last = json.loads((tmp_path / "out" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["mix/mix"] == 1.0 and "mix/rare" not in last
    assert last["trained_mix/mix"] == 1.0 and "trained_mix/rare" not in last


def test_two_ranks_equal_one_rank_with_two_micro_batches(tmp_path, shard_folder):
    """ZeRO-2 over 2 gloo processes, one sequence each == 1 process, both sequences as micro-batches:
    the step's loss tokens are counted over ranks and DeepSpeed's rank average is undone. Equal up
    to float32 summation order (reduce-scatter against local accumulation, one thread per torchrun
    worker against the test's threads): the update-derived tolerance of engine_helpers, which rank 1
    training on another sequence, or the rank average left in, exceeds hundreds of times."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from training.engine import _free_port, build_engine, train_step
    from training.tasks.lm import LMTask

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import engine_helpers; "
        f"engine_helpers.data_parallel_worker({str(shard_folder)!r}, {str(tmp_path)!r})"
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(_free_port()), "--no-python", sys.executable, "-c", code]
    proc = subprocess.run(command, cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_ranks = load_file(str(tmp_path / "dp.safetensors"))

    engine = build_engine(tiny(), sgd_stage(tmp_path / "single", shard_folder, 2))
    train_step(engine, LMTask(), two_batches(shard_folder), world=1)
    one_rank = engine.module.state_dict()
    start = tiny().state_dict()
    assert not torch.equal(one_rank["lm_head.weight"], start["lm_head.weight"])
    assert_same_training(two_ranks, one_rank, start)


def test_train_flops_count_lm_head_on_loss_positions_only():
    from training.data import PackedBatch
    from training.data.cost import ModelDims, SampleShape, sequence_flops
    from training.tasks.lm import train_flops

    dims = ModelDims(llm_hidden=8, vocab_size=100)
    shapes = [SampleShape(10), SampleShape(6)]
    batch = PackedBatch(inputs={}, vision_cu_seqlens=None, sample_ids=[], coords=[], kinds=[], shapes=shapes,
                        max_tokens=32, loss_tokens=5, real_tokens=16, truncated=0)
    by_hand = 3 * (sequence_flops(shapes, dims) - 2 * 8 * 100 * (16 - 5))
    assert train_flops([batch], dims) == by_hand
