"""The training engine: DeepSpeed around the model, and the one step loop every stage runs.

    task = build_task(cfg.task)                              # training/tasks: lm, contrastive, preference, rl
    engine = build_engine(model, cfg, task)                  # param groups, freezing, deepspeed.initialize
    result = train(cfg, engine, pipeline, metrics, task=task)  # resume, steps, checkpoints, metrics, export

One optimizer step on a rank = `cfg.micro_batches` sequences (gradient accumulation). The task
computes the loss; it is normalised over the whole step, all ranks and micro-steps together
(training/tasks/base.py; training/losses.py says how that meets DeepSpeed's gradient averaging).
Nothing here knows which task runs.

Parts and freezing: the task names the model's parts (the VLM's `visual` (ViT), `projector`
(`mlp_AR`), `llm` (`model` + `lm_head`); vit_pretrain's visual, text, logit). A part not in
`cfg.train` gets requires_grad=False and is in no optimizer group, so it stays bit-identical; each
trained part has its own groups with lr = cfg.optimizer.lr x lr_mult.<part> (biases and norm
weights without weight decay). The schedule multiplies every group's base lr, so ratios hold.

The loop (`train`), per step: the step's sequences for this rank (training/global_step.py: every
rank runs the same number, balanced by cost, topped up where a rank's data ended), the schedule's
learning rate, the forward/backward/optimizer step, the step's metrics gathered over the ranks
(training/step_metrics.py), the sample ids into the ledger, then a check: a non-finite loss or
gradient norm stops the run (NonFiniteStepError, naming the step and the samples the ledger lists
for it) before the step's metrics line or any checkpoint is written, so the newest complete
checkpoint stays the last good one. Checkpoints (training/checkpoint.py)
every `save_every` steps and at the end; a run whose output folder holds one resumes from the
newest complete one on its own. Then the HF export.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from training.checkpoint import Checkpointer
from training.data.balance import all_gather_lists
from training.export import export_hf
from training.global_step import GlobalSteps
from training.metrics import Ledger
from training.schedules import Schedule
from training.stages import REPO, StageConfig
from training.step_metrics import Mixture, StepMetrics

log = logging.getLogger(__name__)


# --- distributed setup ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> None:
    """torch.distributed through DeepSpeed: NCCL on GPUs, gloo on CPU. A plain `python` run is a
    world of one (the environment a launcher would set is filled in)."""
    import deepspeed

    if dist.is_initialized():
        return
    if "RANK" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def shutdown_distributed() -> None:
    """End the process group together: every rank waits for the others, then tears it down. A rank
    that exits with the group alive while a peer still works (rank 0 writing files) can abort at
    exit ("terminate called without an active exception" from a gloo thread)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


# --- optimizer groups and DeepSpeed -----------------------------------------------------------------


def task_of(cfg: StageConfig, task=None):
    """The task given, or a new one of the kind `cfg.task` names."""
    from training.tasks import build_task

    return task if task is not None else build_task(cfg.task)


def param_groups(model: torch.nn.Module, cfg: StageConfig, task=None) -> list[dict]:
    """Freeze the parts not trained; one decay and one no-decay group per trained part. Parameters
    a model built frozen (never used in its forward) stay frozen in a trained part."""
    seen, groups = set(), []
    parts = task_of(cfg, task).model_parts(model)
    for part, modules in parts.items():
        trained = part in cfg.train
        decay, no_decay = [], []
        for module in modules:
            for name, p in module.named_parameters():
                seen.add(id(p))
                if not trained:
                    p.requires_grad_(False)
                if not p.requires_grad:  # frozen part, or frozen by the model itself (the VLM's unused ViT head)
                    continue
                (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
        lr = cfg.optimizer.lr * getattr(cfg.lr_mult, part)
        for params, wd in ((decay, cfg.optimizer.weight_decay), (no_decay, 0.0)):
            if trained and params:
                groups.append({"params": params, "lr": lr, "base_lr": lr, "weight_decay": wd, "part": part})
    stray = [n for n, p in model.named_parameters() if id(p) not in seen]
    if stray:
        raise ValueError(f"parameters outside the parts {', '.join(parts)}: {stray[:5]}")
    return groups


def make_optimizer(groups: list[dict], cfg: StageConfig) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr)
    return torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, foreach=False)


def deepspeed_config(cfg: StageConfig, bf16: bool) -> dict:
    path = Path(cfg.deepspeed)
    path = path if path.is_file() else REPO / path
    ds = json.loads(path.read_text())
    ds["train_micro_batch_size_per_gpu"] = 1  # one packed sequence per micro-step
    ds["gradient_accumulation_steps"] = cfg.micro_batches
    ds.pop("train_batch_size", None)
    ds["gradient_clipping"] = cfg.optimizer.grad_clip
    ds["bf16"] = {"enabled": bf16}
    ds.pop("fp16", None)
    if cfg.optimizer.name == "sgd":  # plain SGD (tests, probes): ZeRO handles it like any torch optimizer
        ds["zero_allow_untested_optimizer"] = True
    return ds


def use_bf16(cfg: StageConfig) -> bool:
    if cfg.precision == "auto":
        return torch.cuda.is_available()
    return cfg.precision == "bf16"


def build_engine(model: torch.nn.Module, cfg: StageConfig, task=None):
    import deepspeed

    init_distributed()
    if cfg.gradient_checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        model.config.use_cache = False
    model.train()
    optimizer = make_optimizer(param_groups(model, cfg, task), cfg)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg, use_bf16(cfg)))
    return engine


def set_lr(engine, schedule: Schedule, step: int) -> float:
    factor = schedule(step)
    for group in engine.optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return max(g["lr"] for g in engine.optimizer.param_groups)


# --- the loop -----------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    start_step: int
    step: int
    last_loss: float | None
    export: Path | None
    engine: object = None  # the DeepSpeed engine (its .module is the trained model)
    task: object = None  # the training task (its running state, e.g. MPO's delta)
    dropped_sequences: int = 0  # read but not run at the end of a finite run (see global_step.py)
    dropped_samples: int = 0


@dataclass
class StepLoss:
    """One optimizer step on this rank: its share of the step's loss (the shares of all ranks add
    up to it), the step's totals over all ranks (the task's normalisers) and this rank's stats."""

    loss: float
    totals: dict[str, int]
    stats: dict[str, float]


def global_totals(counts: dict[str, int], group=None) -> dict[str, int]:
    """Each count summed over all ranks (the same keys on every rank, sorted)."""
    names = sorted(counts)
    summed = [sum(column) for column in zip(*all_gather_lists([counts[n] for n in names], integers=True,
                                                             group=group))]
    return {n: int(v) for n, v in zip(names, summed)}


def train_step(engine, task, micro: list, world: int) -> StepLoss:
    """One optimizer step over this rank's sequences. Each micro-step back-propagates its share of
    the step's loss times the world size (DeepSpeed averages gradients over the ranks)."""
    micro = task.rollout(engine, micro)  # on-policy tasks make their sequences now; the others pass them on
    counts: dict[str, int] = {}
    for batch in micro:
        for name, value in task.counts(batch).items():
            counts[name] = counts.get(name, 0) + int(value)
    totals = global_totals(counts)
    step_loss, stats = 0.0, {}
    for i, batch in enumerate(micro):
        # the boundary is set by hand: the last step of a finite run may have fewer micro-steps
        # than the configured gradient accumulation, and DeepSpeed's own counter would drift
        engine.set_gradient_accumulation_boundary(i == len(micro) - 1)
        result = task.loss(engine, batch, totals)
        engine.backward(result.share * world, scale_wrt_gas=False)
        engine.step()  # DeepSpeed steps the optimizer on the boundary only
        step_loss += float(result.share.detach())
        for name, value in result.stats.items():
            stats[name] = stats.get(name, 0.0) + value
    return StepLoss(step_loss, totals, stats)


def global_grad_norm(engine) -> float | None:
    """DeepSpeed's gradient norm of the last optimizer step (None where it computes none)."""
    norm = engine.get_global_grad_norm()
    return None if norm is None else float(norm)


class NonFiniteStepError(RuntimeError):
    """A step whose loss or gradient norm is not a finite number: the run stops at it, naming the
    step, its samples (as the ledger lists them) and the checkpoint a restart resumes from."""

    def __init__(self, step: int, record: StepMetrics, sample_ids: list[str], rank: int, last_good: Path | None):
        self.step, self.record, self.sample_ids, self.last_good = step, record, sample_ids, last_good
        norm = record.grad_norm
        if norm is None:
            norm_text = "not computed"
        elif math.isfinite(norm) and norm >= 0:
            norm_text = f"{norm:.4g}"
        else:
            norm_text = f"not finite (DeepSpeed reports {norm:g})"
        resume = f"the newest complete checkpoint is still {last_good}" if last_good else "no checkpoint exists yet"
        super().__init__(
            f"step {step}: loss {record.loss:g}, gradient norm {norm_text}: stopped instead of training on it. "
            f"Samples of step {step} on rank {rank} (ledger/rank{rank}.jsonl): {', '.join(sample_ids)}. "
            f"Nothing of step {step} was saved; {resume}."
        )


def train(cfg: StageConfig, engine, pipeline, metrics, tokenizer=None, peak_flops: float | None = None,
          source_names: list[str] | None = None, task=None, ledger: Ledger | None = None) -> TrainResult:
    """Resume if OUTPUT holds a complete checkpoint, run to cfg.max_steps (or the end of the data),
    checkpoint, export.

    metrics: a metrics.MetricsWriter; task: the training task (default: a new one of `cfg.task`),
    attached to the engine here; its cost(batch) drives the balancer and the MFU estimate; ledger:
    a metrics.Ledger of the sample ids trained (None: none kept); source_names: the data folders'
    names for the logged mixture."""
    (rank, world), output = rank_world(), cfg.output_dir
    schedule = Schedule(cfg.schedule.name, cfg.schedule.warmup_steps, cfg.schedule.total_steps or cfg.max_steps,
                        cfg.schedule.min_lr_ratio)
    task = task_of(cfg, task)
    task.attach(engine, cfg)
    ledger = ledger or Ledger(output, rank, enabled=False)
    checkpoints = Checkpointer(output, every=cfg.save_every, keep=cfg.keep_checkpoints)

    step = start = checkpoints.resume(engine, pipeline, task)
    if start:
        log.info("resumed from %s at step %d", checkpoints.newest(), start)
        metrics.resume_at(start)  # what a killed run logged past its checkpoint is run again
        ledger.resume_at(start)
    steps = GlobalSteps(pipeline, cfg.micro_batches, task.cost, balance=cfg.balance, rank=rank, world=world)
    mixture = Mixture(source_names or [], pipeline.reader.drawn)
    record = None
    while step < cfg.max_steps:
        started = time.perf_counter()
        plan = steps.next()
        if plan is None:
            log.info("data ended after step %d", step)  # a finite run (epochs=n)
            break
        lr = set_lr(engine, schedule, step)
        result = train_step(engine, task, plan.mine, world)
        step += 1
        seconds = time.perf_counter() - started
        mixture.add(plan.mine)
        record = StepMetrics.gather(plan, result, lr, global_grad_norm(engine), seconds, peak_flops, world, mixture,
                                    task)
        ledger.log(step, plan.mine, plan.owners)
        if not record.finite:  # every rank holds the same record: all stop at this step
            ids = [i for batch in plan.mine for i in batch.sample_ids]
            raise NonFiniteStepError(step, record, ids, rank, checkpoints.newest())
        task.end_step(record.stats, record.totals)
        metrics.log(step, record.values())
        if checkpoints.due(step, cfg.max_steps):
            checkpoints.save(engine, step, pipeline, task)

    if step > start:
        checkpoints.save(engine, step, pipeline, task)
    folder = export_hf(engine, output / "export", tokenizer) if cfg.export else None
    return TrainResult(start, step, record.loss if record else None, folder, engine, task=task,
                       dropped_sequences=steps.dropped_sequences, dropped_samples=steps.dropped_samples)
