"""The tiny Keye model: exact packing, ViT attention segments, training step, generation."""

from __future__ import annotations

import torch
from keye_helpers import SAME_MATH_ATOL

from training.processor import collate_packed


def test_packed_logits_equal_each_sample_alone(tiny_model64, processor, mixed_rows):
    samples = [processor(row) for row in mixed_rows]
    kinds = [(len(s.image_grid_thw), len(s.video_grid_thw)) for s in samples]
    assert kinds[:4] == [(0, 0), (1, 0), (2, 0), (0, 1)]  # text, one image, two images, a video
    assert samples[2].image_grid_thw[0].tolist() != samples[2].image_grid_thw[1].tolist()
    with torch.no_grad():
        packed = tiny_model64(**collate_packed(samples))
        start = 0
        total_loss = 0.0
        total_tokens = 0
        for sample in samples:
            alone = tiny_model64(**sample.model_inputs())
            end = start + len(sample.input_ids)
            diff = (packed.logits[0, start:end] - alone.logits[0]).abs().max().item()
            assert diff <= SAME_MATH_ATOL, f"sample {samples.index(sample)} differs by {diff}"
            total_loss += alone.loss.item() * alone.num_loss_tokens.item()
            total_tokens += alone.num_loss_tokens.item()
            start = end
    # the label shift never crosses a sample: the packed loss is the token-weighted mean of the parts
    assert packed.num_loss_tokens.item() == total_tokens
    assert abs(packed.loss.item() - total_loss / total_tokens) < SAME_MATH_ATOL


def test_positions_derived_by_the_model_equal_the_processors(tiny_model, processor, mixed_rows):
    samples = [processor(row) for row in mixed_rows]
    batch = collate_packed(samples)
    given = batch.pop("position_ids")
    with torch.no_grad():
        with_given = tiny_model(**batch, position_ids=given).logits
        derived = tiny_model(**batch).logits
    assert torch.equal(with_given, derived)


def test_vit_segments_images_apart_and_video_frames_together(tiny_model64):
    torch.manual_seed(1)
    visual = tiny_model64.visual
    grids = [(1, 4, 6), (3, 2, 4), (1, 2, 2)]  # an image, a 3-frame video, another image
    sizes = [24, 24, 4]
    pixels = torch.randn(sum(sizes), 588)
    with torch.no_grad():
        base = visual(pixels, grids)
        # change frame 0 of the video only
        changed = pixels.clone()
        changed[24:32] += 1.0
        out = visual(changed, grids)
    image_a, video, image_b = base.split(sizes)
    image_a2, video2, image_b2 = out.split(sizes)
    assert torch.equal(image_a, image_a2) and torch.equal(image_b, image_b2)  # other items untouched
    assert not torch.allclose(video[16:], video2[16:])  # frame 2 sees frame 0: one segment per video
    # and a packed ViT pass equals one pass per item
    with torch.no_grad():
        singles = [visual(p, [g]) for p, g in zip(pixels.split(sizes), grids)]
    assert (torch.cat(singles) - base).abs().max() <= SAME_MATH_ATOL


def test_padded_batch_equals_each_sample_alone(tiny_model64, processor, mixed_rows):
    a, b = processor(mixed_rows[0]), processor(mixed_rows[1])
    length = max(len(a.input_ids), len(b.input_ids))
    pad = processor.endoftext_id
    ids = torch.full((2, length), pad)
    mask = torch.zeros(2, length, dtype=torch.long)
    ids[0, : len(a.input_ids)] = a.input_ids  # right padding
    mask[0, : len(a.input_ids)] = 1
    ids[1, : len(b.input_ids)] = b.input_ids
    mask[1, : len(b.input_ids)] = 1
    with torch.no_grad():
        batch = tiny_model64(ids, attention_mask=mask, pixel_values=b.pixel_values, image_grid_thw=b.image_grid_thw)
        alone_a = tiny_model64(**a.model_inputs()).logits[0]
        alone_b = tiny_model64(**b.model_inputs()).logits[0]
    assert (batch.logits[0, : len(a.input_ids)] - alone_a).abs().max() <= SAME_MATH_ATOL
    assert (batch.logits[1, : len(b.input_ids)] - alone_b).abs().max() <= SAME_MATH_ATOL


def test_training_step_with_gradient_checkpointing(tiny_config, processor, mixed_rows):
    from training.model import KeyeForConditionalGeneration

    batch = collate_packed([processor(row) for row in mixed_rows[:4]])  # text, image, 2 images, video
    torch.manual_seed(0)
    plain = KeyeForConditionalGeneration(tiny_config).train().double()  # float64: see SAME_MATH_ATOL
    torch.manual_seed(0)
    checkpointed = KeyeForConditionalGeneration(tiny_config).train().double()
    checkpointed.activation_checkpointing_enable({"use_reentrant": False})
    assert checkpointed.is_activation_checkpointing
    assert all(layer.gradient_checkpointing for layer in checkpointed.model.layers)
    assert all(block.gradient_checkpointing for block in checkpointed.visual.vision_model.encoder.layers)
    full = plain(**batch)
    full.loss.backward()
    # labelled positions only through lm_head (the training path): the very same loss
    sparse = checkpointed(**batch, return_logits=False)
    assert sparse.logits is None and sparse.num_loss_tokens == full.num_loss_tokens
    assert torch.allclose(sparse.loss, full.loss, rtol=0, atol=SAME_MATH_ATOL)
    sparse.loss.backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        unused = ("visual.vision_model.head", "visual.vision_model.embeddings.packing")  # kept, never run
        assert p.requires_grad != name.startswith(unused), name  # the unused ones are frozen
        assert (p.grad is not None) == p.requires_grad, name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=SAME_MATH_ATOL, msg=name)
    # the projector and the ViT learn through the scattered embeddings
    assert plain.mlp_AR.linear_1.weight.grad.abs().sum() > 0
    assert plain.visual.vision_model.encoder.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0

    optimizer = torch.optim.AdamW(checkpointed.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = checkpointed(**batch, return_logits=False).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0, losses


def _prompt(processor, row):
    prompt = dict(row)
    prompt["messages"] = [m for m in row["messages"] if m["role"] != "assistant"]
    return processor(prompt, add_generation_prompt=True).model_inputs()


def test_generate_with_image_and_video_cache_matches_recompute(tiny_model64, processor, mixed_rows):
    for row in (mixed_rows[2], mixed_rows[3]):  # two images / a video
        inputs = _prompt(processor, row)
        keys = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
        vision = {k: inputs[k] for k in keys}
        cached = tiny_model64.generate(inputs["input_ids"], max_new_tokens=6, eos_token_id=[], **vision)
        recomputed = tiny_model64.generate(
            inputs["input_ids"], max_new_tokens=6, eos_token_id=[], use_cache=False, **vision
        )
        assert cached.shape == (1, inputs["input_ids"].shape[1] + 6)
        assert torch.equal(cached, recomputed)
        assert torch.equal(cached[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_sampled_generate_is_seeded_and_cache_consistent(tiny_model64, processor, mixed_rows):
    inputs = _prompt(processor, mixed_rows[1])
    vision = {"pixel_values": inputs["pixel_values"], "image_grid_thw": inputs["image_grid_thw"]}
    kw = dict(max_new_tokens=8, do_sample=True, temperature=1.5, top_k=50, top_p=0.95, eos_token_id=[])
    runs = [
        tiny_model64.generate(inputs["input_ids"], generator=torch.Generator().manual_seed(7), **kw, **vision),
        tiny_model64.generate(inputs["input_ids"], generator=torch.Generator().manual_seed(7), **kw, **vision),
        tiny_model64.generate(
            inputs["input_ids"], generator=torch.Generator().manual_seed(7), use_cache=False, **kw, **vision
        ),
    ]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    greedy = tiny_model64.generate(inputs["input_ids"], max_new_tokens=8, eos_token_id=[], **vision)
    assert not torch.equal(runs[0], greedy)  # temperature 1.5 on a random model: sampling differs


def test_generate_stops_at_eos(tiny_model, processor, mixed_rows):
    inputs = _prompt(processor, mixed_rows[0])
    first = tiny_model.generate(inputs["input_ids"], max_new_tokens=1, eos_token_id=[])[0, -1].item()
    out = tiny_model.generate(inputs["input_ids"], max_new_tokens=5, eos_token_id=first)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 1 and out[0, -1].item() == first


def test_left_padded_generation_matches_single(tiny_model64, processor, mixed_rows):
    a = _prompt(processor, mixed_rows[0])["input_ids"][0]
    b = a[:-5]  # a shorter prompt, left-padded in the batch
    length = max(len(a), len(b))
    ids = torch.zeros(2, length, dtype=torch.long)
    mask = torch.zeros(2, length, dtype=torch.long)
    for row, seq in enumerate((a, b)):
        ids[row, length - len(seq):] = seq
        mask[row, length - len(seq):] = 1
    both = tiny_model64.generate(ids, attention_mask=mask, max_new_tokens=4, eos_token_id=[])
    for row, seq in enumerate((a, b)):
        single = tiny_model64.generate(seq.view(1, -1), max_new_tokens=4, eos_token_id=[])
        assert torch.equal(both[row, length:], single[0, len(seq):])


def test_flash_varlen_call_contract(tiny_model64, processor, mixed_rows, monkeypatch):
    """Where flash-attn is installed (CUDA, half precision) the packed path calls
    flash_attn_varlen_func. Here a stand-in with flash-attn's signature (written from its documented
    semantics, with per-segment math of its own) checks the arguments we pass and must reproduce
    the SDPA result: causal in the LLM, bidirectional in the ViT, int32 offsets, max lengths."""
    from training.model import attention

    calls = []

    def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False):
        assert cu_q.dtype == torch.int32 and torch.equal(cu_q, cu_k) and max_q == max_k
        assert q.shape[0] == k.shape[0] == int(cu_q[-1]) and q.shape[1] % k.shape[1] == 0
        assert max_q == int((cu_q[1:] - cu_q[:-1]).max())
        calls.append(causal)
        out = torch.empty_like(q)
        groups = q.shape[1] // k.shape[1]
        for s, e in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            qs, ks, vs = q[s:e], k[s:e].repeat_interleave(groups, 1), v[s:e].repeat_interleave(groups, 1)
            scores = torch.einsum("qhd,khd->hqk", qs, ks) * softmax_scale
            if causal:
                scores = scores.masked_fill(torch.ones(e - s, e - s, dtype=torch.bool).triu(1), float("-inf"))
            out[s:e] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), vs)
        return out

    batch = collate_packed([processor(row) for row in mixed_rows[:4]])
    with torch.no_grad():
        reference = tiny_model64(**batch).logits
        monkeypatch.setattr(attention, "flash_attn_varlen_func", fake_varlen)
        monkeypatch.setattr(attention, "flash_available", lambda tensor: True)
        flashed = tiny_model64(**batch).logits
    layers = tiny_model64.config.num_hidden_layers
    vit_layers = tiny_model64.config.vision_config.num_hidden_layers
    assert calls == [False] * vit_layers + [True] * layers
    assert (flashed - reference).abs().max() <= SAME_MATH_ATOL


def test_projector_merges_2x2_blocks_in_row_major_order(tiny_model64):
    projector = tiny_model64.mlp_AR
    torch.manual_seed(2)
    t, h, w = 2, 4, 6  # two frames of 4x6 patches -> 2 x (2x3) merged tokens
    features = torch.randn(t * h * w, 32, dtype=torch.float64)
    with torch.no_grad():
        out = projector(features, [(t, h, w)])
        normed = projector.pre_norm(features).view(t, h, w, -1)
        expected = []
        for frame in range(t):
            for r in range(h // 2):
                for c in range(w // 2):
                    block = [normed[frame, 2 * r + dr, 2 * c + dc] for dr in (0, 1) for dc in (0, 1)]
                    expected.append(torch.cat(block))
        expected = projector.linear_2(torch.nn.functional.gelu(projector.linear_1(torch.stack(expected))))
    assert out.shape == (t * (h // 2) * (w // 2), tiny_model64.config.hidden_size)
    assert torch.allclose(out, expected, rtol=0, atol=SAME_MATH_ATOL)


def test_generate_restores_training_mode(tiny_model):
    tiny_model.train()
    tiny_model.generate(torch.tensor([[151644, 872, 198]]), max_new_tokens=2, eos_token_id=[])
    assert tiny_model.training
