"""training.merge: weighted averages of tiny Keye models equal the hand-computed ones, sharded and
single-file outputs agree and load with from_pretrained, and inputs that cannot be averaged (or an
output inside an input) are refused with a message naming what differs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from keye_helpers import tiny
from safetensors.torch import load_file, save_file

from curation.config import ConfigError, load
from training.merge import MergeConfig, MergeError, main, merge

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Three tiny models of different seeds as HF folders (b sharded) and their float64 weights."""
    root = tmp_path_factory.mktemp("models")
    folders, states = {}, {}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        model = tiny(seed)
        folder = root / name
        model.save_pretrained(folder, safe_serialization=True, max_shard_size="20MB" if name == "b" else "5GB")
        folders[name], states[name] = folder, {k: v.detach().double() for k, v in model.state_dict().items()}
    assert (folders["b"] / "model.safetensors.index.json").is_file()  # a sharded input
    return folders, states


def merged_state(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
    state = {}
    for file in files or ["model.safetensors"]:
        state.update(load_file(str(folder / file)))
    return state


def assert_average(got: dict, states: list[dict], weights: list[float]) -> None:
    """Every tensor is (sum w_i x_i) / (sum w_i), rounded once to float32 (half an ulp)."""
    assert got.keys() == states[0].keys()
    for name, value in got.items():
        expected = sum(w * s[name] for w, s in zip(weights, states)) / sum(weights)
        assert value.dtype == torch.float32
        torch.testing.assert_close(value.double(), expected, rtol=6e-8, atol=1e-30, msg=name)


def merge_of(*argv: str):
    return merge(load(MergeConfig, list(argv)))


def linked_copy(source: Path, target: Path) -> Path:
    """A copy of an HF folder whose weight files are symlinks (cheap), config.json a real file."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            (target / item.name).symlink_to(item.resolve())
        else:
            shutil.copy2(item, target / item.name)
    return target


def test_weighted_merge_equals_the_hand_computed_average(models, tmp_path, monkeypatch):
    import training.merge

    folders, states = models
    monkeypatch.setattr(training.merge, "CHUNK_ELEMENTS", 1 << 20)  # the embedding is summed in row blocks
    out = merge_of(f"inputs={folders['a']},{folders['b']}", "weights=3,1", f"output={tmp_path / 'm'}")
    assert_average(merged_state(out), [states["a"], states["b"]], [3, 1])
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    info = json.loads((out / "merge_info.json").read_text())
    assert [i["weight"] for i in info["inputs"]] == [0.75, 0.25]
    assert json.loads((out / "config.json").read_text()) == json.loads((folders["a"] / "config.json").read_text())


def test_uniform_is_the_default(models, tmp_path):
    folders, states = models
    out = merge_of(f"inputs={folders['a']},{folders['b']},{folders['c']}", f"output={tmp_path / 'm'}")
    assert_average(merged_state(out), [states[k] for k in "abc"], [1, 1, 1])


def test_sharded_output_loads_and_equals_the_single_file(models, tmp_path):
    from training.model import KeyeForConditionalGeneration

    folders, _ = models
    inputs = f"inputs={folders['a']},{folders['b']}"
    single = merge_of(inputs, f"output={tmp_path / 'single'}")
    sharded = merge_of(inputs, f"output={tmp_path / 'sharded'}", "max_shard_size=30MB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 1 and files == [
        f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, 1 + len(files))
    ]
    assert sorted(p.name for p in sharded.glob("*.safetensors")) == files
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in merged_state(single).values())
    for file in files:  # bounded, unless one tensor alone is bigger (the 38 MB embedding)
        assert (sharded / file).stat().st_size <= 30e6 + 10_000 or len(load_file(str(sharded / file))) == 1
    loaded = KeyeForConditionalGeneration.from_pretrained(sharded).state_dict()
    expected = merged_state(single)
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_a_training_runs_folder_means_its_export(models, tmp_path):
    folders, states = models
    run = tmp_path / "run"
    linked_copy(folders["a"], run / "export")
    out = merge_of(f"inputs={run},{folders['c']}", f"output={tmp_path / 'm'}")
    assert_average(merged_state(out), [states["a"], states["c"]], [1, 1])
    assert json.loads((out / "merge_info.json").read_text())["inputs"][0]["folder"] == str((run / "export").resolve())


def test_config_mismatch_names_the_keys(models, tmp_path):
    folders, _ = models
    other = linked_copy(folders["b"], tmp_path / "other")
    config = json.loads((other / "config.json").read_text())
    # keys that say nothing about the weights may differ
    config.update(transformers_version="0.0.1", _name_or_path="elsewhere", use_cache=False)
    (other / "config.json").write_text(json.dumps(config))
    merge_of(f"inputs={folders['a']},{other}", f"output={tmp_path / 'ok'}")

    config["rms_norm_eps"] = 1e-5
    config["vision_config"]["layer_norm_eps"] = 1e-5
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(MergeError, match=r"rms_norm_eps, vision_config\.layer_norm_eps"):
        merge_of(f"inputs={folders['a']},{other}", f"output={tmp_path / 'm'}")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.update({"mlp_AR.linear_2.bias": s["mlp_AR.linear_2.bias"][:-1]}),
            r"mlp_AR\.linear_2\.bias F32\[63\]",
        ),
        (lambda s: s.update({"mlp_AR.linear_2.bias": s["mlp_AR.linear_2.bias"].bfloat16()}), r"linear_2\.bias BF16"),
        (lambda s: s.pop("lm_head.weight"), r"missing in .* \['lm_head\.weight'\]"),
    ],
    ids=["shape", "dtype", "missing"],
)
def test_tensor_mismatch_names_the_tensor(models, tmp_path, change, message):
    folders, _ = models
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy2(folders["a"] / "config.json", other / "config.json")
    state = load_file(str(folders["a"] / "model.safetensors"))
    change(state)
    save_file(state, str(other / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(MergeError, match=message):
        merge_of(f"inputs={folders['c']},{other}", f"output={tmp_path / 'm'}")


@pytest.mark.parametrize(
    "weights, message",
    [("1,2,3", "3 values for 2 inputs"), ("1,-1", "negative"), ("0,0", "all be zero")],
)
def test_bad_weights_are_refused(models, tmp_path, weights, message):
    folders, _ = models
    with pytest.raises(ConfigError, match=message):
        merge_of(f"inputs={folders['a']},{folders['c']}", f"weights={weights}", f"output={tmp_path / 'm'}")


def test_never_writes_into_an_input(models, tmp_path):
    folders, _ = models
    run = tmp_path / "run"
    linked_copy(folders["a"], run / "export")
    inputs = f"inputs={run},{folders['c']}"
    for output in (folders["c"], folders["c"] / "merged", run, run / "export", run / "merged"):
        with pytest.raises(ConfigError, match="lies in the input"):
            merge_of(inputs, f"output={output}")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty folder"):
        merge_of(inputs, f"output={tmp_path / 'full'}")
    assert sorted(p.name for p in folders["c"].iterdir()) == ["config.json", "model.safetensors"]


def tensor_folder(folder: Path, tensors: dict) -> Path:
    """A minimal input: config.json and one safetensors file (no model class needed)."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "hidden_size": 2}))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_integer_buffers_are_copied_if_equal_and_bf16_is_averaged_blockwise(tmp_path, monkeypatch):
    import training.merge

    monkeypatch.setattr(training.merge, "CHUNK_ELEMENTS", 7)  # several row blocks per tensor
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(10, 3, generator=g).bfloat16(), "s": torch.tensor(2.0), "n": torch.arange(12).view(4, 3)}
    b = {"w": torch.randn(10, 3, generator=g).bfloat16(), "s": torch.tensor(5.0), "n": torch.arange(12).view(4, 3)}
    out = merge_of(
        f"inputs={tensor_folder(tmp_path / 'a', a)},{tensor_folder(tmp_path / 'b', b)}",
        "weights=1,2",
        f"output={tmp_path / 'm'}",
    )
    got = load_file(str(out / "model.safetensors"))
    assert got["w"].dtype == torch.bfloat16
    assert torch.equal(got["w"], ((a["w"].double() + 2 * b["w"].double()) / 3).bfloat16())
    assert got["s"].item() == pytest.approx(4.0) and got["s"].shape == ()
    assert torch.equal(got["n"], a["n"])

    c = dict(b, n=torch.zeros(4, 3, dtype=torch.int64))
    with pytest.raises(MergeError, match="non-floating tensor n"):
        merge_of(f"inputs={tmp_path / 'a'},{tensor_folder(tmp_path / 'c', c)}", f"output={tmp_path / 'm2'}")
    assert not (tmp_path / "m2").exists() and not (tmp_path / ".m2.merging").exists()  # nothing half-written


def test_command_line(models, tmp_path, capsys):
    from training.model import KeyeForConditionalGeneration

    folders, states = models
    run = tmp_path / "run"
    linked_copy(folders["a"], run / "export")
    output = tmp_path / "merged"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "training.merge",
        f"inputs={run},{folders['b']}",
        "weights=1,3",
        f"output={output}",
        "max_shard_size=50MB",
    ]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"into {output}" in proc.stdout and "export/" in proc.stderr  # says it used the run's export
    model = KeyeForConditionalGeneration.from_pretrained(output)
    assert_average(model.state_dict(), [states["a"], states["b"]], [1, 3])
    info = json.loads((output / "merge_info.json").read_text())
    assert [i["given"] for i in info["inputs"]] == [str(run), str(folders["b"])]
    assert [i["weight"] for i in info["inputs"]] == [0.25, 0.75]
    first = info["inputs"][0]["files"]
    assert first == [
        {
            "name": "model.safetensors",
            "bytes": (folders["a"] / "model.safetensors").stat().st_size,
            "sha256": hashlib.sha256((folders["a"] / "model.safetensors").read_bytes()).hexdigest(),
        }
    ]
    assert len(info["inputs"][1]["files"]) > 1  # every shard of the sharded input

    assert main([f"inputs={run},{folders['b']}", f"output={output}", "--print-config"]) == 0
    assert "max_shard_size: 5GB" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="training.merge: .*not an empty folder"):
        main([f"inputs={run},{folders['b']}", f"output={output}"])
