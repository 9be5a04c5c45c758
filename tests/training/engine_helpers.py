"""Helpers shared by the engine, global-step and distributed tests (a uniquely named module on the
folder pytest puts on sys.path; test modules never import each other).

Comparing training runs that must agree
---------------------------------------

Some runs must agree in exact arithmetic: 2 ranks against 1 rank with 2 micro-batches, ZeRO-3
against ZeRO-2, the engine against a step computed by hand. In float32 they cannot agree bit for
bit: they add the same numbers in other orders (DeepSpeed reduce-scatters gradients where one
process accumulates them; torchrun starts its workers with one thread, so their matmuls block their
sums otherwise; CPUs differ in their kernels, AMD and Intel, AVX2 and AVX-512). A fixed tolerance
(the old rtol 1e-5 / atol 1e-6) holds on one machine and fails on the next (AMD EPYC: 2.4e-6 on
`model.embed_tokens.weight`). `assert_same_training` derives the tolerance from the update instead,
per tensor:

    |got - expected| <= UPDATE_RTOL * max|expected - start| + 2 * eps32 * |expected|

* 2 eps32 |expected|: each run rounds its final `weight - update` to float32 (half an ulp each),
  whatever the update.
* UPDATE_RTOL (1e-3) of the tensor's largest update. An SGD update is lr times a gradient, and a
  float32 gradient entry is a sum; summed in another order it moves by about sqrt(n) eps32 times the
  size of its terms (the probabilistic rounding bound, Higham & Mary 2019). The longest sums of the
  tiny model run over its 151936-word vocabulary: sqrt(n) eps32 = 390 x 1.2e-7 = 5e-5, so 1e-3
  leaves a factor 20 for terms that partly cancel. The bound scales with the update, so it holds
  for any learning rate and for several SGD steps (the displacement from `start` is compared;
  rounding at step 1 is carried through the later steps at about the same relative size).
* Measured on the AMD EPYC CI machine (largest |diff| / update of any tensor): 1.5e-4 for 2 ranks
  against 1, 9e-5 for ZeRO-3 against ZeRO-2 over 2 steps, 5e-5 for 2 launched ranks against one
  process over a whole epoch. The 1.5e-4 is ViT attention weights whose update (2.5e-5) is so small
  that the final rounding of the weight (half an ulp, 3.7e-9) is that share of it, which the eps
  term covers; where summation order rather than that rounding sets the difference, it is at most
  6e-6 of the update (embed_tokens, mlp_AR.linear_2.bias: what the old fixed tolerance failed on).
* A wrong step exceeds it tens to hundreds of times: DeepSpeed's rank average not undone moves
  every tensor by 0.5 x its update, rank 1 training on another sequence by 0.3 to 2 x (checked by
  hand: every updated tensor); averaging per micro-batch instead of over the step's loss tokens
  moves lm_head by 0.04 x even where the two sequences hold 6 and 7 loss tokens (asserted in
  test_engine).

Compare with SGD, never Adam: Adam's first step moves an entry by lr x sign(gradient), so an entry
whose gradient is rounding noise moves by +lr in one run and -lr in the other.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
from keye_helpers import tiny

FLOAT32_EPS = torch.finfo(torch.float32).eps
UPDATE_RTOL = 1e-3
MAX_TOKENS = 192  # tokens per packed sequence in the engine tests


def update_error(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                 start: dict[str, torch.Tensor]) -> float:
    """The largest |got - expected| of any tensor, over that tensor's largest update (0 where
    nothing moved and nothing differs, inf where nothing should have moved but did)."""
    worst = 0.0
    for name, value in expected.items():
        diff = (got[name].double() - value.double()).abs().max().item()
        update = (value.double() - start[name].double()).abs().max().item()
        worst = max(worst, diff / update if update else (float("inf") if diff else 0.0))
    return worst


def assert_same_training(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                         start: dict[str, torch.Tensor]) -> None:
    """Every tensor of `got` equals `expected` up to float32 summation order (the module docstring
    argues the bound); `start` is the weights both runs began from."""
    assert got.keys() >= expected.keys(), sorted(expected.keys() - got.keys())[:5]
    for name, value in expected.items():
        update = (value.double() - start[name].double()).abs().max().item()
        torch.testing.assert_close(
            got[name], value, rtol=2 * FLOAT32_EPS, atol=UPDATE_RTOL * update,
            msg=lambda message, name=name, update=update: f"{name} (largest update {update:.3g}): {message}",
        )


# --- stages and batches of the engine tests -------------------------------------------------------------


def stage(name: str, output: Path, data: Path, *more: str):
    """A stage config for the engine tests: small sequences and buffers, no export unless asked."""
    from training.stages import load_stage

    return load_stage([f"stage={name}", f"output={output}", f"data={data}", f"max_tokens={MAX_TOKENS}",
                       "packer_buffer=8", "shuffle_buffer=8", "export=false", *more])


def sgd_stage(output: Path, data: Path, micro_batches: int):
    """Plain SGD, lr 1, no clipping or decay: the update is minus the gradient."""
    return stage("pretrain", output, data, f"micro_batches={micro_batches}", "optimizer.name=sgd", "optimizer.lr=1.0",
                 "optimizer.grad_clip=0", "optimizer.weight_decay=0", "lr_mult.visual=1")


def two_batches(folder: Path) -> list:
    """Two packed sequences with different loss-token counts (the same on every caller)."""
    from training.data import DataPipeline, ShardReader
    from training.processor import KeyeProcessor, load_tokenizer

    reader = ShardReader([folder], seed=0, rank=0, world_size=1, buffer_size=1, shuffle=False, epochs=1)
    batches = list(DataPipeline(reader, KeyeProcessor(load_tokenizer()), max_tokens=48, buffer_size=1))
    return [batches[0], next(b for b in batches if b.loss_tokens != batches[0].loss_tokens)]


def data_parallel_worker(folder: str, out: str) -> None:
    """Run under torchrun with 2 processes: rank r trains one SGD step on sequence r; rank 0 saves
    the weights to OUT/dp.safetensors."""
    from safetensors.torch import save_file

    from training.engine import build_engine, rank_world, shutdown_distributed, train_step
    from training.tasks.lm import LMTask

    engine = build_engine(tiny(), sgd_stage(Path(out) / "run", Path(folder), 1))
    rank, world = rank_world()
    train_step(engine, LMTask(), [two_batches(Path(folder))[rank]], world)
    if rank == 0:
        save_file({k: v.contiguous() for k, v in engine.module.state_dict().items()}, str(Path(out) / "dp.safetensors"))
    shutdown_distributed()


# --- several ranks as threads ---------------------------------------------------------------------------


class ThreadWorld:
    """An all-gather between threads: each rank posts its lists, all wait, all read everyone's."""

    def __init__(self, world: int):
        self.world = world
        self.barrier = threading.Barrier(world)
        self.posted: list = [None] * world

    def exchange_for(self, rank: int):
        def exchange(ints, floats):
            self.posted[rank] = (list(ints), list(floats))
            self.barrier.wait()
            gathered = ([p[0] for p in self.posted], [p[1] for p in self.posted])
            self.barrier.wait()  # nobody posts the next round before all have read this one
            return gathered

        return exchange


def run_ranks(world: int, make_steps, steps: int | None = None) -> list[list]:
    """Run `make_steps(rank, exchange)` GlobalSteps on `world` threads; plans per rank until the end."""
    sim = ThreadWorld(world)
    plans: list[list] = [[] for _ in range(world)]
    errors = []

    def body(rank):
        try:
            gs = make_steps(rank, sim.exchange_for(rank))
            while steps is None or len(plans[rank]) < steps:
                plan = gs.next()
                if plan is None:
                    break
                plans[rank].append(plan)
        except BaseException as error:  # surfaced below; an abort stops the other ranks waiting
            errors.append(error)
            sim.barrier.abort()

    threads = [threading.Thread(target=body, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]
    return plans
