"""Every stage config, 2 steps on the tiny model: the parts outside its `train` list stay
bit-identical, every part in it moves; sft's loss is on assistant tokens only; vit_pretrain
(the contrastive task) trains its ViT, text tower and SigLIP temperature/bias."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from keye_helpers import changed, parts_state, png, tiny, training_rows, write_shards

from curation import schema
from training.stages import STAGES_DIR, load_stage

# the stages of the VLM's LM loss; vit_pretrain (task: contrastive) trains another model
LM_STAGES = sorted(p.stem for p in STAGES_DIR.glob("*.yaml") if yaml.safe_load(p.read_text()).get("task", "lm") == "lm")


def chat_rows(n: int, think_mode: str | None = None) -> list[dict]:
    """Two-turn chats about an image (the ViT and projector get gradients through the answers),
    some with a system turn, so user turns come both before and after assistant turns."""
    m = schema.message
    rows = []
    for i in range(n):
        answer = f"<think>\nlook at {i}\n</think>\n\nIt is noise {i}." if think_mode == "think" else f"Noise {i}."
        turns = [m("system", "Answer briefly.")] if i % 2 else []
        turns += [
            m("user", schema.image_part(0), f"What is picture {i}?"),
            m("assistant", answer),
            m("user", "Are you sure?"),
            m("assistant", "Yes, quite."),
        ]
        rows.append(
            schema.make_row("t", "vqa", turns, [schema.image_entry(png(56, 56, 100 + i))], think_mode=think_mode)
        )
    return rows


@pytest.fixture(scope="module")
def initial_parts():
    """The parts of the tiny model every run starts from (seed 0), shared by the tests."""
    return parts_state(tiny(0))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("stage_data")


def stage_data(name: str, root: Path) -> str:
    """data= for a stage: one folder per folder of its YAML (named alike, rows in that thinking
    mode when the name is one), chats for sft, captions and chats otherwise."""
    folders = load_stage([f"stage={name}"]).data
    if len(folders) > 1:
        made = []
        for folder in folders:
            mode = Path(folder).name if Path(folder).name in schema.THINK_MODES else None
            target = root / name / Path(folder).name
            made.append(target if target.exists() else write_shards(target, chat_rows(6, mode)))
        return ",".join(map(str, made))
    target = root / ("chats" if name == "sft" else "mix")
    if not target.exists():
        write_shards(target, chat_rows(12) if name == "sft" else training_rows())
    return str(target)


def test_every_lm_stage_is_covered():
    assert {"align", "pretrain", "anneal", "sft", "cot_coldstart"} <= set(LM_STAGES)


@pytest.mark.parametrize("name", LM_STAGES)
def test_stage_trains_exactly_its_parts(name, tmp_path, data_root, initial_parts, monkeypatch):
    from training.launch import run
    from training.tasks.lm import LMTask

    seen = []  # (input_ids, labels) of every forward the run made
    build_model = LMTask.build_model

    def resolve_and_watch(self, cfg):
        model = build_model(self, cfg)
        model.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append((kwargs["input_ids"].clone(), kwargs["labels"].clone())),
            with_kwargs=True,
        )
        return model

    monkeypatch.setattr(LMTask, "build_model", resolve_and_watch)
    cfg = load_stage(
        [
            f"stage={name}",
            f"data={stage_data(name, data_root)}",
            f"output={tmp_path / 'out'}",
            "max_steps=2",
            "max_tokens=192",
            "packer_buffer=8",
            "shuffle_buffer=8",
            "export=false",
            "optimizer.lr=1e-3",
            "seed=0",
        ]
    )
    result = run(cfg)
    assert result.step == 2 and len(seen) == 2 * cfg.micro_batches

    after = parts_state(result.engine.module)
    for part, before in initial_parts.items():
        if part in cfg.train:
            assert changed(before, after[part]), f"{name}: {part} is trained but did not change"
        else:
            assert not changed(before, after[part]), f"{name}: {part} is frozen but changed"
    if name == "sft":
        for input_ids, labels in seen:
            assert_loss_on_assistant_tokens_only(input_ids[0], labels[0])


def assert_loss_on_assistant_tokens_only(input_ids: torch.Tensor, labels: torch.Tensor) -> None:
    """Labelled positions are exactly the assistant turns' text and their <|im_end|>: never the
    system or user turns, the role headers, the image tokens or the separators between turns."""
    from training.processor import load_tokenizer

    tokenizer = load_tokenizer()
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    (assistant,) = tokenizer.encode("assistant")
    ids = input_ids.tolist()
    expected = torch.zeros(len(ids), dtype=torch.bool)
    roles = []
    for i, token in enumerate(ids):
        if token != im_start:
            continue
        roles.append(tokenizer.decode([ids[i + 1]]))
        end = ids.index(im_end, i)
        if ids[i + 1] == assistant:
            expected[i + 3 : end + 1] = True  # after "<|im_start|>assistant\n", through <|im_end|>
    assert {"user", "assistant"} <= set(roles)
    learned = labels != -100
    assert torch.equal(learned, expected), tokenizer.decode(input_ids[learned ^ expected].tolist())
    assert torch.equal(labels[learned], input_ids[learned])


def test_vit_pretrain_trains_vit_text_tower_and_temperature(tmp_path, data_root):
    """The contrastive stage through the same launch: ViT, text tower and the SigLIP scale/bias
    all move, and the trained ViT is the VLM's (same names: it loads into a fresh VLM strictly)."""
    from training.launch import run
    from training.tasks import build_task
    from training.vit_pretrain import build_vit_pretrain_model

    args = ["stage=vit_pretrain", f"data={stage_data('pretrain', data_root)}", f"output={tmp_path / 'out'}",
            "max_steps=2", "batch_size=4", "shuffle_buffer=8", "export=false", "seed=0"]
    cfg = load_stage(args)
    before = {part: {n: p.detach().clone() for i, m in enumerate(mods) for n, p in m.named_parameters()}
              for part, mods in build_task("contrastive").model_parts(build_vit_pretrain_model(cfg)).items()}
    result = run(cfg)
    assert result.step == 2
    after = {part: {n: p.detach() for i, m in enumerate(mods) for n, p in m.named_parameters()}
             for part, mods in build_task("contrastive").model_parts(result.engine.module).items()}
    for part in ("visual", "text", "logit"):
        assert changed(before[part], after[part]), part
    tiny(0).visual.load_state_dict(result.engine.module.visual.state_dict(), strict=True)
