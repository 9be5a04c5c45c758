"""Checkpoints: safetensors round trip, strict loading, and building Keye from SigLIP + Qwen3 parts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from training.model import KeyeForConditionalGeneration
from training.model.weights import build_from_parts


def test_save_load_round_trip_is_exact(tiny_model, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    loaded = KeyeForConditionalGeneration.from_pretrained(tmp_path)
    ours, theirs = tiny_model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    ids = torch.tensor([[151644, 872, 198, 9707, 151645]])
    with torch.no_grad():
        assert torch.equal(tiny_model(ids).logits, loaded.eval()(ids).logits)


def test_auto_classes_and_bfloat16_loading(tiny_model, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    tiny_model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "KeyeConfig"
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert isinstance(model, KeyeForConditionalGeneration)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    # an image through the bf16 model (RoPE tables are computed in fp32 and cast)
    ids = torch.tensor([[151644, 151652] + [151655] * 6 + [151653, 151645]])
    pixels = torch.randn(24, 588, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model.eval()(ids, pixel_values=pixels, image_grid_thw=torch.tensor([[1, 4, 6]])).logits
        ref = tiny_model(ids, pixel_values=pixels, image_grid_thw=torch.tensor([[1, 4, 6]])).logits
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()  # bf16 rounding, not a bug


def test_sharded_checkpoints_load(tiny_model, tmp_path):
    """The released 8B comes in shards with an index; ours save and load the same way."""
    tiny_model.save_pretrained(tmp_path, max_shard_size="20MB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    loaded = KeyeForConditionalGeneration.from_pretrained(tmp_path)
    theirs = loaded.state_dict()
    assert all(torch.equal(t, theirs[k]) for k, t in tiny_model.state_dict().items())


def test_missing_or_partial_weights_are_errors(tiny_model, tmp_path):
    empty = tmp_path / "config_only"
    tiny_model.config.save_pretrained(empty)
    with pytest.raises((OSError, FileNotFoundError, ValueError)):
        KeyeForConditionalGeneration.from_pretrained(empty)
    partial = tmp_path / "partial"
    tiny_model.save_pretrained(partial)
    tensors = load_file(partial / "model.safetensors")
    del tensors["mlp_AR.linear_1.weight"]
    tensors["visual.extra.weight"] = torch.zeros(1)
    save_file(tensors, partial / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="mlp_AR.linear_1.weight"):
        KeyeForConditionalGeneration.from_pretrained(partial)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Tiny random SigLIP (so400m layout, with its pooling head) and Qwen3 models saved by transformers."""
    from transformers import Qwen3Config, Qwen3ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    siglip = SiglipVisionModel(
        SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=56, patch_size=14)
    )
    siglip.save_pretrained(root / "siglip")
    qwen = Qwen3ForCausalLM(
        Qwen3Config(vocab_size=151936, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    )
    qwen.save_pretrained(root / "qwen3")
    return root / "siglip", root / "qwen3", siglip.eval(), qwen.eval()


def test_build_from_parts_copies_every_tensor(parts):
    siglip_dir, qwen_dir, siglip, qwen = parts
    model, report = build_from_parts(siglip_dir, qwen_dir)
    state = model.state_dict()
    vision = siglip.state_dict()
    text = qwen.state_dict()
    for name, tensor in vision.items():  # transformers 5 names them without `vision_model.`
        assert torch.equal(state["visual.vision_model." + name.removeprefix("vision_model.")], tensor), name
    for name, tensor in text.items():
        if name == "lm_head.weight":
            continue
        assert torch.equal(state[name], tensor), name
    # a tied Qwen3 gets its embedding as Keye's own lm_head
    assert torch.equal(state["lm_head.weight"], text["model.embed_tokens.weight"])
    assert state["lm_head.weight"].data_ptr() != state["model.embed_tokens.weight"].data_ptr()
    assert sorted(report["initialised"]) == sorted(
        [k for k in state if k.startswith("mlp_AR.")]
        + ["visual.vision_model.embeddings.packing_position_embedding.weight"]
    )
    assert len(report["copied"]) + len(report["initialised"]) == len(state)
    assert model.config.mrope_section == [2, 3, 3] and model.config.vision_config.hidden_size == 32


def test_from_parts_text_path_equals_qwen3(parts):
    """With text only, t = h = w, so M-RoPE is 1D RoPE: Keye's logits are Qwen3's."""
    siglip_dir, qwen_dir, _, qwen = parts
    model, _ = build_from_parts(siglip_dir, qwen_dir)
    ids = torch.tensor([[151644, 872, 198, 9707, 11, 1879, 0, 151645]])
    with torch.no_grad():
        ours = model.eval()(ids).logits
        theirs = qwen(ids).logits
    assert (ours - theirs).abs().max() <= 1e-5


def test_from_parts_vision_without_rope_matches_siglip_embeddings(parts):
    """On the native 4x4 grid the resized position table is the table itself: Keye's patch
    embeddings equal SigLIP's embeddings of the same image."""
    siglip_dir, qwen_dir, siglip, _ = parts
    model, _ = build_from_parts(siglip_dir, qwen_dir)
    torch.manual_seed(3)
    image = torch.randn(1, 3, 56, 56)
    patches = image.view(3, 4, 14, 4, 14).permute(1, 3, 0, 2, 4).reshape(16, 588)  # row-major patches
    with torch.no_grad():
        ours = model.visual.vision_model.embeddings(patches, [(1, 4, 4)])
        theirs = siglip.embeddings(image)[0]
    assert (ours - theirs).abs().max() <= 1e-5


def test_from_parts_reads_the_hub_siglip_layout(parts, tmp_path):
    """The hub's so400m-patch14-384 is a full SiglipModel: `vision_model.*` plus a text tower and
    logit scale/bias, which Keye does not take."""
    import shutil

    siglip_dir, qwen_dir, siglip, _ = parts
    hub = tmp_path / "siglip_hub"
    hub.mkdir()
    shutil.copy(siglip_dir / "config.json", hub / "config.json")
    tensors = {"vision_model." + k: v.contiguous() for k, v in siglip.state_dict().items()}
    tensors["text_model.embeddings.token_embedding.weight"] = torch.zeros(8, 4)
    tensors["logit_scale"] = torch.zeros(1)
    save_file(tensors, hub / "model.safetensors", metadata={"format": "pt"})
    model, report = build_from_parts(hub, qwen_dir)
    state = model.state_dict()
    for name, tensor in siglip.state_dict().items():
        assert torch.equal(state["visual.vision_model." + name], tensor), name
    assert not any("text_model" in n or "logit" in n for n in report["copied"])


def test_from_parts_vit_is_siglip_plus_2d_rope(parts, monkeypatch):
    """With the 2D RoPE switched off (angle 0: cos 1, sin 0) on SigLIP's native 4x4 grid, Keye's
    ViT computes exactly SigLIP's encoder: same blocks, norms, attention and MLP wiring."""
    siglip_dir, qwen_dir, siglip, _ = parts
    model, _ = build_from_parts(siglip_dir, qwen_dir)
    rotary = model.visual.vision_model.rotary
    torch.manual_seed(4)
    image = torch.randn(1, 3, 56, 56)
    patches = image.view(3, 4, 14, 4, 14).permute(1, 3, 0, 2, 4).reshape(16, 588)
    with torch.no_grad():
        with_rope = model.visual(patches, [(1, 4, 4)])
        monkeypatch.setattr(
            rotary, "forward", lambda grid, dtype, device="cpu": (torch.ones(16, 16), torch.zeros(16, 16))
        )
        without_rope = model.visual(patches, [(1, 4, 4)])
        theirs = siglip(pixel_values=image).last_hidden_state[0]
    assert (without_rope - theirs).abs().max() <= 1e-5
    assert (with_rope - theirs).abs().max() > 1e-3  # and RoPE really changes the result
