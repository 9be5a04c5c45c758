"""DataPipeline: shard rows -> processor -> packer; coverage, skip reasons, exact resume."""

from __future__ import annotations

import json

import pytest
import torch
from keye_helpers import png, video_entry, write_shard_folder

from curation import schema
from training.data import DataPipeline, ShardReader
from training.data.packer import NO_LOSS_TOKENS, TOO_LONG
from training.data.pipeline import UNPROCESSABLE
from training.losses import IGNORE_INDEX

MAX_TOKENS = 160


@pytest.fixture(scope="module")
def shard_rows(tmp_path_factory):
    """Chats of many lengths, captions, a video, and one row for each special case."""
    m = schema.message
    rows = [
        schema.make_row("t", "text", [m("user", f"Question {i}?"), m("assistant", "yes " * (1 + 7 * i % 60))])
        for i in range(28)
    ]
    rows += [schema.caption_row("t", png(56, 56 + 28 * (i % 3), 10 + i), f"caption number {i}") for i in range(6)]
    rows.append(
        schema.make_row(
            "t", "video", [m("user", schema.video_part(0), "What moves?"), m("assistant", "Dots.")],
            videos=[video_entry(6, 56, 84, fps=2.0, seed=7)],
        )
    )
    special = {
        "long_text": schema.make_row("t", "text", [m("user", "Go on."), m("assistant", "and more " * 150)]),
        "big_image": schema.make_row(  # 13 x 13 = 169 image tokens: over MAX_TOKENS, cannot be cut
            "t", "vqa", [m("user", schema.image_part(0), "What?"), m("assistant", "Noise.")],
            [schema.image_entry(png(364, 364, 99))],
        ),
        "broken_image": schema.make_row(
            "t", "caption", [m("document", schema.image_part(0), "unreadable")],
            [schema.image_entry(b"these bytes are not an image", 56, 56)],
        ),
        "prompt_only": schema.make_row("t", "text", [m("user", "long prompt " * 120), m("assistant", "ok")]),
    }
    rows[5:5] = [special["long_text"], special["big_image"]]
    rows[20:20] = [special["broken_image"], special["prompt_only"]]
    folder = tmp_path_factory.mktemp("pipeline") / "mixed"
    half = -(-len(rows) // 2)
    write_shard_folder(folder, [rows[:half], rows[half:]], row_group_rows=6)
    return folder, rows, {name: row["id"] for name, row in special.items()}


def make_pipeline(folder, processor, epochs, **settings) -> DataPipeline:
    reader = ShardReader([folder], seed=3, buffer_size=8, epochs=epochs)
    return DataPipeline(reader, processor, max_tokens=MAX_TOKENS, buffer_size=16, **settings)


def test_one_epoch_packs_every_row_once_and_counts_what_it_skips(shard_rows, processor):
    folder, rows, special = shard_rows
    pipeline = make_pipeline(folder, processor, epochs=1)
    batches = list(pipeline)

    packed_ids = [i for b in batches for i in b.sample_ids]
    reasons = (TOO_LONG, UNPROCESSABLE, NO_LOSS_TOKENS)
    skipped = {reason: sum(b.skipped.get(reason, 0) for b in batches) for reason in reasons}
    assert skipped == {TOO_LONG: 1, UNPROCESSABLE: 1, NO_LOSS_TOKENS: 1} == dict(pipeline.skipped)
    assert sorted(packed_ids) == sorted(
        r["id"] for r in rows if r["id"] not in (special["big_image"], special["broken_image"], special["prompt_only"])
    )
    assert sum(b.truncated for b in batches) == 1
    assert pipeline.totals["rows"] == len(rows) and pipeline.totals["sequences"] == len(batches)

    # each batch is exactly its rows processed one by one (the long text cut to MAX_TOKENS), concatenated
    by_id = {r["id"]: r for r in rows}
    for batch in batches:
        samples = [processor(by_id[i]) for i in batch.sample_ids]
        ids = [s.input_ids[:MAX_TOKENS] for s in samples]
        labels = [torch.cat([torch.tensor([IGNORE_INDEX]), s.labels[1:MAX_TOKENS]]) for s in samples]
        assert torch.equal(batch.inputs["input_ids"][0], torch.cat(ids))
        assert torch.equal(batch.inputs["labels"][0], torch.cat(labels))
        assert batch.inputs["cu_seqlens"].tolist() == [0, *torch.tensor([len(t) for t in ids]).cumsum(0).tolist()]
        assert batch.real_tokens == sum(len(t) for t in ids) <= MAX_TOKENS
        assert batch.padding_tokens == MAX_TOKENS - batch.real_tokens
        assert batch.loss_tokens == sum(int((t != IGNORE_INDEX).sum()) for t in labels)
        assert [shape.llm_tokens() for shape in batch.shapes] == [len(t) for t in ids]
        assert [[list(g) for g in shape.grids] for shape in batch.shapes] == [
            s.image_grid_thw.tolist() + s.video_grid_thw.tolist() for s in samples
        ]
        # the coordinates name the rows (what another rank needs to rebuild this sequence)
        assert [r["id"] for r in pipeline.reader.read_rows(batch.coords)] == batch.sample_ids


def test_a_packed_batch_with_vision_runs_through_the_model(shard_rows, processor, tiny_model):
    folder, _, _ = shard_rows
    batch = next(b for b in make_pipeline(folder, processor, epochs=1) if b.inputs["video_grid_thw"].shape[0])
    with torch.no_grad():
        out = tiny_model(**batch.inputs, return_logits=False)
    assert int(out.num_loss_tokens) == batch.loss_tokens
    assert torch.isfinite(out.loss)
    assert batch.vision_cu_seqlens[-1] == sum(
        t.shape[0] for t in (batch.inputs["pixel_values"], batch.inputs["pixel_values_videos"]) if t is not None
    )


def same_batch(a, b) -> bool:
    if (a.sample_ids, a.coords, a.skipped, a.loss_tokens, a.truncated) != (
        b.sample_ids, b.coords, b.skipped, b.loss_tokens, b.truncated
    ):
        return False
    for key, value in a.inputs.items():
        other = b.inputs[key]
        if (value is None) != (other is None) or (value is not None and not torch.equal(value, other)):
            return False
    return torch.equal(a.vision_cu_seqlens, b.vision_cu_seqlens)


def test_restored_pipeline_yields_the_same_next_batches_bit_for_bit(shard_rows, processor):
    folder, _, _ = shard_rows
    first = make_pipeline(folder, processor, epochs=2)  # the rest crosses into the second epoch
    for _ in range(3):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    assert state["packer"]["buffer"], "the state should be taken with samples waiting in the packer"
    rest = list(first)

    second = make_pipeline(folder, processor, epochs=2)
    second.load_state_dict(state)
    resumed = list(second)
    assert len(resumed) == len(rest) > 3
    assert all(same_batch(a, b) for a, b in zip(rest, resumed))
    assert second.totals == first.totals and second.skipped == first.skipped


def test_a_sequence_is_rebuilt_from_its_coordinates(shard_rows, processor):
    folder, _, _ = shard_rows
    batches = list(make_pipeline(folder, processor, epochs=1))
    other_rank = make_pipeline(folder, processor, epochs=1)  # e.g. the rank the balancer moved it to
    for batch in (batches[0], batches[-1]):
        rebuilt = other_rank.rebuild(batch.coords)
        batch.skipped = {}  # skips are reported once, by the pipeline that read the rows
        assert same_batch(batch, rebuilt)
    assert other_rank.totals["sequences"] == 0


def test_restore_refuses_a_state_saved_with_other_settings(shard_rows, processor):
    folder, _, _ = shard_rows
    pipeline = make_pipeline(folder, processor, epochs=1)
    next(pipeline)
    state = pipeline.state_dict()
    other = DataPipeline(ShardReader([folder], seed=3, buffer_size=8, epochs=1), processor, max_tokens=2 * MAX_TOKENS)
    with pytest.raises(ValueError, match="saved with"):
        other.load_state_dict(state)
