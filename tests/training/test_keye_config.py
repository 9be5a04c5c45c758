"""Config fidelity to the released Keye-VL-8B-Preview, and the resize / token-count rules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from keye_helpers import REPO, reference_file

from curation import schema
from training.model import KeyeConfig, KeyeForConditionalGeneration, load_model_config

RELEASED_PARAMETERS = 8_696_828_736


def test_released_config_on_meta_has_released_names_shapes_and_count():
    config = KeyeConfig.from_dict(json.loads(reference_file("config.json").read_text()))
    reference = json.loads(reference_file("state_dict_shapes.json").read_text())
    with torch.device("meta"):
        model = KeyeForConditionalGeneration(config)
    ours = [(name, list(t.shape)) for name, t in model.state_dict().items()]
    theirs = list(reference["state_dict"].items())
    assert len(ours) == len(theirs) == 854
    assert dict(ours) == dict(theirs)
    assert ours == theirs  # same order as the released state dict, too
    assert sum(p.numel() for p in model.parameters()) == reference["total_parameters"] == RELEASED_PARAMETERS


def test_shipped_8b_yaml_is_the_released_architecture():
    released = KeyeConfig.from_dict(json.loads(reference_file("config.json").read_text()))
    ours = load_model_config(REPO / "configs" / "models" / "keye_8b.yaml")
    keys = [
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "rope_theta", "rope_scaling",
        "image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "tie_word_embeddings",
    ]
    assert {k: getattr(ours, k) for k in keys} == {k: getattr(released, k) for k in keys}
    vkeys = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
             "patch_size", "spatial_merge_size", "tokens_per_second"]
    assert {k: getattr(ours.vision_config, k) for k in vkeys} == {k: getattr(released.vision_config, k) for k in vkeys}
    assert ours.rope_scaling == {"type": "mrope", "mrope_section": [16, 24, 24]}


def test_config_save_load_keeps_released_field_names(tmp_path):
    config = load_model_config(REPO / "configs" / "models" / "tiny.yaml")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["rope_scaling"] == {"type": "mrope", "mrope_section": [2, 3, 3]}
    assert "rope_parameters" not in saved and "auto_map" not in saved
    assert saved["vision_config"]["patch_size"] == 14 and saved["image_token_id"] == 151655
    again = KeyeConfig.from_pretrained(tmp_path)
    assert again.to_dict() == config.to_dict()


def test_released_config_json_loads_and_typos_are_refused(tmp_path):
    released = load_model_config(reference_file("config.json"))
    assert released.num_hidden_layers == 36 and released.vision_config.num_hidden_layers == 27
    typo = tmp_path / "typo.yaml"
    typo.write_text("num_hiden_layers: 2\nvision_config: {hiden_size: 8}\n")
    with pytest.raises(ValueError, match="num_hiden_layers.*vision_config.hiden_size"):
        load_model_config(typo)


def test_bad_mrope_section_is_a_clear_error():
    with pytest.raises(ValueError, match="mrope_section"):
        KeyeConfig(head_dim=16, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                   rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]})


# Released rule (Qwen2-VL / keye_vl_utils smart_resize), hand-computed:
# (h, w, min_pixels, max_pixels) -> (H, W)
SMART_RESIZE_TABLE = [
    ((480, 640, 3136, 1003520), (476, 644)),  # round to 28: 17x23 = 391 tokens, under 1280
    ((1080, 1920, 3136, 1003520), (728, 1316)),  # beta = sqrt(1080*1920/1003520) = 1.4374 -> floor
    ((28, 28, 3136, 1003520), (56, 56)),  # below 4 tokens: scaled up by sqrt(3136/784) = 2 -> ceil
    ((100, 3000, 3136, 16384 * 784), (112, 2996)),  # round(100/28) = 4 -> 112, round(107.1) = 107 -> 2996
    ((4000, 3000, 3136, 16384 * 784), (4004, 2996)),  # 143 x 107 = 15301 tokens <= 16384: kept
    ((8000, 6000, 3136, 16384 * 784), (4116, 3080)),  # beta = sqrt(48e6/12845056) -> floor to 147 x 110
    ((56, 11000, 3136, 1003520), (56, 11004)),  # ratio 196.4 (< 200 allowed): 2 x 393 tokens
]


def _hand_rule(h, w, lo, hi, f=28):
    hb, wb = max(f, round(h / f) * f), max(f, round(w / f) * f)
    if hb * wb > hi:
        beta = math.sqrt(h * w / hi)
        return max(f, math.floor(h / beta / f) * f), max(f, math.floor(w / beta / f) * f)
    if hb * wb < lo:
        beta = math.sqrt(lo / (h * w))
        return math.ceil(h * beta / f) * f, math.ceil(w * beta / f) * f
    return hb, wb


@pytest.mark.parametrize("args,expected", SMART_RESIZE_TABLE)
def test_smart_resize_table(args, expected):
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as qwen2_vl_smart_resize

    h, w, lo, hi = args
    got = schema.smart_resize(h, w, min_pixels=lo, max_pixels=hi)
    assert got == qwen2_vl_smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)  # transformers' copy
    assert got == _hand_rule(h, w, lo, hi)
    assert got == expected
    assert got[0] % 28 == 0 and got[1] % 28 == 0 and lo <= got[0] * got[1] <= hi


def test_token_counts_follow_the_budgets():
    assert schema.image_tokens(480, 640) == 17 * 23
    assert schema.image_tokens(8000, 6000) == (4116 // 28) * (3080 // 28) <= 16384
    assert schema.image_tokens(8000, 6000, max_tokens=1280) <= 1280  # the released preprocessor's cap
    assert schema.image_tokens(28, 28) == 4
    # video: 480x640 frames; frames x per-frame tokens, per frame in [128, 768], total <= 24576
    assert schema.video_tokens(480, 640, 4) == 4 * 391
    assert schema.video_tokens(480, 640, 5) == 4 * 391  # an even count
    assert schema.video_tokens(480, 640, 2) == 4 * 391  # at least 4 frames
    # 24576 // 64 = 384 per frame: 17 x 23 = 391 is over, so beta = sqrt(480*640 / (384*784)) = 1.0102
    # and floor(480 / 1.0102 / 28) = 16, floor(640 / 1.0102 / 28) = 22: 352 tokens per frame
    assert schema.video_tokens(480, 640, 64) == 64 * 352
    assert schema.video_tokens(480, 640, 768) <= 24576  # 192 frames at most: 192 x 128 = 24576
    for n in (4, 10, 50, 100, 192, 500, 768):
        for h, w in ((480, 640), (1080, 1920), (37, 1200), (720, 720)):
            assert schema.video_tokens(h, w, n) <= 24576


def test_extreme_aspect_ratio_is_a_clear_error():
    with pytest.raises(schema.AspectRatioError, match="exceeds 200"):
        schema.smart_resize(10, 2100)
