"""The training engine: DeepSpeed around KeyeForConditionalGeneration, the step loop, checkpoints.

    engine = build_engine(model, cfg)                 # param groups, freezing, deepspeed.initialize
    result = train(cfg, engine, pipeline, tokenizer)  # resume, steps, checkpoints, metrics, export

One optimizer step on a rank = `cfg.micro_batches` packed sequences (gradient accumulation). The
LM loss is normalised by the loss tokens of the whole step, all ranks and micro-steps together
(training/losses.py says how that meets DeepSpeed's gradient averaging).

Parts and freezing: `visual` (ViT), `projector` (`mlp_AR`), `llm` (`model` + `lm_head`). A part not
in `cfg.train` gets requires_grad=False and is in no optimizer group, so it stays bit-identical;
each trained part has its own groups with lr = cfg.optimizer.lr x lr_mult.<part> (biases and norm
weights without weight decay). The schedule multiplies every group's base lr, so ratios hold.

Checkpoints (OUTPUT/checkpoints/step_N/): DeepSpeed's save_checkpoint (module, optimizer and its
fp32 partitions; DeepSpeed writes these with torch.save and reads them back with
torch.load(weights_only=False): files this run wrote, never data), plus side files without pickle:
`trainer_rank{r}.json` (step, the data pipeline's state: reader cursor, packer buffer, counters;
python's RNG state) and `rng_rank{r}.safetensors` (torch CPU/CUDA generator states), then
`COMPLETE`, written last. A run whose output folder holds checkpoints resumes from the newest
complete one on its own.

Per step, rank 0 logs loss, lr, grad norm, tokens/s, samples/s, estimated MFU (train_flops over
the device peak), padding fraction, rank imbalance (max / mean of the ranks' step FLOPs) and,
with several data folders, the mixture drawn so far.

Which sequences a rank runs each step comes from training/global_step.py: every rank draws
micro_batches sequences, ranks exchange their costs, the Balancer moves sequences so that every
rank runs the same number at about the same cost, and ranks whose data ended early are topped up
by the others. rank_imbalance is logged as run and as it would have been without the balancer.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from training.data.balance import exchange_costs
from training.data.cost import ModelDims, sequence_flops
from training.export import export_hf
from training.global_step import GlobalSteps
from training.losses import global_count, micro_step_loss, sum_from_mean
from training.schedules import Schedule
from training.stages import REPO, StageConfig

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


def rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


# --- optimizer groups and DeepSpeed -----------------------------------------------------------------


def model_parts(model: torch.nn.Module) -> dict[str, list[torch.nn.Module]]:
    """The model's parts by name (what `train` and `lr_mult` refer to). A model may name its own
    (`trainable_parts()`, e.g. vit_pretrain's visual/text/logit); the VLM's are the released names."""
    if hasattr(model, "trainable_parts"):
        return model.trainable_parts()
    return {"visual": [model.visual], "projector": [model.mlp_AR], "llm": [model.model, model.lm_head]}


def param_groups(model: torch.nn.Module, cfg: StageConfig) -> list[dict]:
    """Freeze the parts not trained; one decay and one no-decay group per trained part. Parameters
    a model built frozen (never used in its forward) stay frozen in a trained part."""
    seen, groups = set(), []
    for part, modules in model_parts(model).items():
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
        raise ValueError(f"parameters outside the parts {', '.join(model_parts(model))}: {stray[:5]}")
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


def build_engine(model: torch.nn.Module, cfg: StageConfig):
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
    optimizer = make_optimizer(param_groups(model, cfg), cfg)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(cfg, use_bf16(cfg)))
    return engine


def set_lr(engine, schedule: Schedule, step: int) -> float:
    factor = schedule(step)
    for group in engine.optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return max(g["lr"] for g in engine.optimizer.param_groups)


# --- checkpoints --------------------------------------------------------------------------------------


def _step_of(path: Path) -> int:
    return int(path.name.split("_", 1)[1])


def complete_checkpoints(output: Path) -> list[Path]:
    root = output / "checkpoints"
    found = [p for p in root.glob("step_*") if (p / "COMPLETE").is_file()] if root.is_dir() else []
    return sorted(found, key=_step_of)


def save_checkpoint(engine, output: Path, step: int, pipeline, keep: int) -> None:
    rank, _ = rank_world()
    root, tag = output / "checkpoints", f"step_{step}"
    engine.save_checkpoint(str(root), tag=tag)
    state = {"step": step, "data": pipeline.state_dict(), "python_random": _jsonable(random.getstate())}
    (root / tag / f"trainer_rank{rank}.json").write_text(json.dumps(state))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["torch_cuda"] = torch.cuda.get_rng_state()
    save_file(rng, str(root / tag / f"rng_rank{rank}.safetensors"))
    if dist.is_initialized():
        dist.barrier()
    if rank == 0:
        (root / tag / "COMPLETE").write_text(str(step))
        for old in complete_checkpoints(output)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()


def load_checkpoint(engine, path: Path, pipeline) -> int:
    rank, _ = rank_world()
    loaded, _ = engine.load_checkpoint(str(path.parent), tag=path.name)
    if loaded is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint {path}")
    state = json.loads((path / f"trainer_rank{rank}.json").read_text())
    pipeline.load_state_dict(state["data"])
    random.setstate(_tupled(state["python_random"]))
    rng = load_file(str(path / f"rng_rank{rank}.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if "torch_cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["torch_cuda"])
    return int(state["step"])


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


# --- the loop -----------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    start_step: int
    step: int
    last_loss: float | None
    export: Path | None
    engine: object = None  # the DeepSpeed engine (its .module is the trained model)
    dropped_sequences: int = 0  # read but not run at the end of a finite run (see global_step.py)
    dropped_samples: int = 0


def model_dims(config) -> ModelDims:
    v = config.vision_config
    return ModelDims(
        vit_hidden=v.hidden_size, vit_layers=v.num_hidden_layers, vit_intermediate=v.intermediate_size,
        patch_size=v.patch_size, merge_size=v.spatial_merge_size, llm_hidden=config.hidden_size,
        llm_layers=config.num_hidden_layers, llm_intermediate=config.intermediate_size,
        llm_heads=config.num_attention_heads, llm_kv_heads=config.num_key_value_heads,
        llm_head_dim=config.head_dim, vocab_size=config.vocab_size,
    )


def train_flops(micro: list, dims: ModelDims) -> float:
    """FLOPs of a training step over these packed sequences: the cost model's forward (ViT,
    projector, LLM) x 3 for forward + backward, with lm_head only on loss positions (the packed
    training forward projects nothing else; the cost model counts it on every position)."""
    forward = sum(sequence_flops(b.shapes, dims) for b in micro)
    unprojected = sum(b.real_tokens - b.loss_tokens for b in micro)
    return 3 * (forward - 2 * dims.llm_hidden * dims.vocab_size * unprojected)


def _to(inputs: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items() if v is not None}


def train_step(engine, micro: list, world: int) -> tuple[float, int]:
    """One optimizer step over this rank's packed sequences: (this rank's loss-token sum, the
    step's loss tokens over all ranks). Each micro-step back-propagates sum / global tokens."""
    global_tokens = global_count(sum(b.loss_tokens for b in micro))
    step_sum = 0.0
    for i, batch in enumerate(micro):
        # the boundary is set by hand: the last step of a finite run may have fewer micro-steps
        # than the configured gradient accumulation, and DeepSpeed's own counter would drift
        engine.set_gradient_accumulation_boundary(i == len(micro) - 1)
        out = engine(**_to(batch.inputs, engine.device), return_logits=False)
        local_sum = sum_from_mean(out.loss, out.num_loss_tokens)
        engine.backward(micro_step_loss(local_sum, global_tokens, world), scale_wrt_gas=False)
        engine.step()  # DeepSpeed steps the optimizer on the boundary only
        step_sum += float(local_sum.detach())
    return step_sum, global_tokens


def train(cfg: StageConfig, engine, pipeline, metrics, tokenizer=None, peak_flops: float | None = None,
          source_names: list[str] | None = None, cost=None, ledger=None) -> TrainResult:
    """Resume if OUTPUT holds a complete checkpoint, run to cfg.max_steps, checkpoint, export.

    cost(batch) -> FLOPs of training on one packed sequence (default: the VLM's cost model); it
    drives the balancer and the MFU estimate. ledger: a metrics.Ledger of the sample ids trained."""
    output, (rank, world) = cfg.output_dir, rank_world()
    total = cfg.schedule.total_steps or cfg.max_steps
    schedule = Schedule(cfg.schedule.name, cfg.schedule.warmup_steps, total, cfg.schedule.min_lr_ratio)
    if cost is None:
        dims = model_dims(engine.module.config)
        cost = lambda batch: train_flops([batch], dims)
    latest = complete_checkpoints(output)
    step = start = load_checkpoint(engine, latest[-1], pipeline) if latest else 0
    if latest:
        log.info("resumed from %s at step %d", latest[-1], step)
        metrics.resume_at(step)
        if ledger is not None:
            ledger.resume_at(step)
    steps = GlobalSteps(pipeline, cfg.micro_batches, cost, balance=cfg.balance, rank=rank, world=world)
    loss_value, mix = None, {}
    while step < cfg.max_steps:
        t0 = time.perf_counter()
        plan = steps.next()
        if plan is None:
            log.info("data ended after step %d", step)  # a finite run (epochs=n)
            break
        lr = set_lr(engine, schedule, step)
        step_sum, global_tokens = train_step(engine, plan.mine, world)
        step += 1
        seconds = time.perf_counter() - t0
        micro = plan.mine
        per_rank = exchange_costs([sum(b.real_tokens for b in micro), sum(b.max_tokens for b in micro),
                                   sum(len(b.sample_ids) for b in micro), sum(b.padding_tokens for b in micro),
                                   step_sum])
        totals = [sum(r[i] for r in per_rank) for i in range(5)]
        loss_value = totals[4] / global_tokens
        for b in micro:
            for coord in b.coords:
                mix[coord.source] = mix.get(coord.source, 0) + 1
        grad_norm = engine.get_global_grad_norm()
        values = {
            "loss": loss_value,
            "lr": lr,
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "loss_tokens": global_tokens,
            "tokens_per_s": totals[0] / seconds,
            "samples_per_s": totals[2] / seconds,
            "step_seconds": seconds,
            "padding_fraction": totals[3] / totals[1],
            "rank_imbalance": plan.imbalance,
            "rank_imbalance_unbalanced": plan.imbalance_unbalanced,
            "mfu": sum(plan.loads) / seconds / (peak_flops * world) if peak_flops else None,
        }
        if plan.dropped_sequences:
            values.update(dropped_sequences=plan.dropped_sequences, dropped_samples=plan.dropped_samples)
        if source_names and len(source_names) > 1:  # the mixture as drawn so far (this rank)
            seen = sum(mix.values())
            values.update({f"mix/{source_names[s]}": n / seen for s, n in sorted(mix.items())})
        metrics.log(step, values)
        if ledger is not None:
            ledger.log(step, plan.mine, plan.owners)
        if step < cfg.max_steps and cfg.save_every and step % cfg.save_every == 0:
            save_checkpoint(engine, output, step, pipeline, cfg.keep_checkpoints)
    if step > start:
        save_checkpoint(engine, output, step, pipeline, cfg.keep_checkpoints)
    folder = export_hf(engine, output / "export", tokenizer) if cfg.export else None
    return TrainResult(start, step, loss_value, folder, engine, dropped_sequences=steps.dropped_sequences,
                       dropped_samples=steps.dropped_samples)
