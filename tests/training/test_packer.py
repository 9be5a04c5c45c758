"""Packer: rolling first-fit-decreasing, the truncation policy, packed inputs and the packed loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from curation import schema
from training.data.packer import (
    NO_LOSS_TOKENS,
    TOO_LONG,
    Packer,
    fit_to_limit,
    packed_inputs,
    saved_keys,
    vision_cu_seqlens,
)
from training.losses import IGNORE_INDEX


def reference_ffd(lengths: dict[int, int], capacity: int) -> list[list[int]]:
    """Textbook first-fit-decreasing over all items at once: every bin, not just the first."""
    bins: list[list[int]] = []
    room: list[int] = []
    for key in sorted(lengths, key=lambda k: (-lengths[k], k)):
        for b, free in enumerate(room):
            if lengths[key] <= free:
                bins[b].append(key)
                room[b] -= lengths[key]
                break
        else:
            bins.append([key])
            room.append(capacity - lengths[key])
    return bins


def drain(packer: Packer, lengths: list[int]) -> list[list[int]]:
    """Feed keys 0..n-1 with these lengths, popping whenever the buffer is full, then flush."""
    sequences = []
    for key, length in enumerate(lengths):
        packer.add(key, length)
        while packer.full:
            sequences.append([e.key for e in packer.pop_sequence()])
    while len(packer):
        sequences.append([e.key for e in packer.pop_sequence()])
    return sequences


def test_each_sequence_is_the_first_ffd_bin_of_the_buffer():
    rng = np.random.default_rng(0)
    packer = Packer(max_tokens=1000, buffer_size=40)
    lengths = {}
    for key in range(40):
        lengths[key] = int(rng.integers(1, 700))
        packer.add(key, lengths[key])
    for _ in range(5):
        expected = reference_ffd(lengths, 1000)[0]
        got = [e.key for e in packer.pop_sequence()]
        assert sorted(got) == sorted(expected)
        assert got == sorted(got)  # handed out in arrival order
        for key in got:
            del lengths[key]


def test_stream_packs_every_sample_once_never_over_the_limit():
    rng = np.random.default_rng(1)
    # samples up to a third of a sequence (as captions and chats are to 8192 tokens), and two that
    # fill a sequence alone
    lengths = rng.integers(1, 330, size=800).tolist() + [1000, 1000]
    sequences = drain(Packer(max_tokens=1000, buffer_size=32), lengths)
    keys = [k for seq in sequences for k in seq]
    assert sorted(keys) == list(range(len(lengths)))  # nothing lost, nothing twice, none split
    assert max(sum(lengths[k] for k in seq) for seq in sequences) <= 1000
    # the greedy fill leaves little room in all but the last few (flushed) sequences
    used = [sum(lengths[k] for k in seq) for seq in sequences[:-5]]
    assert 1 - sum(used) / (1000 * len(used)) < 0.02


def test_token_lookahead_fills_before_the_sample_count():
    packer = Packer(max_tokens=100, buffer_size=1000, lookahead_tokens=250)
    for key in range(4):
        packer.add(key, 60)
    assert not packer.full and packer.buffered_tokens == 240
    packer.add(4, 10)
    assert packer.full
    assert [e.key for e in packer.pop_sequence()] == [0, 4]  # 60 + 10; a second 60 does not fit
    assert packer.buffered_tokens == 180 and not packer.full


def test_a_sample_that_never_fits_a_gap_opens_a_sequence_after_max_wait():
    # every 70 opens a sequence and leaves 30 free: the 40 never fits next to one
    packer = Packer(max_tokens=100, buffer_size=3, max_wait=4)
    packer.add("small", 40)
    emitted = []
    for i in range(8):
        packer.add(f"big{i}", 70)
        while packer.full:
            emitted.append([e.key for e in packer.pop_sequence()])
    assert emitted[4] == ["small"]  # it waited exactly max_wait sequences
    assert all("small" not in seq for seq in emitted[:4])


def test_add_refuses_a_sample_over_the_limit():
    with pytest.raises(ValueError, match="fit_to_limit"):
        Packer(max_tokens=100).add("k", 101)


def test_packer_state_restores_the_same_next_sequences():
    rng = np.random.default_rng(2)
    lengths = rng.integers(1, 300, size=200).tolist()
    first = Packer(max_tokens=512, buffer_size=24)
    for key in range(100):
        first.add(("row", key), lengths[key])
        if first.full:
            first.pop_sequence()
    state = json.loads(json.dumps(first.state_dict()))
    assert len(state["buffer"]) > 0

    second = Packer(max_tokens=512, buffer_size=24)
    keys = saved_keys(state)
    second.load_state_dict(state, [(lengths[k[1]], f"payload {k[1]}") for k in keys])
    for packer in (first, second):
        for key in range(100, 200):
            packer.add(("row", key), lengths[key], f"payload {key}")
    a = drain_all(first)
    b = drain_all(second)
    assert [[e.key for e in s] for s in a] == [[e.key for e in s] for s in b]
    assert [[e.payload for e in s] for s in b][-1] == [f"payload {k[1]}" for k in (e.key for e in b[-1])]

    changed = [(lengths[k[1]] + 1, None) for k in keys]
    with pytest.raises(ValueError, match="changed since the checkpoint"):
        Packer(max_tokens=512, buffer_size=24).load_state_dict(state, changed)
    with pytest.raises(ValueError, match="saved with"):
        Packer(max_tokens=1024, buffer_size=24).load_state_dict(state, changed)


def drain_all(packer: Packer):
    out = []
    while len(packer):
        out.append(packer.pop_sequence())
    return out


# --- truncation policy (real processor) ---------------------------------------------------------


def long_text_row(kind: str = "text", words: int = 200) -> dict:
    m = schema.message
    return schema.make_row("t", kind, [m("user", "Tell a story."), m("assistant", " ".join(["word"] * words))])


def test_text_sample_over_the_limit_is_cut_to_a_consistent_prefix(processor):
    sample = processor(long_text_row())
    assert len(sample.input_ids) > 64
    fit = fit_to_limit(sample, "text", 64)
    assert fit.truncated and fit.skip_reason is None
    cut = fit.sample
    assert len(cut.input_ids) == 64
    assert torch.equal(cut.input_ids, sample.input_ids[:64])
    assert torch.equal(cut.labels, sample.labels[:64])
    assert torch.equal(cut.position_ids, torch.arange(64).expand(3, 64))  # text-only: 0..L-1 on all axes


def test_fitting_sample_is_kept_as_it_is(processor, mixed_rows):
    sample = processor(mixed_rows[1])
    fit = fit_to_limit(sample, "vqa", len(sample.input_ids))
    assert fit.sample is sample and not fit.truncated


def test_vision_or_untruncatable_kind_over_the_limit_is_skipped(processor, mixed_rows):
    image_sample = processor(mixed_rows[1])  # an image and a short answer
    assert fit_to_limit(image_sample, "vqa", len(image_sample.input_ids) - 1).skip_reason == TOO_LONG
    # even if its kind is declared truncatable, a sample with vision tokens is not cut
    assert fit_to_limit(image_sample, "text", 10, truncate_kinds=("text", "vqa")).skip_reason == TOO_LONG
    preference = processor(long_text_row("preference"))
    assert fit_to_limit(preference, "preference", 64).skip_reason == TOO_LONG


def test_truncation_that_leaves_no_loss_token_skips_the_sample(processor):
    m = schema.message
    row = schema.make_row("t", "text", [m("user", "long question " * 50), m("assistant", "ok")])
    sample = processor(row)
    fit = fit_to_limit(sample, "text", 40)  # the cut falls inside the user turn
    assert fit.sample is None and fit.skip_reason == NO_LOSS_TOKENS


# --- packed inputs ------------------------------------------------------------------------------


def test_packed_inputs_concatenate_samples_and_mask_their_first_tokens(processor, mixed_rows):
    samples = [processor(row) for row in mixed_rows]  # text, image, two images, video, caption
    inputs = packed_inputs(samples)
    lengths = [len(s.input_ids) for s in samples]
    assert inputs["cu_seqlens"].tolist() == [0, *np.cumsum(lengths).tolist()]
    assert inputs["cu_seqlens"].dtype == torch.int32
    assert torch.equal(inputs["input_ids"][0], torch.cat([s.input_ids for s in samples]))
    assert torch.equal(inputs["position_ids"][:, 0], torch.cat([s.position_ids for s in samples], dim=1))
    expected_labels = []
    for s in samples:
        labels = s.labels.clone()
        labels[0] = IGNORE_INDEX
        expected_labels.append(labels)
    assert torch.equal(inputs["labels"][0], torch.cat(expected_labels))
    assert inputs["pixel_values"].shape[0] == sum(int(s.image_grid_thw.prod(dim=1).sum()) for s in samples)

    # ViT segments: each image, then each whole video, in sample order
    sizes = [t * h * w for s in samples for t, h, w in s.image_grid_thw.tolist()]
    sizes += [t * h * w for s in samples for t, h, w in s.video_grid_thw.tolist()]
    offsets = vision_cu_seqlens(inputs["image_grid_thw"], inputs["video_grid_thw"])
    assert offsets.tolist() == [0, *np.cumsum(sizes).tolist()]
    assert offsets[-1] == inputs["pixel_values"].shape[0] + inputs["pixel_values_videos"].shape[0]


def test_packed_loss_is_the_token_weighted_mean_of_per_sample_losses(tiny_model, processor, mixed_rows):
    samples = [processor(row) for row in mixed_rows]
    packer = Packer(max_tokens=sum(len(s.input_ids) for s in samples), buffer_size=len(samples))
    for i, s in enumerate(samples):
        packer.add(i, len(s.input_ids), s)
    entries = packer.pop_sequence()
    assert len(entries) == len(samples) and not len(packer)
    inputs = packed_inputs([e.payload for e in entries])
    with torch.no_grad():
        packed = tiny_model(**inputs, return_logits=False)
        total, count = 0.0, 0
        for s in samples:
            alone = tiny_model(**s.model_inputs())
            total += alone.loss.double().item() * int(alone.num_loss_tokens)
            count += int(alone.num_loss_tokens)
    assert int(packed.num_loss_tokens) == count == int((inputs["labels"] != IGNORE_INDEX).sum())
    assert abs(packed.loss.item() - total / count) < 1e-5
