"""The trainer's data pipeline on one rank: ShardReader -> KeyeProcessor -> Packer -> packed sequences.

    reader = ShardReader([("out/pretrain", 3.0), ("out/ocr", 1.0)], seed=0)
    pipeline = DataPipeline(reader, KeyeProcessor(), max_tokens=8192)
    for batch in pipeline:                      # one PackedBatch = one packed sequence
        out = model(**batch.inputs, return_logits=False)
        ...
    state = pipeline.state_dict()               # JSON-able; save it with the engine's checkpoint
    DataPipeline(same reader arguments, processor, same packing settings).load_state_dict(state)

Each PackedBatch holds the model's packed inputs, the ViT's attention offsets, which rows it holds
(ids and row coordinates, so another rank can rebuild it: see balance.py), the cost model's view
of each sample (for the balancer), and counts: loss, real and padding tokens, truncated samples,
rows skipped since the previous batch by reason. Padding is max_tokens - real tokens of the
sequence: nothing is appended (the packed path takes any length), but a sequence of n tokens uses
a max_tokens slot of memory and step time, so that is the waste counted.

Resuming: the state is the reader's state (cursors, its counter-based random draws, its shuffle
buffer as row coordinates), the packer's look-ahead buffer as row coordinates and lengths, and
the counters. On restore the buffered rows are read back by coordinate and processed again; the
processor is deterministic and the packer has no randomness, so the restored pipeline yields the
same next sequences, bit for bit. Nothing else draws random numbers here: there is no torch or
numpy global RNG state to save for the data.

Rows the processor cannot turn into a sample (undecodable image, extreme aspect ratio) are skipped
with reason `unprocessable` and logged, never a crash of the run.

Pairs (`pairs=True`, preference training): a `preference` row becomes two samples, its chosen
conversation (`messages`) and its `rejected` one (same prompt and images), which enter the packer
as ONE entry of their summed length: a pair is never split across sequences, micro-steps or ranks,
and lies in its sequence as chosen then rejected. A pair over max_tokens is skipped as `too_long`
(never truncated: a cut answer is another answer), a row without a rejected reply as `not_a_pair`.
Reference log-probs precomputed into the row (`extra["ref_logps"]`, training/precompute_ref.py)
travel with the batch.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from training.losses import IGNORE_INDEX

from .cost import SampleShape
from .packer import (
    NO_LOSS_TOKENS,
    TOO_LONG,
    TRUNCATABLE_KINDS,
    Packer,
    fit_to_limit,
    loss_tokens,
    packed_inputs,
    processed_shape,
    saved_keys,
    vision_cu_seqlens,
)
from .reader import RowCoord, ShardReader

if TYPE_CHECKING:
    from training.processor import KeyeProcessor, Sample

log = logging.getLogger(__name__)

STATE_VERSION = 1
UNPROCESSABLE = "unprocessable"
NOT_A_PAIR = "not_a_pair"


@dataclass
class PackedBatch:
    """One packed sequence: `inputs` go to KeyeForConditionalGeneration as keyword arguments."""

    inputs: dict[str, torch.Tensor | None]
    vision_cu_seqlens: torch.Tensor  # patch offsets, one segment per image / whole video
    sample_ids: list[str]
    coords: list[RowCoord]
    kinds: list[str]
    shapes: list[SampleShape]  # for the cost model (cost.sequence_flops), which the balancer uses
    max_tokens: int
    loss_tokens: int  # labelled targets after the shift: the model's num_loss_tokens
    real_tokens: int
    truncated: int  # samples of this sequence that were cut to max_tokens
    # per packed sample (a row is one sample, or two in pair mode: chosen, rejected): its loss tokens
    sample_loss_tokens: list[int] = field(default_factory=list)
    samples_per_row: int = 1
    # pair mode with precomputed reference log-probs: one per packed sample, and the model they were
    # computed with; None where the rows carry none
    ref_logps: list[float] | None = None
    ref_models: list[str] | None = None
    # rows skipped since the previous batch, by reason (rows skipped after the last batch of a
    # finite run show only in DataPipeline.skipped)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def padding_tokens(self) -> int:
        return self.max_tokens - self.real_tokens


def pair_samples(processor: KeyeProcessor, row: Mapping, max_tokens: int) -> tuple[list[Sample] | None, str | None]:
    """A preference row's [chosen, rejected] samples, or (None, skip reason): not a preference row
    with a rejected reply, unprocessable, both together over max_tokens, or one without loss tokens."""
    if row.get("kind") != "preference" or not row.get("rejected"):
        return None, NOT_A_PAIR
    try:
        chosen = processor(row)
        rejected = processor(row, messages=row["rejected"])
    except (ValueError, OSError) as error:  # bad bytes, aspect ratio: this row, not the run
        log.warning("skipping pair %s: %s", row.get("id"), error)
        return None, UNPROCESSABLE
    if len(chosen.input_ids) + len(rejected.input_ids) > max_tokens:
        return None, TOO_LONG
    if not (loss_tokens(chosen) and loss_tokens(rejected)):
        return None, NO_LOSS_TOKENS
    return [chosen, rejected], None


@dataclass
class _Item:
    """The packer's payload for one row: its samples ready to pack (one, or chosen and rejected),
    and what the batch reports."""

    samples: list[Sample]
    sample_id: str
    kind: str
    coord: RowCoord
    truncated: bool
    ref_logps: tuple[float, float] | None = None
    ref_model: str | None = None

    @property
    def length(self) -> int:
        return sum(len(sample.input_ids) for sample in self.samples)


class DataPipeline:
    """Iterates PackedBatch of at most `max_tokens` tokens; see the module docstring.

    buffer_size, lookahead_tokens: the packer's look-ahead, at most this many samples or tokens
    (memory: that many processed samples, pixels included; see Packer). truncate_kinds: kinds
    whose text-only samples may be cut to max_tokens (see packer.fit_to_limit).
    """

    def __init__(
        self,
        reader: ShardReader,
        processor: KeyeProcessor,
        *,
        max_tokens: int = 8192,
        buffer_size: int = 256,
        lookahead_tokens: int | None = None,
        max_wait: int | None = None,
        truncate_kinds: Sequence[str] = TRUNCATABLE_KINDS,
        pairs: bool = False,
    ):
        self.reader = reader
        self.processor = processor
        self.max_tokens = int(max_tokens)
        self.truncate_kinds = tuple(truncate_kinds)
        self.pairs = bool(pairs)
        self.packer = Packer(self.max_tokens, buffer_size, lookahead_tokens, max_wait)
        self._exhausted = False
        self._pending_skips: Counter[str] = Counter()  # skipped rows not yet reported by a batch
        self.totals: Counter[str] = Counter()  # rows, samples, sequences, tokens ... since the start
        self.skipped: Counter[str] = Counter()  # rows skipped since the start, by reason

    # --- iteration ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[PackedBatch]:
        return self

    def __next__(self) -> PackedBatch:
        while not self.packer.full and not self._exhausted:
            try:
                coord, row = self.reader.next_item()
            except StopIteration:
                self._exhausted = True  # flush what is buffered, then stop
                break
            self.totals["rows"] += 1
            item, reason = self._prepare(coord, row)
            if item is None:
                self._pending_skips[reason] += 1
                self.skipped[reason] += 1
            else:
                self.packer.add(tuple(coord), item.length, item)
        if not len(self.packer):
            raise StopIteration
        return self._batch([entry.payload for entry in self.packer.pop_sequence()])

    def _prepare(self, coord: RowCoord, row: Mapping) -> tuple[_Item | None, str | None]:
        """Process a row and apply the truncation policy: (item, None) or (None, skip reason)."""
        if self.pairs:
            return self._prepare_pair(coord, row)
        try:
            sample = self.processor(row)
        except (ValueError, OSError) as error:  # bad bytes, aspect ratio: this row, not the run
            log.warning("skipping row %s (%s): %s", row.get("id"), row.get("kind"), error)
            return None, UNPROCESSABLE
        fit = fit_to_limit(sample, row["kind"], self.max_tokens, self.truncate_kinds)
        if fit.sample is None:
            return None, fit.skip_reason
        return _Item([fit.sample], row["id"], row["kind"], RowCoord(*coord), fit.truncated), None

    def _prepare_pair(self, coord: RowCoord, row: Mapping) -> tuple[_Item | None, str | None]:
        samples, reason = pair_samples(self.processor, row, self.max_tokens)
        if samples is None:
            return None, reason
        ref = json.loads(row.get("extra") or "{}").get("ref_logps")
        ref_logps = (float(ref["chosen"]), float(ref["rejected"])) if ref else None
        return _Item(samples, row["id"], row["kind"], RowCoord(*coord), False, ref_logps,
                     ref.get("model") if ref else None), None

    def rebuild(self, coords: Sequence[Sequence[int]]) -> PackedBatch:
        """The sequence of these rows (any rank's `PackedBatch.coords`), made again from the shards:
        how a rank runs a sequence that the balancer moved to it from another rank
        (training/global_step.py). Counters are left alone: the owner already counted it."""
        coords = [RowCoord(*c) for c in coords]
        items = []
        for coord, row in zip(coords, self.reader.read_rows(coords)):
            item, reason = self._prepare(coord, row)
            if item is None:
                raise ValueError(f"row {coord} cannot be packed ({reason}): not a sequence this pipeline made")
            items.append(item)
        if sum(item.length for item in items) > self.max_tokens:
            raise ValueError(f"rows {coords} hold more than max_tokens={self.max_tokens} tokens")
        return self._assemble(items, {})

    def _assemble(self, items: list[_Item], skipped: dict[str, int]) -> PackedBatch:
        samples = [sample for item in items for sample in item.samples]
        inputs = packed_inputs(samples)
        with_ref = self.pairs and all(item.ref_logps is not None for item in items)
        return PackedBatch(
            inputs=inputs,
            vision_cu_seqlens=vision_cu_seqlens(inputs["image_grid_thw"], inputs["video_grid_thw"]),
            sample_ids=[item.sample_id for item in items],
            coords=[item.coord for item in items],
            kinds=[item.kind for item in items],
            shapes=[processed_shape(sample) for sample in samples],
            max_tokens=self.max_tokens,
            loss_tokens=int((inputs["labels"] != IGNORE_INDEX).sum()),
            real_tokens=int(inputs["input_ids"].shape[1]),
            truncated=sum(item.truncated for item in items),
            skipped=skipped,
            sample_loss_tokens=[loss_tokens(sample) for sample in samples],
            samples_per_row=2 if self.pairs else 1,
            ref_logps=[v for item in items for v in item.ref_logps] if with_ref else None,
            ref_models=[item.ref_model for item in items] if with_ref else None,
        )

    def _batch(self, items: list[_Item]) -> PackedBatch:
        batch = self._assemble(items, dict(self._pending_skips))
        self._pending_skips.clear()
        self.totals.update(
            samples=len(items),  # rows (a pair counts once)
            sequences=1,
            real_tokens=batch.real_tokens,
            padding_tokens=batch.padding_tokens,
            loss_tokens=batch.loss_tokens,
            truncated=batch.truncated,
        )
        return batch

    @property
    def draining(self) -> bool:
        """True once the reader has ended: the packer is flushing its buffer, so the sequences
        from here on fill less (the tail of a finite run; a streaming run never gets here)."""
        return self._exhausted

    @property
    def padding_fraction(self) -> float:
        """Padding tokens over the token slots of all sequences emitted so far."""
        slots = self.totals["sequences"] * self.max_tokens
        return self.totals["padding_tokens"] / slots if slots else 0.0

    # --- checkpoint state -----------------------------------------------------------------------

    def _settings(self) -> dict:
        return {"max_tokens": self.max_tokens, "truncate_kinds": list(self.truncate_kinds), "pairs": self.pairs}

    def state_dict(self) -> dict:
        """JSON-able state after the batches yielded so far; restoring it resumes at the next one."""
        return {
            "version": STATE_VERSION,
            "settings": self._settings(),
            "reader": self.reader.state_dict(),
            "packer": self.packer.state_dict(),
            "exhausted": self._exhausted,
            "pending_skips": dict(self._pending_skips),
            "totals": dict(self.totals),
            "skipped": dict(self.skipped),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"pipeline state version {state.get('version')}, expected {STATE_VERSION}")
        if state["settings"] != self._settings():
            raise ValueError(f"pipeline state saved with {state['settings']}, now {self._settings()}")
        self.reader.load_state_dict(state["reader"])
        coords = [RowCoord(*key) for key in saved_keys(state["packer"])]
        payloads = []
        for coord, row in zip(coords, self.reader.read_rows(coords)):
            item, reason = self._prepare(coord, row)
            if item is None:  # it was packable when saved: data or processing changed
                raise ValueError(f"buffered row {coord} cannot be packed any more ({reason})")
            payloads.append((item.length, item))
        self.packer.load_state_dict(state["packer"], payloads)
        self._exhausted = bool(state["exhausted"])
        self._pending_skips = Counter(state["pending_skips"])
        self.totals = Counter(state["totals"])
        self.skipped = Counter(state["skipped"])
