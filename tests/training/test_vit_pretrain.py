"""vit_pretrain: the ViT + text tower model, the image-caption pipeline, FLOPs, and training steps
with plain AdamW and through DeepSpeed (CPU, gloo, one process)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from keye_helpers import SAME_MATH_ATOL, changed, parts_state, png, video_entry, write_shards

from curation import schema

os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[2] / ".torch_extensions"))

CAPTIONS = 10
MAX_TEXT_TOKENS = 16
m = schema.message


def caption_rows(n: int = CAPTIONS) -> list[dict]:
    sizes = [(56, 56), (56, 84), (84, 56)]
    return [schema.caption_row("t", png(*sizes[i % 3], i), f"a picture number {i}") for i in range(n)]


# rows that are no image-caption pair, and the reason each is skipped for
SKIPPED_ROWS = {
    "not_pair_kind": [
        schema.make_row("t", "text", [m("user", "Say hi."), m("assistant", "Hi!")]),
        schema.make_row(
            "t",
            "vqa",
            [m("user", schema.image_part(0), "Colour?"), m("assistant", "Red.")],
            [schema.image_entry(png(56, 56, 90))],
        ),
    ],
    "not_one_image": [
        schema.make_row(
            "t",
            "caption",
            [m("document", schema.image_part(0), schema.image_part(1), "two")],
            [schema.image_entry(png(56, 56, 91)), schema.image_entry(png(56, 56, 92))],
        ),
        schema.make_row("t", "caption", [m("document", "no picture at all")]),
    ],
    "has_video": [
        schema.make_row(
            "t",
            "caption",
            [m("document", schema.image_part(0), schema.video_part(0), "both")],
            [schema.image_entry(png(56, 56, 93))],
            [video_entry(4, 56, 56, fps=2.0, seed=9)],
        ),
    ],
    "no_caption": [schema.caption_row("t", png(56, 56, 94), "  ")],
    "unprocessable": [
        schema.make_row(
            "t",
            "caption",
            [m("document", schema.image_part(0), "broken")],
            [schema.image_entry(b"not an image", width=56, height=56)],
        )
    ],
}


@pytest.fixture(scope="module")
def captions_folder(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("vit") / "captions", caption_rows(), row_group_rows=4)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    rows = [row for rows in SKIPPED_ROWS.values() for row in rows] + caption_rows(6)  # read in this order
    return write_shards(tmp_path_factory.mktemp("vit") / "mixed", rows, row_group_rows=4)


def stage(*more: str):
    from training.stages import load_stage

    return load_stage(["stage=vit_pretrain", f"max_text_tokens={MAX_TEXT_TOKENS}", "batch_size=4", *more])


def tiny_vit(seed: int = 0):
    from training.vit_pretrain import build_vit_pretrain_model

    return build_vit_pretrain_model(stage(f"seed={seed}"))


def pipeline(folder: Path, tokenizer, processor, batch_size: int = 4, epochs: int | None = None, shuffle=True):
    from training.data import ShardReader
    from training.vit_pretrain import ContrastivePipeline

    reader = ShardReader([folder], seed=0, buffer_size=4 if shuffle else 1, shuffle=shuffle, epochs=epochs)
    return ContrastivePipeline(reader, tokenizer, processor, batch_size=batch_size, max_text_tokens=MAX_TEXT_TOKENS)


# --- model ----------------------------------------------------------------------------------------------


def test_every_parameter_is_in_exactly_one_part():
    from training.engine import param_groups

    model = tiny_vit()
    parts = model.trainable_parts()
    assert set(parts) == {"visual", "text", "logit"}
    owners: dict[int, list[str]] = {}
    for part, modules in parts.items():
        for module in modules:
            for p in module.parameters():
                owners.setdefault(id(p), []).append(part)
    assert all(len(o) == 1 for o in owners.values())
    assert set(owners) == {id(p) for p in model.parameters()}
    groups = param_groups(model, stage("train=visual,text,logit"))  # raises on a stray parameter
    assert {g["part"] for g in groups} == {"visual", "text", "logit"}
    # the pooling head the VLM freezes learns here
    assert all(p.requires_grad for p in model.visual.vision_model.head.parameters())
    # SigLIP's initial temperature and bias, never weight-decayed
    assert model.logit.scale.item() == pytest.approx(2.302585, abs=1e-6)  # log 10
    assert model.logit.bias.item() == -10.0
    assert all(g["weight_decay"] == 0 for g in groups if g["part"] == "logit")


def test_a_different_shared_width_adds_an_image_projection(tokenizer, processor, captions_folder):
    from training.vit_pretrain import ViTPretrainConfig, ViTPretrainModel

    tiny = tiny_vit()
    assert tiny.image_projection is None  # the tiny text tower projects into the ViT width (32)
    text = tiny.config.text_config.to_dict() | {"projection_size": 48}
    model = ViTPretrainModel(ViTPretrainConfig(vision_config=tiny.config.vision_config, text_config=text))
    assert model.image_projection.in_features == 32 and model.image_projection.out_features == 48
    assert model.image_projection in model.trainable_parts()["visual"]
    out = model(**next(pipeline(captions_folder, tokenizer, processor)).inputs)
    assert out.image_embeds.shape == out.text_embeds.shape == (4, 48)


def test_trained_visual_loads_into_the_vlm():
    """Same class and names: the VLM takes the ViT's state dict strictly and computes the same features."""
    from training.tasks.lm import resolve_model
    from training.stages import StageConfig

    vit, vlm = tiny_vit(seed=1), resolve_model(StageConfig(model="tiny"))
    vlm.visual.load_state_dict(vit.visual.state_dict(), strict=True)
    pixels, grid = torch.randn(16, 588), [(1, 4, 4)]
    torch.testing.assert_close(vlm.visual(pixels, grid), vit.visual(pixels, grid), rtol=0, atol=0)


def test_build_from_a_vlm_folder_and_from_an_export(tmp_path):
    """model=VLM folder: its ViT config and weights, a fresh text tower; init=export: everything back."""
    from curation.config import ConfigError
    from training.tasks.lm import resolve_model
    from training.stages import StageConfig
    from training.vit_pretrain import build_vit_pretrain_model

    vlm = resolve_model(StageConfig(model="tiny", seed=3))
    vlm.save_pretrained(tmp_path / "vlm")
    vit = build_vit_pretrain_model(stage(f"model={tmp_path / 'vlm'}"))
    for name, tensor in vlm.visual.state_dict().items():
        assert torch.equal(vit.visual.state_dict()[name], tensor), name
    vit.save_pretrained(tmp_path / "vit")
    again = build_vit_pretrain_model(stage(f"init={tmp_path / 'vit'}"))
    assert again.state_dict().keys() == vit.state_dict().keys()
    assert all(torch.equal(again.state_dict()[k], v) for k, v in vit.state_dict().items())
    assert all(p.requires_grad for p in again.visual.vision_model.head.parameters())
    with pytest.raises(ConfigError, match="only the tiny model"):
        build_vit_pretrain_model(stage("model=keye_8b"))
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        build_vit_pretrain_model(stage("max_text_tokens=65"))


def test_image_embedding_is_the_same_packed_or_alone(tokenizer, processor, captions_folder):
    model = tiny_vit().eval().double()  # float64: any CPU's summation order (keye_helpers.SAME_MATH_ATOL)
    batch = next(pipeline(captions_folder, tokenizer, processor, batch_size=5))
    grids = batch.inputs["image_grid_thw"]
    assert len({int(t * h * w) for t, h, w in grids}) > 1  # several sizes: several head groups
    with torch.no_grad():
        packed = model.image_embeddings(batch.inputs["pixel_values"], grids)
        offsets = [0, *torch.cumsum(grids.prod(dim=1), 0).tolist()]
        for i, grid in enumerate(grids):
            alone = model.image_embeddings(batch.inputs["pixel_values"][offsets[i] : offsets[i + 1]], grid[None])
            torch.testing.assert_close(packed[i : i + 1], alone, rtol=0, atol=SAME_MATH_ATOL)


def test_caption_embedding_does_not_depend_on_the_batch(tmp_path, tokenizer, processor):
    """Captions are padded to one fixed length: a caption gets the same embedding next to a long
    caption, a short one, or alone, and whatever the masked padding holds."""
    model = tiny_vit().eval().double()  # float64: any CPU's summation order (keye_helpers.SAME_MATH_ATOL)
    texts = ["a cat", "a very long caption about many things that goes on and on and on past the limit", "hi"]
    rows = [schema.caption_row("t", png(56, 56, i), text) for i, text in enumerate(texts)]
    folder = write_shards(tmp_path / "three", rows, row_group_rows=4)
    batch = next(pipeline(folder, tokenizer, processor, epochs=1, shuffle=False))
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    assert ids.shape == (3, MAX_TEXT_TOKENS) and batch.truncated == 1
    assert mask.sum(dim=1).tolist() == [
        len(tokenizer.encode(texts[0])) + 1,
        MAX_TEXT_TOKENS,
        len(tokenizer.encode(texts[2])) + 1,
    ]  # caption + <|endoftext|>
    with torch.no_grad():
        together = model.text_embeddings(ids, mask)
        for i in range(3):
            alone = model.text_embeddings(ids[i : i + 1], mask[i : i + 1])
            torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=SAME_MATH_ATOL)
        # masked positions other than the pooled last one may hold anything
        other = ids.clone()
        other[:, :-1] = torch.where(mask[:, :-1].bool(), ids[:, :-1], torch.full_like(ids[:, :-1], 7))
        torch.testing.assert_close(model.text_embeddings(other, mask), together, rtol=0, atol=SAME_MATH_ATOL)


# --- pipeline ---------------------------------------------------------------------------------------------


def test_pipeline_skips_rows_that_are_no_pair(tokenizer, processor, mixed_folder):
    pipe = pipeline(mixed_folder, tokenizer, processor, batch_size=4, epochs=1, shuffle=False)
    batches = list(pipe)
    expected = {reason: len(rows) for reason, rows in SKIPPED_ROWS.items()}
    assert dict(pipe.skipped) == expected
    # a batch reports the rows skipped since the previous one: all of them come before the first pair
    assert batches[0].skipped == expected and batches[1].skipped == {}
    assert [b.loss_tokens for b in batches] == [4, 2]  # 6 pairs, the last batch short
    assert all(k == "caption" for b in batches for k in b.kinds)
    assert pipe.totals["rows"] == 6 + sum(expected.values()) and pipe.totals["samples"] == 6
    last = batches[-1]
    assert last.inputs["image_grid_thw"].shape == (2, 3)
    assert last.inputs["pixel_values"].shape[0] == int(last.inputs["image_grid_thw"].prod(dim=1).sum())
    text_tokens = int(last.inputs["attention_mask"].sum())
    assert last.real_tokens == text_tokens + last.inputs["pixel_values"].shape[0]
    assert last.padding_tokens == 4 * MAX_TEXT_TOKENS - text_tokens  # pads + the two missing rows
    assert 0 < pipe.padding_fraction < 1


def test_pipeline_resumes_at_the_exact_next_batch(tokenizer, processor, captions_folder):
    first = pipeline(captions_folder, tokenizer, processor, batch_size=3)
    next(first)
    state = json.loads(json.dumps(first.state_dict()))  # JSON-able
    expected = [next(first) for _ in range(3)]  # crosses the end of the epoch (10 rows)
    resumed = pipeline(captions_folder, tokenizer, processor, batch_size=3)
    resumed.load_state_dict(state)
    for want, got in zip(expected, [next(resumed) for _ in range(3)]):
        assert got.sample_ids == want.sample_ids and got.coords == want.coords
        for key in want.inputs:
            assert torch.equal(got.inputs[key], want.inputs[key]), key
    assert resumed.totals == first.totals
    # another rank makes the same batch from its row coordinates (the balancer moving it)
    other = pipeline(captions_folder, tokenizer, processor, batch_size=3)
    rebuilt = other.rebuild([list(c) for c in expected[0].coords])
    assert rebuilt.sample_ids == expected[0].sample_ids and other.totals == {}
    assert all(torch.equal(rebuilt.inputs[k], expected[0].inputs[k]) for k in rebuilt.inputs)
    with pytest.raises(ValueError, match="saved with"):
        pipeline(captions_folder, tokenizer, processor, batch_size=2).load_state_dict(state)


# --- FLOPs --------------------------------------------------------------------------------------------------


def test_contrastive_train_flops_by_hand():
    """One pair under the tiny configs: a 4x4-patch image and a caption of 5 tokens."""
    from training.data import SampleShape
    from training.vit_pretrain import contrastive_train_flops

    batch = SimpleNamespace(shapes=[SampleShape(5, ((1, 4, 4),))])
    model = tiny_vit()
    # ViT: D=32, I=64, 2 layers, 16 patches of 3*14*14 values
    encoder = 2 * 16 * (3 * 196 * 32 + 2 * (4 * 32 * 32 + 2 * 32 * 64)) + 2 * 4 * 16**2 * 32  # 1,191,936
    pooling = 4 * 16 * 32 * 32 + 4 * 16 * 32 + 4 * 32 * 32 + 4 * 32 * 64  # k/v, scores, q/out, MLP: 79,872
    # text tower: H=32, J=64, 2 layers, 5 tokens; its head on the pooled token (32 -> 32)
    text = 2 * 5 * 2 * (4 * 32 * 32 + 2 * 32 * 64) + 2 * 32 * 32 + 2 * 4 * 5**2 * 32  # 172,288
    loss = 2 * 1 * 1 * 32
    assert contrastive_train_flops(batch, model.config) == 3 * (encoder + pooling + text + loss)  # 4,332,480


# --- training -----------------------------------------------------------------------------------------------


def test_adamw_steps_decrease_the_loss(tokenizer, processor, captions_folder):
    torch.manual_seed(0)
    model = tiny_vit()
    batch = next(pipeline(captions_folder, tokenizer, processor, batch_size=4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        out = model(**batch.inputs)
        assert int(out.num_loss_tokens) == 4
        optimizer.zero_grad()
        out.loss.backward()
        assert model.logit.scale.grad.abs().item() > 0 and model.logit.bias.grad.abs().item() > 0
        assert model.visual.vision_model.head.probe.grad.abs().sum().item() > 0
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]


def deepspeed_file(tmp_path: Path, zero: int) -> Path:
    """The project's ZeRO config; for ZeRO-3 with every parameter partitioned (persistence threshold
    0: the tiny model's tensors would all stay whole otherwise), so the test reaches the gathering
    of the pooling head's attention weights, the logit parameters and the reused position table."""
    config = json.loads((Path(__file__).resolve().parents[2] / f"configs/deepspeed/zero{zero}.json").read_text())
    if zero == 3:
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path = tmp_path / f"zero{zero}.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("zero", [1, 2, 3])
def test_deepspeed_steps_train_every_part(tmp_path, tokenizer, processor, captions_folder, zero):
    from training.engine import build_engine, make_optimizer, param_groups, train_step
    from training.tasks.contrastive import ContrastiveTask

    cfg = stage(
        f"output={tmp_path / 'out'}",
        f"data={captions_folder}",
        "export=false",
        f"deepspeed={deepspeed_file(tmp_path, zero)}",
    )
    model = tiny_vit()
    before = parts_state(model, "contrastive")
    engine = build_engine(model, cfg)
    batch = next(pipeline(captions_folder, tokenizer, processor, batch_size=cfg.batch_size))
    assert len({int(t * h * w) for t, h, w in batch.inputs["image_grid_thw"]}) > 1  # the head runs more than once
    task = ContrastiveTask()
    task.attach(engine, cfg)
    results = [train_step(engine, task, [batch], world=1) for _ in range(3)]
    assert all(r.totals == {"pairs": 4} for r in results)
    losses = [r.loss for r in results]
    assert losses[0] != losses[-1]
    # the same steps without DeepSpeed: AdamW on the engine's groups, the global-norm clip
    reference = tiny_vit()
    optimizer = make_optimizer(param_groups(reference, cfg), cfg)
    expected = []
    for _ in range(3):
        out = reference(**batch.inputs)
        optimizer.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(reference.parameters(), cfg.optimizer.grad_clip)
        optimizer.step()
        expected.append(out.loss.item())
    # Not bit-equal: DeepSpeed sums gradients in another order. AdamW moves an entry by about lr x the
    # sign of its gradient, so where that order flips the sign of a gradient that is rounding noise,
    # the entry moves the other way; but such an entry's gradient is ~0, so the loss moves by ~0
    # (second order in lr = 1e-3): 1e-4 relative holds on any CPU and still catches a wrong step.
    assert losses == pytest.approx(expected, rel=1e-4)
    if zero == 3:  # partitioned: gather full copies to compare
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
            after = parts_state(engine.module, "contrastive")
    else:
        after = parts_state(engine.module, "contrastive")
    for part in ("visual", "text", "logit"):
        assert changed(before[part], after[part]), part
