"""3D position ids (hand-computed), rope deltas, M-RoPE and 2D vision RoPE tables."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from training.model.rope import MultimodalRotaryEmbedding, VisionRotaryEmbedding, get_rope_index

IMG, VID, VS, VE = 151655, 151656, 151652, 151653
T = 7  # any text token


def _index(ids, images=None, videos=None, seconds=None, **kw):
    return get_rope_index(
        torch.tensor([ids]), images, videos, seconds, image_token_id=IMG, video_token_id=VID, **kw
    )


def test_position_ids_hand_built_example():
    # text(3) | <vs> image 2x3 merged (grid 1x4x6 patches) <ve> | text(2) | <vs> video: 4 frames at
    # 0, 0.75, 1.5, 2.25 s, 1x2 merged per frame (grid 4x2x4) <ve> | text(2)
    ids = [T, T, VS] + [IMG] * 6 + [VE, T, T, VS] + [VID] * 8 + [VE, T, T]
    pos, delta = _index(ids, [[1, 4, 6]], [[4, 2, 4]], [0.75])
    # By hand: text 0,1,2 ; image starts at 3: t=3, h=3+row (rows 0..1), w=3+col (cols 0..2);
    # <ve> at max(3..5)+1 = 6, text 7, 8, <vs> 9 ; video starts at 10:
    # frame k -> t = 10 + int(k * 0.75 * 2) = 10 + [0, 1, 3, 4]; h = 10 (one row); w = 10 + [0, 1]
    # <ve> at max(14, 10, 11)+1 = 15 ; text 16, 17.
    t = [0, 1, 2] + [3] * 6 + [6, 7, 8, 9] + [10, 10, 11, 11, 13, 13, 14, 14] + [15, 16, 17]
    h = [0, 1, 2] + [3, 3, 3, 4, 4, 4] + [6, 7, 8, 9] + [10] * 8 + [15, 16, 17]
    w = [0, 1, 2] + [3, 4, 5, 3, 4, 5] + [6, 7, 8, 9] + [10, 11] * 4 + [15, 16, 17]
    assert pos[:, 0].tolist() == [t, h, w]
    # delta = max id + 1 - length = 18 - 25
    assert delta.tolist() == [[18 - len(ids)]]


def test_video_time_ids_truncate_like_the_release():
    # 0.1 s per frame, 2 tokens/s: k * 0.2 -> 0,0,0,0,0,1 (float32 product then .long())
    ids = [VS] + [VID] * 6 + [VE]
    pos, _ = _index(ids, None, [[6, 2, 2]], [0.1])
    assert pos[0, 0, 1:7].tolist() == [1 + int(v) for v in (torch.arange(6) * 0.1 * 2).tolist()]
    assert pos[0, 0, 1:7].tolist() == [1, 1, 1, 1, 1, 2]


def test_text_only_is_plain_arange_and_delta_zero():
    pos, delta = _index([T] * 5)
    assert pos[:, 0].tolist() == [list(range(5))] * 3
    assert delta.tolist() == [[0]]


def test_packed_rows_restart_per_sample_and_padding_gets_one():
    a = [T, VS] + [IMG] * 4 + [VE, T]
    b = [T, T, T]
    packed, deltas = get_rope_index(
        torch.tensor([a + b]), [[1, 4, 4]], None, None, image_token_id=IMG, video_token_id=VID,
        cu_seqlens=[0, len(a), len(a) + len(b)],
    )
    alone_a, da = _index(a, [[1, 4, 4]])
    alone_b, db = _index(b)
    assert torch.equal(packed[:, 0], torch.cat([alone_a[:, 0], alone_b[:, 0]], dim=1))
    assert deltas.tolist() == [da[0].tolist(), db[0].tolist()]
    # left padding: pad positions get 1 (the released convention), real tokens 0..2
    padded, pdelta = get_rope_index(
        torch.tensor([[0, 0] + b]),
        attention_mask=torch.tensor([[0, 0, 1, 1, 1]]),
        image_token_id=IMG,
        video_token_id=VID,
    )
    assert padded[0, 0].tolist() == [1, 1, 0, 1, 2]
    assert pdelta.tolist() == [[3 - 5]]


def test_mismatched_grids_are_clear_errors():
    import pytest

    with pytest.raises(ValueError, match="pad tokens"):
        _index([VS, IMG, IMG, VE], [[1, 4, 4]])
    with pytest.raises(ValueError, match="more image grids"):
        _index([T, T], [[1, 2, 2]])


def test_mrope_matches_qwen2_vl_sectioned_rotary():
    """Our M-RoPE (per-frequency axis pick) equals transformers' Qwen2-VL recomposition."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

    cfg = SimpleNamespace(
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        head_dim=128, hidden_size=4096, num_attention_heads=32,
    )
    theirs = Qwen2VLRotaryEmbedding(cfg)
    ours = MultimodalRotaryEmbedding(128, 1e6, [16, 24, 24])
    torch.manual_seed(0)
    position_ids = torch.randint(0, 3000, (3, 2, 17))
    x = torch.zeros(1, dtype=torch.float32)
    cos_ref, sin_ref = theirs(x, position_ids)
    cos, sin = ours(position_ids, torch.float32)
    assert torch.equal(cos, cos_ref) and torch.equal(sin, sin_ref)
    # and when t == h == w it is plain 1D RoPE
    flat = torch.arange(10).view(1, 1, -1).expand(3, 1, -1)
    cos1, _ = ours(flat, torch.float32)
    inv = 1.0 / (1e6 ** (torch.arange(0, 128, 2).float() / 128))
    angles = torch.arange(10).float()[:, None] * inv
    assert torch.allclose(cos1[0], torch.cat([angles, angles], -1).cos())


def test_vision_rope_rows_and_columns():
    rope = VisionRotaryEmbedding(head_dim=16, theta=10000.0)  # 4 frequencies per axis
    cos, sin = rope([(2, 2, 3)], torch.float32)  # 2 frames of 2x3 patches
    assert cos.shape == (12, 16)
    inv = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    # patch 5 of frame 0 is row 1, col 2; frame 1 repeats the same ids (patch 11)
    expected = torch.cat([1 * inv, 2 * inv, 1 * inv, 2 * inv])
    assert torch.allclose(cos[5], expected.cos()) and torch.allclose(sin[5], expected.sin())
    assert torch.equal(cos[11], cos[5])
