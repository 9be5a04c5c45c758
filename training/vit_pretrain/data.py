"""Image-caption pairs for vit_pretrain: ShardReader rows -> batches of (image, caption).

    pipeline = ContrastivePipeline(reader, tokenizer, KeyeProcessor(tokenizer), batch_size=16, max_text_tokens=64)
    for batch in pipeline:                     # one ContrastiveBatch = one micro-batch of pairs
        out = model(**batch.inputs)
    state = pipeline.state_dict()              # JSON-able; restoring it resumes at the next batch

Which rows make a pair: rows of the kinds in `pair_kinds` (default only "caption") with exactly
one image and no video; the text is the first document or assistant message's text. Captions
describe the whole image, which is what the contrastive loss matches; the answers of ocr / vqa /
grounding rows are about a region or a question, so they would teach the towers that a question's
answer "is" the image. They can be opted in (`pair_kinds=("caption", "ocr")`). Every other row is
skipped with a counted reason, never an error: `not_pair_kind`, `not_one_image`, `has_video`,
`no_caption`, `unprocessable` (an image that does not decode or has an extreme aspect ratio).

Images: `KeyeProcessor.process_image` (native resolution, smart_resize under the processor's
image budget), packed over the batch: `pixel_values` (patches, 588) and `image_grid_thw` (n, 3).

Captions: the Qwen tokenizer, cut to max_text_tokens - 1 tokens, then `<|endoftext|>`, then padded
with `<|endoftext|>` to exactly max_text_tokens, with `attention_mask` 1 on the caption and its
end token. Fixed-length padding is SigLIP's own recipe (transformers' SiglipTextModel pools the
LAST position, padding or not, and tells users to pad to max_length): the pooled slot is always
position max_text_tokens - 1, an `<|endoftext|>` token that attends to the caption only, so a
caption's embedding never depends on the other captions of its batch.

Counting (for the engine's logs): `loss_tokens` = pairs; `real_tokens` = caption tokens (with the
end token) + image patches, what the towers process usefully; `max_tokens` = batch_size *
max_text_tokens, the text slots of a full batch; `padding_tokens` = text slots not holding a caption
token (pads, and the missing rows of a short last batch). So `padding_fraction` is the wasted share
of the text slots; images are packed and have none. (Unlike PackedBatch, padding_tokens is not
max_tokens - real_tokens here.)

Resuming: a batch is built from rows read just for it and nothing is held between batches, so the
state is the reader's state plus counters; restoring it gives the same next batches, bit for bit.
`rebuild(coords)` makes a batch again from its row coordinates, on any rank (the balancer moving
batches between ranks, training/global_step.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from training.data.cost import SampleShape
from training.data.reader import RowCoord, ShardReader
from training.processor import KeyeProcessor

log = logging.getLogger(__name__)

STATE_VERSION = 1
END_OF_TEXT = "<|endoftext|>"
CAPTION_ROLES = ("document", "assistant")

NOT_PAIR_KIND = "not_pair_kind"
NOT_ONE_IMAGE = "not_one_image"
HAS_VIDEO = "has_video"
NO_CAPTION = "no_caption"
UNPROCESSABLE = "unprocessable"


@dataclass
class ContrastiveBatch:
    """One micro-batch of pairs; `inputs` go to ViTPretrainModel as keyword arguments. The other
    attributes are the ones the engine's loop reads on a PackedBatch."""

    inputs: dict[str, torch.Tensor]  # pixel_values, image_grid_thw, input_ids, attention_mask
    sample_ids: list[str]
    coords: list[RowCoord]
    kinds: list[str]
    shapes: list[SampleShape]  # caption tokens and image grid of each pair (FLOPs)
    max_tokens: int
    loss_tokens: int  # pairs
    real_tokens: int
    padding_tokens: int
    truncated: int  # captions cut to max_text_tokens
    skipped: dict[str, int] = field(default_factory=dict)  # rows skipped since the previous batch


@dataclass
class _Pair:
    sample_id: str
    kind: str
    coord: RowCoord
    patches: torch.Tensor
    grid: tuple[int, int, int]
    token_ids: list[int]  # caption + end token, at most max_text_tokens
    truncated: bool


def caption_text(row: Mapping) -> str:
    """The text parts of the row's first document or assistant message, joined by spaces.

    Deliberately not `curation.schema.row_text` (every text part of every message: the row's text
    for dedup, decontamination and CLIP scoring): the contrastive target is what describes the
    image, so a user's question, a system prompt or a second answer would only dilute it."""
    for message in row["messages"] or ():
        if message["role"] in CAPTION_ROLES:
            texts = [part["text"] or "" for part in message["content"] or () if part["type"] == "text"]
            return " ".join(t.strip() for t in texts if t.strip())
    return ""


class ContrastivePipeline:
    """Iterates ContrastiveBatch of `batch_size` pairs (the last of a finite run may be shorter)."""

    def __init__(
        self,
        reader: ShardReader,
        tokenizer,
        processor: KeyeProcessor,
        batch_size: int,
        max_text_tokens: int,
        pair_kinds: Sequence[str] = ("caption",),
    ):
        if batch_size < 1 or max_text_tokens < 2:
            raise ValueError(f"need batch_size >= 1 and max_text_tokens >= 2, got {batch_size}, {max_text_tokens}")
        self.reader = reader
        self.tokenizer = tokenizer
        self.processor = processor
        self.batch_size = int(batch_size)
        self.max_text_tokens = int(max_text_tokens)
        self.pair_kinds = tuple(pair_kinds)
        self.end_id = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
        self.max_tokens = self.batch_size * self.max_text_tokens  # text slots of a full batch
        self._pending_skips: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()  # rows, samples (pairs), batches, tokens ... since the start
        self.skipped: Counter[str] = Counter()  # rows skipped since the start, by reason

    def __iter__(self) -> Iterator[ContrastiveBatch]:
        return self

    def __next__(self) -> ContrastiveBatch:
        pairs: list[_Pair] = []
        while len(pairs) < self.batch_size:
            try:
                coord, row = self.reader.next_item()
            except StopIteration:
                break
            self.totals["rows"] += 1
            pair, reason = self._pair(RowCoord(*coord), row)
            if pair is None:
                self._pending_skips[reason] += 1
                self.skipped[reason] += 1
            else:
                pairs.append(pair)
        if not pairs:
            raise StopIteration
        return self._batch(pairs)

    def _pair(self, coord: RowCoord, row: Mapping) -> tuple[_Pair | None, str | None]:
        if row["kind"] not in self.pair_kinds:
            return None, NOT_PAIR_KIND
        if len(row["images"] or ()) != 1:
            return None, NOT_ONE_IMAGE
        if row["videos"]:
            return None, HAS_VIDEO
        text = caption_text(row)
        if not text:
            return None, NO_CAPTION
        try:
            patches, grid = self.processor.process_image(row["images"][0])
        except (ValueError, OSError) as error:  # bad bytes, aspect ratio: this row, not the run
            log.warning("skipping row %s (%s): %s", row.get("id"), row.get("kind"), error)
            return None, UNPROCESSABLE
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        keep = self.max_text_tokens - 1  # room for the end token
        return _Pair(row["id"], row["kind"], coord, patches, grid, ids[:keep] + [self.end_id], len(ids) > keep), None

    def rebuild(self, coords: Sequence[Sequence[int]]) -> ContrastiveBatch:
        """The batch of these rows (any rank's `ContrastiveBatch.coords`), made again from the
        shards: how a rank runs a batch the balancer moved to it (training/global_step.py).
        Counters are left alone: the rank that read it counted it."""
        coords = [RowCoord(*c) for c in coords]
        pairs = []
        for coord, row in zip(coords, self.reader.read_rows(coords)):
            pair, reason = self._pair(coord, row)
            if pair is None:
                raise ValueError(f"row {coord} is no image-caption pair ({reason}): not a batch this pipeline made")
            pairs.append(pair)
        return self._assemble(pairs, {})

    def _assemble(self, pairs: list[_Pair], skipped: dict[str, int]) -> ContrastiveBatch:
        input_ids = torch.full((len(pairs), self.max_text_tokens), self.end_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for i, pair in enumerate(pairs):
            input_ids[i, : len(pair.token_ids)] = torch.tensor(pair.token_ids)
            attention_mask[i, : len(pair.token_ids)] = 1
        text_tokens = sum(len(p.token_ids) for p in pairs)
        patches = sum(p.patches.shape[0] for p in pairs)
        return ContrastiveBatch(
            inputs={
                "pixel_values": torch.cat([p.patches for p in pairs]),
                "image_grid_thw": torch.tensor([p.grid for p in pairs], dtype=torch.long),
                "input_ids": input_ids,
                "attention_mask": attention_mask,
            },
            sample_ids=[p.sample_id for p in pairs],
            coords=[p.coord for p in pairs],
            kinds=[p.kind for p in pairs],
            shapes=[SampleShape(len(p.token_ids), (p.grid,)) for p in pairs],
            max_tokens=self.max_tokens,
            loss_tokens=len(pairs),
            real_tokens=text_tokens + patches,
            padding_tokens=self.max_tokens - text_tokens,
            truncated=sum(p.truncated for p in pairs),
            skipped=skipped,
        )

    def _batch(self, pairs: list[_Pair]) -> ContrastiveBatch:
        batch = self._assemble(pairs, dict(self._pending_skips))
        self._pending_skips.clear()
        self.totals.update(
            samples=len(pairs),
            batches=1,
            text_tokens=int(batch.inputs["attention_mask"].sum()),
            image_patches=batch.inputs["pixel_values"].shape[0],
            real_tokens=batch.real_tokens,
            padding_tokens=batch.padding_tokens,
            loss_tokens=batch.loss_tokens,
            truncated=batch.truncated,
        )
        return batch

    @property
    def padding_fraction(self) -> float:
        """Padding over the text slots of all batches emitted so far (see the module docstring)."""
        slots = self.totals["batches"] * self.max_tokens
        return self.totals["padding_tokens"] / slots if slots else 0.0

    # --- checkpoint state -----------------------------------------------------------------------

    def _settings(self) -> dict:
        return {
            "batch_size": self.batch_size,
            "max_text_tokens": self.max_text_tokens,
            "pair_kinds": list(self.pair_kinds),
        }

    def state_dict(self) -> dict:
        """JSON-able state after the batches yielded so far; restoring it resumes at the next one."""
        return {
            "version": STATE_VERSION,
            "settings": self._settings(),
            "reader": self.reader.state_dict(),
            "pending_skips": dict(self._pending_skips),
            "totals": dict(self.totals),
            "skipped": dict(self.skipped),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"contrastive pipeline state version {state.get('version')}, expected {STATE_VERSION}")
        if state["settings"] != self._settings():
            raise ValueError(f"contrastive pipeline state saved with {state['settings']}, now {self._settings()}")
        self.reader.load_state_dict(state["reader"])
        self._pending_skips = Counter(state["pending_skips"])
        self.totals = Counter(state["totals"])
        self.skipped = Counter(state["skipped"])
