"""The processor: chat template, labels, thinking switches, patches, video sampling and budgets."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from keye_helpers import png, reference_file, video_entry
from PIL import Image

from curation import schema
from training.losses import IGNORE_INDEX
from training.processor import KEYE_SPECIAL_TOKENS, KeyeProcessor

m = schema.message


def _learned_text(processor, sample) -> str:
    ids = [i for i, label in zip(sample.input_ids.tolist(), sample.labels.tolist()) if label != IGNORE_INDEX]
    return processor.tokenizer.decode(ids)


def test_tokenizer_has_the_released_special_tokens(tokenizer):
    for token, token_id in KEYE_SPECIAL_TOKENS.items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id
        assert tokenizer.encode(token, add_special_tokens=False) == [token_id]
    released = json.loads(reference_file("tokenizer_config.json").read_text())["added_tokens_decoder"]
    for token_id, entry in released.items():
        assert tokenizer.convert_tokens_to_ids(entry["content"]) == int(token_id)


def test_chat_ids_equal_the_released_chat_template(processor):
    template = json.loads(reference_file("chat_template.json").read_text())["chat_template"]
    row = schema.make_row(
        "t", "vqa",
        [m("user", schema.image_part(0), "Describe this."), m("assistant", "A red square."),
         m("user", "And", schema.image_part(1), "?"), m("assistant", "Blue.")],
        [schema.image_entry(png(56, 84, 0)), schema.image_entry(png(84, 112, 1))],
    )
    sample = processor(row)
    def part(p):
        return {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}

    messages = [{"role": t["role"], "content": [part(p) for p in t["content"]]} for t in row["messages"]]
    text = processor.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
    counts = [int(g[0] * (g[1] // 2) * (g[2] // 2)) for g in sample.image_grid_thw.tolist()]
    pieces = text.split("<|image_pad|>")
    assert len(pieces) == len(counts) + 1
    expanded = pieces[0] + "".join("<|image_pad|>" * c + rest for c, rest in zip(counts, pieces[1:]))
    assert sample.input_ids.tolist() == processor.tokenizer.encode(expanded, add_special_tokens=False)


def test_labels_cover_assistant_and_document_text_only(processor, mixed_rows):
    chat = processor(mixed_rows[0])
    assert _learned_text(processor, chat) == "Hi there!<|im_end|>"
    document = processor(mixed_rows[4])  # caption row: image then caption, no chat markers
    assert _learned_text(processor, document) == "a noisy square<|endoftext|>"
    assert processor.tokenizer.decode(document.input_ids[:1]) == "<|vision_start|>"
    vision = (document.input_ids == processor.image_token_id) | (document.input_ids == processor.vision_start_id)
    assert (document.labels[vision] == IGNORE_INDEX).all()
    video = processor(mixed_rows[3])
    assert (video.labels[video.input_ids == processor.video_token_id] == IGNORE_INDEX).all()
    assert _learned_text(processor, video) == "Noise flickers.<|im_end|>"


def test_thinking_switches(processor):
    base = [m("user", "2+2?"), m("assistant", "<think>\nadd\n</think>\n\n4"), m("user", "3+3?"), m("assistant", "6")]
    think = processor(schema.make_row("t", "text", base, think_mode="think"))
    text = processor.tokenizer.decode(think.input_ids)
    assert "3+3? /think<|im_end|>" in text and "2+2?<|im_end|>" in text  # only the last user turn
    assert "<think>" not in text  # history loses its reasoning, as Qwen3's template does
    no_think = processor(schema.make_row("t", "text", base, think_mode="no_think"))
    assert "3+3? /no_think<|im_end|>" in processor.tokenizer.decode(no_think.input_ids)
    assert _learned_text(processor, no_think).endswith("<think>\n\n</think>\n\n6<|im_end|>")
    single = processor(schema.make_row("t", "text", base[:2], think_mode="think"))
    assert _learned_text(processor, single) == "<think>\nadd\n</think>\n\n4<|im_end|>"
    auto = processor(schema.make_row("t", "text", base[:2], think_mode="auto_think"))
    assert "2+2? /auto_think<|im_end|>" in processor.tokenizer.decode(auto.input_ids)
    agentic = processor(schema.make_row("t", "text", base[:2], think_mode="agentic"))
    assert "2+2? /agentic_think<|im_end|>" in processor.tokenizer.decode(agentic.input_ids)
    plain = processor(schema.make_row("t", "text", base[:2]))
    assert "2+2?<|im_end|>" in processor.tokenizer.decode(plain.input_ids)  # no mode: no switch
    prompt = processor(schema.make_row("t", "text", base[:1], think_mode="no_think"), add_generation_prompt=True)
    assert processor.tokenizer.decode(prompt.input_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert (prompt.labels == IGNORE_INDEX).all()


def test_sandbox_output_takes_no_loss(processor):
    reply = ("<think>\nZoom in.\n<code>```python\nprint(2 + 2)\n```</code>\n<sandbox_output>4\n</sandbox_output>\n"
             "It printed 4.\n</think>\n<answer>4</answer>")
    row = schema.make_row("t", "vqa", [m("user", "2+2?"), m("assistant", reply)], think_mode="agentic")
    sample = processor(row)
    learned = _learned_text(processor, sample)
    assert "<sandbox_output>" not in learned and "4\n</sandbox_output>" not in learned
    assert learned == reply.replace("<sandbox_output>4\n</sandbox_output>", "") + "<|im_end|>"
    # every token is still in the input, in order
    assert processor.tokenizer.decode(sample.input_ids).count("<sandbox_output>4\n</sandbox_output>") == 1


def test_split_sandbox_output_keeps_every_piece():
    from training.processor import split_sandbox_output

    text = "a<sandbox_output>x</sandbox_output>b<sandbox_output>y</sandbox_output><sandbox_output>cut"
    pieces = split_sandbox_output(text)
    assert "".join(p for p, _ in pieces) == text
    assert [p for p, out in pieces if out] == ["<sandbox_output>x</sandbox_output>", "<sandbox_output>y</sandbox_output>", "<sandbox_output>cut"]


def test_patches_are_normalised_row_major_blocks(processor):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (56, 84, 3), dtype=np.uint8)  # already multiples of 28: no resize
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    patches, grid = processor.process_image(buffer.getvalue())
    assert grid == (1, 4, 6) and patches.shape == (24, 3 * 14 * 14)
    for k in (0, 5, 7, 23):
        r, c = divmod(k, 6)
        block = pixels[r * 14 : (r + 1) * 14, c * 14 : (c + 1) * 14].astype(np.float32) / 255.0
        expected = ((block - 0.5) / 0.5).transpose(2, 0, 1).reshape(-1)
        assert np.allclose(patches[k].numpy(), expected, atol=1e-6)


def test_image_budget_is_configurable_and_odd_sizes_resize(tokenizer):
    released = KeyeProcessor(tokenizer, image_max_tokens=1280)  # preprocessor_config: max_pixels 1003520
    patches, (t, gh, gw) = released.process_image(png(1000, 1500, 0))
    h, w = schema.smart_resize(1000, 1500, max_pixels=1280 * 28 * 28)
    assert (gh * 14, gw * 14) == (h, w) and (gh // 2) * (gw // 2) == schema.image_tokens(1000, 1500, 1280) <= 1280
    assert patches.shape[0] == gh * gw
    default = KeyeProcessor(tokenizer)
    _, (_, gh, gw) = default.process_image(png(30, 50, 0))  # tiny: scaled up to >= 4 merged tokens
    assert (gh // 2) * (gw // 2) == schema.image_tokens(30, 50) >= 4
    with pytest.raises(schema.AspectRatioError):
        default.process_image(png(10, 2100, 0))


def test_video_frames_even_at_two_fps_and_within_budgets(tokenizer):
    p = KeyeProcessor(tokenizer)  # the real budgets
    # 10 fps for 3.05 s: 2 fps gives floor(3.0 * 2) + 1 = 7 frames -> even: 6, evenly spaced times
    times = [i / 10 for i in range(31)]
    plan = p.plan_video(times, 480, 640)
    assert len(plan.indices) == 6 and plan.indices[0] == 0 and plan.indices[-1] == 30
    assert plan.seconds_per_frame == pytest.approx(0.6)
    # fewer than 4 frames: repeated up to 4
    short = p.plan_video([0.0, 0.5], 480, 640)
    assert short.indices == [0, 0, 1, 1] and len(short.indices) % 2 == 0
    # a long video: at most 24576 / 128 = 192 frames at the 128-token per-frame budget. As in the
    # released smart_resize, the floor branch may land under the minimum when min == max:
    # beta = sqrt(480*640 / 100352) = 1.7496 -> floor(9.80) x floor(13.06) = 9 x 13 = 117 tokens
    long = p.plan_video([i / 2 for i in range(1000)], 480, 640)
    per_frame = (long.height // 28) * (long.width // 28)
    assert len(long.indices) == 192 and per_frame == 117 and per_frame * 192 <= 24576
    assert long.indices[0] == 0 and long.indices[-1] == 999
    # token counts agree with the contract's estimate for rows already at 2 fps
    for n, (h, w) in [(4, (480, 640)), (9, (1080, 1920)), (50, (720, 1280)), (300, (37, 1200))]:
        plan = p.plan_video([i / 2 for i in range(n)], h, w)
        tokens = len(plan.indices) * (plan.height // 28) * (plan.width // 28)
        assert tokens == schema.video_tokens(h, w, n) <= 24576


def test_video_timestamps_reach_the_position_ids(processor):
    row = schema.make_row(
        "t", "video", [m("user", schema.video_part(0), "?")], videos=[video_entry(4, 56, 56, fps=1.0, seed=9)]
    )
    sample = processor(row)
    (t, gh, gw) = sample.video_grid_thw[0].tolist()
    assert t == 4 and sample.second_per_grid_ts.tolist() == [1.0]  # frames one second apart
    block = (sample.input_ids == processor.video_token_id).nonzero().flatten()
    start = int(sample.position_ids[0, block[0]])
    per_frame = (gh // 2) * (gw // 2)
    temporal = sample.position_ids[0, block].view(4, per_frame)[:, 0].tolist()
    assert temporal == [start + int(k * 1.0 * 2) for k in range(4)] == [start, start + 2, start + 4, start + 6]
    assert sample.pixel_values_videos.shape == (t * gh * gw, 588)
    after = int(sample.position_ids[:, block].max()) + 1  # text after the video continues at max + 1
    assert torch.equal(sample.position_ids[:, block[-1] + 1], torch.full((3,), after))


def test_preference_rows_process_either_reply(processor):
    row = schema.make_row(
        "t", "preference", [m("user", schema.image_part(0), "Colour?"), m("assistant", "Red.")],
        [schema.image_entry(png(56, 56, 3))],
        rejected=[m("user", schema.image_part(0), "Colour?"), m("assistant", "Green.")],
    )
    chosen, rejected = processor(row), processor(row, messages=row["rejected"])
    assert _learned_text(processor, chosen) == "Red.<|im_end|>"
    assert _learned_text(processor, rejected) == "Green.<|im_end|>"
    assert torch.equal(chosen.pixel_values, rejected.pixel_values)
