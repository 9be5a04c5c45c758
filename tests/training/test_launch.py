"""`python -m training.launch`: stage configs, overrides, the launcher decision, and a real run
in a subprocess that writes metrics.jsonl and an HF export that from_pretrained loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from keye_helpers import tiny, training_rows, write_shards
from tests.launch_helpers import fresh_shell_env

from curation.config import ConfigError
from training.stages import PARTS, STAGES_DIR, TASK_PARTS, load_stage

REPO = Path(__file__).resolve().parents[2]
LM_STAGES = ("align", "pretrain", "anneal", "sft", "cot_coldstart")
STAGES = (*LM_STAGES, "vit_pretrain", "mpo", "rl", "iterative_alignment")


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_config_loads(name):
    cfg = load_stage([f"stage={name}"])
    assert cfg.stage == name
    assert cfg.task == {"vit_pretrain": "contrastive", "mpo": "preference", "rl": "rl",
                        "iterative_alignment": "preference"}.get(name, "lm")
    assert set(cfg.train) <= set(TASK_PARTS[cfg.task])
    assert (REPO / cfg.deepspeed).is_file()


def test_stages_differ_as_the_design_says():
    assert load_stage(["stage=align"]).train == ["projector"]
    assert load_stage(["stage=pretrain"]).train == list(PARTS)
    assert load_stage(["stage=anneal"]).schedule.name == "linear"
    assert load_stage(["stage=anneal"]).schedule.min_lr_ratio == 0.0
    cot = load_stage(["stage=cot_coldstart"])
    assert [Path(d).name for d in cot.data] == ["think", "no_think", "auto_think", "agentic"]
    assert len(cot.data_weights) == len(cot.data)
    mpo = load_stage(["stage=mpo"])
    assert (mpo.task, mpo.mpo.weights, mpo.mpo.reference, mpo.data) == (
        "preference", [0.8, 0.2, 1.0], "live", ["out/cot/preference"])
    rl = load_stage(["stage=rl"])
    assert (rl.task, rl.data, rl.rl.group_size >= 2, rl.alignment.rounds) == ("rl", ["out/cot/rl"], True, 0)
    aligned = load_stage(["stage=iterative_alignment"])
    assert (aligned.task, aligned.alignment.rounds, aligned.data) == ("preference", 2, ["out/cot/rl"])
    with pytest.raises(ConfigError, match="task must be preference"):
        load_stage(["stage=rl", "alignment.rounds=2"])
    assert sorted(p.stem for p in STAGES_DIR.glob("*.yaml")) == sorted(STAGES)


def test_overrides_and_errors():
    cfg = load_stage(["stage=align", "max_steps=7", "data=a,b", "model=keye_8b", "output=x", "lr_mult.visual=0.5"])
    assert (cfg.max_steps, cfg.data, cfg.model, cfg.output, cfg.lr_mult.visual) == (7, ["a", "b"], "keye_8b", "x", 0.5)
    assert load_stage([]).stage == "pretrain" and load_stage([]).data == ["out/pretrain"]
    with pytest.raises(ConfigError, match="max_step"):
        load_stage(["max_stepz=3"])
    with pytest.raises(ConfigError, match="stages: align"):
        load_stage(["stage=nope"])
    with pytest.raises(ConfigError, match="unknown parts"):
        load_stage(["train=vit"])
    with pytest.raises(ConfigError, match="data_weights"):
        load_stage(["data=a,b", "data_weights=1"])


def test_large_model_without_weights_is_an_error():
    from training.tasks.lm import resolve_model

    with pytest.raises(ConfigError, match="init="):
        resolve_model(load_stage(["model=keye_8b"]))


def test_launcher_decision(monkeypatch):
    from training.launch import relaunch_command

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert relaunch_command(load_stage(["num_gpus=1"]), []) is None  # one process as it is
    command = relaunch_command(load_stage(["hostfile=/h", "num_gpus=8"]), ["stage=pretrain", "hostfile=/h"])
    assert command[1:4] == ["-m", "deepspeed.launcher.runner", "--no_local_rank"]
    assert command[command.index("--hostfile") + 1] == "/h" and command[command.index("--num_gpus") + 1] == "8"
    assert command[-4:] == ["--module", "training.launch", "stage=pretrain", "hostfile=/h"]
    no_ssh = relaunch_command(load_stage(["hostfile=/h", "node_rank=1", "master_addr=10.0.0.1", "master_port=7"]), [])
    assert no_ssh[no_ssh.index("--node_rank") + 1] == "1" and "--no_ssh" in no_ssh
    assert no_ssh[no_ssh.index("--master_addr") + 1] == "10.0.0.1" and no_ssh[no_ssh.index("--master_port") + 1] == "7"
    with pytest.raises(ConfigError, match="master_addr"):
        relaunch_command(load_stage(["hostfile=/h", "node_rank=1"]), [])
    monkeypatch.setenv("LOCAL_RANK", "0")  # already started by the launcher
    assert relaunch_command(load_stage(["hostfile=/h"]), []) is None


def test_print_config(capsys):
    from training.launch import main

    assert main(["stage=align", "max_steps=3", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "stage: align" in out and "max_steps: 3" in out


def test_launch_writes_metrics_and_a_loadable_export(tmp_path):
    from training.model import KeyeForConditionalGeneration

    data = write_shards(tmp_path / "shards", training_rows())
    out = tmp_path / "run"
    env = fresh_shell_env()
    proc = subprocess.run(
        [sys.executable, "-m", "training.launch", f"data={data}", f"output={out}", "max_steps=2", "max_tokens=256"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["loss"] > 0 and r["lr"] > 0 for r in rows)
    assert (out / "report.md").read_text().startswith("# Training run: stage pretrain")
    assert list((out / "tensorboard").iterdir())
    assert (out / "export" / "model.safetensors").is_file()
    model = KeyeForConditionalGeneration.from_pretrained(out / "export")  # strict: every tensor matches
    assert model.config.hidden_size == 64
    fresh = tiny()  # the same seed's initial weights: the export holds the trained ones
    assert not torch.equal(model.lm_head.weight, fresh.lm_head.weight)
    # the next stage starts from it: init=EXPORT (model= a YAML name or the folder itself)
    from training.tasks.lm import resolve_model

    for args in ([f"init={out / 'export'}"], [f"model={out / 'export'}"]):
        follow = resolve_model(load_stage(["stage=anneal", *args]))
        assert torch.equal(follow.lm_head.weight, model.lm_head.weight)


def test_metrics_writer_jsonl_tensorboard_and_progress(tmp_path, capsys):
    from training.metrics import MetricsWriter

    writer = MetricsWriter(tmp_path, total_steps=2, progress=True)
    writer.log(1, {"loss": 2.5, "lr": 0.1, "mfu": None})
    writer.log(2, {"loss": 2.0, "lr": 0.05, "mix/a": 1.0})
    writer.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 2.5, "lr": 0.1, "mfu": None}, {"step": 2, "loss": 2.0, "lr": 0.05, "mix/a": 1.0}]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert "2/2" in capsys.readouterr().err  # the tqdm bar
    silent = MetricsWriter(tmp_path / "rank1", total_steps=2, enabled=False)  # other ranks write nothing
    silent.log(1, {"loss": 1.0})
    assert not (tmp_path / "rank1").exists()
