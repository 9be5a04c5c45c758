"""`python -m training.launch stage=NAME key=value ...`: train one stage.

    python -m training.launch                                   # tiny model, a few steps on out/pretrain
    python -m training.launch stage=align data=out/captions max_steps=200 output=out/train/align
    python -m training.launch stage=sft model=keye_8b init=/ckpt/keye-anneal deepspeed=configs/deepspeed/zero3.json
    python -m training.launch stage=pretrain hostfile=/etc/hostfile  # several nodes

Settings: configs/stages/NAME.yaml, then key=value overrides (`--print-config` shows the result;
see training/stages.py for every key). Writes OUTPUT/metrics.jsonl, OUTPUT/tensorboard/,
OUTPUT/checkpoints/ (the run resumes from the newest complete one when started again),
OUTPUT/export/ (HF folder, safetensors), OUTPUT/ledger/ (the sample ids of every step, per rank)
and OUTPUT/report.md. A step whose loss or gradient norm is not finite stops the run with a
message naming the step and its sample ids; its checkpoints end at the last good step.

Processes: one process on the CPU or one GPU as it is; with several local GPUs, `num_gpus=N`, or
a hostfile, this command starts itself again under the DeepSpeed launcher (one process per GPU;
on a CPU-only machine num_gpus=N starts N gloo processes). Nodes are reached by ssh, or, with
`node_rank=i master_addr=HOST`, each node runs this command itself (SLURM, Kubernetes).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from curation.config import ConfigError, to_yaml
from curation.schema.manifest import OutputFolderError
from training.stages import REPO, StageConfig, load_stage

log = logging.getLogger("training.launch")


def relaunch_command(cfg: StageConfig, argv: Sequence[str]) -> list[str] | None:
    """The DeepSpeed launcher command when this run needs several processes and is not one yet."""
    import torch

    if "LOCAL_RANK" in os.environ:
        return None
    gpus = cfg.num_gpus if cfg.num_gpus is not None else torch.cuda.device_count()
    if not cfg.hostfile and gpus <= 1:
        return None
    command = [sys.executable, "-m", "deepspeed.launcher.runner", "--no_local_rank"]
    if cfg.hostfile:
        command += ["--hostfile", cfg.hostfile]
    if cfg.node_rank is not None:  # every node runs this itself (no ssh): it needs the rendezvous
        if not cfg.master_addr:
            raise ConfigError("node_rank needs master_addr (the first node's address)")
        command += ["--no_ssh", "--node_rank", str(cfg.node_rank)]
    if cfg.master_addr:
        command += ["--master_addr", cfg.master_addr, "--master_port", str(cfg.master_port)]
    if gpus:
        command += ["--num_gpus", str(gpus)]
    return command + ["--module", "training.launch", *argv]


def build_pipeline(cfg: StageConfig, tokenizer, rank: int, world: int):
    """This rank's data pipeline for the stage's task (training/tasks)."""
    from training.tasks import build_task

    return build_task(cfg.task).build_pipeline(cfg, tokenizer, rank, world)


def run(cfg: StageConfig):
    """Build everything from the config and train; returns the engine's TrainResult."""
    import torch

    from training.engine import NonFiniteStepError, build_engine, init_distributed, rank_world, train
    from training.metrics import Ledger, MetricsWriter, device_peak_flops
    from training.processor import load_tokenizer
    from training.tasks import build_task

    if cfg.alignment.rounds:  # iterative alignment: rounds of sampling and MPO, each round a run of its own
        from training.alignment import run_rounds

        return run_rounds(cfg)
    t0 = time.perf_counter()
    init_distributed()
    rank, world = rank_world()
    tokenizer = load_tokenizer()
    task = build_task(cfg.task)
    model, pipeline = task.build_model(cfg), task.build_pipeline(cfg, tokenizer, rank, world)
    engine = build_engine(model, cfg, task)
    torch.manual_seed(cfg.seed + rank)
    peak, peak_source = device_peak_flops(cfg.peak_tflops)
    output = cfg.output_dir
    output.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        (output / "config.yaml").write_text(to_yaml(cfg))
    metrics = MetricsWriter(output, cfg.max_steps, enabled=rank == 0)
    ledger = Ledger(output, rank, enabled=cfg.ledger)
    names = [Path(d).name for d in cfg.data]
    try:
        result = train(cfg, engine, pipeline, metrics, tokenizer, peak, names, task=task, ledger=ledger)
    except NonFiniteStepError as error:
        if rank == 0:
            (output / "report.md").write_text(f"# Training run: stage {cfg.stage}\n\n- stopped: {error}\n")
        raise
    finally:
        metrics.close()
        ledger.close()
    if rank == 0:
        write_report(cfg, result, pipeline, world, peak, peak_source, time.perf_counter() - t0)
    return result


def write_report(cfg, result, pipeline, world, peak, peak_source, seconds) -> None:
    lines = [
        f"# Training run: stage {cfg.stage}",
        "",
        f"- model: {cfg.model}{f' (init {cfg.init})' if cfg.init else ''}; trained parts: {', '.join(cfg.train)}",
        f"- data: {', '.join(cfg.data)}",
        f"- steps: {result.start_step} -> {result.step} of {cfg.max_steps}"
        + (f" (resumed at {result.start_step})" if result.start_step else ""),
        f"- last loss: {result.last_loss if result.last_loss is not None else 'n/a'}",
        f"- ranks: {world}; peak FLOP/s for MFU: {peak:.3g} ({peak_source})",
        (
            f"- rows read {pipeline.totals.get('rows', 0)}, samples {pipeline.totals.get('samples', 0)}, "
            f"skipped {dict(pipeline.skipped)}; padding fraction {pipeline.padding_fraction:.3f}"
        ),
        (
            f"- end of data: {result.dropped_sequences} sequence(s), {result.dropped_samples} samples read but not "
            "run (fewer than one per rank)"
            if result.dropped_sequences
            else "- end of data: nothing dropped"
        ),
        *(result.task.report() if result.task is not None else []),
        f"- wall time: {seconds:.1f} s",
        f"- metrics: metrics.jsonl, tensorboard/; checkpoints: checkpoints/; export: {result.export or 'none'}",
    ]
    (cfg.output_dir / "report.md").write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".torch_extensions"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        cfg = load_stage([a for a in argv if a != "--print-config"])
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"training.launch: {exc}") from None
    if "--print-config" in argv:
        print(to_yaml(cfg))
        return 0
    command = relaunch_command(cfg, argv)
    if command:
        return subprocess.call(command)
    from training.engine import NonFiniteStepError, shutdown_distributed

    try:
        result = run(cfg)
    except (ConfigError, OutputFolderError, NonFiniteStepError) as exc:  # the message says it all: no traceback
        raise SystemExit(f"training.launch: {exc}") from None
    shutdown_distributed()
    if os.environ.get("RANK", "0") != "0":
        return 0
    where = cfg.output_dir / ("report.md" if cfg.alignment.rounds else "metrics.jsonl")
    print(f"stage {cfg.stage}: steps {result.start_step}->{result.step}, last loss {result.last_loss}, "
          f"export {result.export}, {where.name} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
