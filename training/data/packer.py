"""Packer: whole processed samples -> sequences of at most `max_tokens` for the model's packed path.

    packer = Packer(max_tokens=8192, buffer_size=256)
    packer.add(key, length, payload)        # until packer.full (or the stream ends)
    entries = packer.pop_sequence()         # the samples of one sequence, never over max_tokens
    inputs = packed_inputs([e.payload for e in entries])   # kwargs of KeyeForConditionalGeneration

How a sequence is chosen (rolling first-fit-decreasing): the packer holds a look-ahead buffer of
samples. Each emitted sequence is the first bin that first-fit-decreasing would build over the
whole buffer: samples in decreasing length, each taken if it still fits. (In FFD the first bin's
content depends only on that greedy pass, so the other bins need not be built.) Emitting one bin
and refilling means every sequence picks from a full buffer, which is what keeps padding low; a
fixed-batch FFD would leave its last bins half empty every round. Long samples open sequences and
short ones fill the gaps. So that a sample that never fits a gap cannot wait forever, one that has
waited `max_wait` emitted sequences opens the next one instead of the longest. No randomness: the
choice is a function of the buffer (ties go to the earlier arrival), so a restored buffer packs
the same way.

What is never done: a sample is never split across sequences and a sequence never exceeds
`max_tokens`.

Over-long samples (`fit_to_limit`), the truncation policy:
- a sample without images or videos whose kind is in `truncate_kinds` (default: plain text
  documents and chats, kind "text") is cut to its first `max_tokens` tokens; its labels and
  positions are cut with it (text-only positions are 0..L-1 on all three axes, so the prefix is
  exactly what the processor gives for the shorter text);
- anything with vision tokens is skipped with reason `too_long`: a cut inside a vision block would
  leave pad tokens without their patches (the model refuses that), and a cut before a block would
  drop images the text still talks about;
- other kinds over the limit are skipped with `too_long` too: cutting a preference or RL row's
  answer changes what it means;
- a sample with no loss token left (after the label shift) is skipped with `no_loss_tokens`: it
  would cost compute and teach nothing.

Labels in the packed row: -100 on every non-loss token (the processor's labels) and on the first
token of every sample, so even a consumer that shifts labels without `cu_seqlens` never trains the
last token of one sample to predict the first of the next. The first label is never a target of
the sample alone either (targets are labels[1:]), so losses are unchanged by it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from training.losses import IGNORE_INDEX

from .cost import SampleShape

if TYPE_CHECKING:
    from training.processor import Sample

TRUNCATABLE_KINDS = ("text",)
TOO_LONG = "too_long"
NO_LOSS_TOKENS = "no_loss_tokens"


# --- one sample against the limit ---------------------------------------------------------------


def has_vision(sample: Sample) -> bool:
    return bool(sample.image_grid_thw.shape[0] or sample.video_grid_thw.shape[0])


def loss_tokens(sample: Sample) -> int:
    """Tokens the sample is trained on: labels after the shift (the first label predicts nothing)."""
    return int((sample.labels[1:] != IGNORE_INDEX).sum())


def truncate_text(sample: Sample, length: int) -> Sample:
    """The first `length` tokens of a sample without vision (labels and positions cut alike)."""
    if has_vision(sample):
        raise ValueError("a sample with images or videos cannot be truncated token-wise")
    return dataclasses.replace(
        sample,
        input_ids=sample.input_ids[:length].clone(),
        labels=sample.labels[:length].clone(),
        position_ids=sample.position_ids[:, :length].clone(),
    )


@dataclass(frozen=True)
class Fit:
    """What the truncation policy made of one sample: `sample` is None when it is skipped."""

    sample: Sample | None
    skip_reason: str | None = None
    truncated: bool = False


def fit_to_limit(
    sample: Sample, kind: str, max_tokens: int, truncate_kinds: Sequence[str] = TRUNCATABLE_KINDS
) -> Fit:
    """Apply the truncation policy of the module docstring to one processed sample."""
    truncated = False
    if len(sample.input_ids) > max_tokens:
        if has_vision(sample) or kind not in truncate_kinds:
            return Fit(None, TOO_LONG)
        sample, truncated = truncate_text(sample, max_tokens), True
    if loss_tokens(sample) == 0:
        return Fit(None, NO_LOSS_TOKENS)
    return Fit(sample, None, truncated)


# --- the look-ahead buffer ----------------------------------------------------------------------


@dataclass(eq=False)  # identity, not field equality: payloads hold tensors
class Entry:
    """One buffered sample. `key` is what the owner needs to rebuild the payload after a restart
    (the pipeline uses the row coordinate); it must be JSON-able for `state_dict`."""

    key: Hashable
    length: int
    arrival: int  # admission number: orders ties, and says which sample is oldest
    admitted_at: int  # sequences emitted before this sample arrived: its wait is measured from here
    payload: Any = None


class Packer:
    """Rolling first-fit-decreasing over a buffer of `buffer_size` samples (see module docstring).

    The buffer is full (ready to emit) at `buffer_size` samples or `lookahead_tokens` tokens,
    whichever comes first. The token bound is what matters for short samples (64 captions of 60
    tokens do not fill one 8192-token sequence) and it bounds memory, which grows with tokens
    (pixels included); the count bound keeps the sort cheap. Default lookahead: 8 * max_tokens,
    a middle ground between memory and padding when samples reach most of max_tokens (lengths
    uniform up to 0.9 * max_tokens, 256-sample buffer: 4.6% padding with 4 *, 2.5% with 8 *, 1.7%
    with 16 *); samples of up to a third of max_tokens pack to < 0.3% with any of these.
    max_wait: a sample that has seen this many sequences emitted since it arrived opens the next
    one (default 2 * buffer_size: far from what FFD needs normally, a bound for unlucky lengths).
    """

    def __init__(
        self,
        max_tokens: int,
        buffer_size: int = 256,
        lookahead_tokens: int | None = None,
        max_wait: int | None = None,
    ):
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be positive, got {buffer_size}")
        self.max_tokens = int(max_tokens)
        self.buffer_size = int(buffer_size)
        self.lookahead_tokens = int(lookahead_tokens) if lookahead_tokens is not None else 8 * self.max_tokens
        if self.lookahead_tokens < self.max_tokens:
            raise ValueError(f"lookahead_tokens {self.lookahead_tokens} must be at least max_tokens {self.max_tokens}")
        self.max_wait = int(max_wait) if max_wait is not None else 2 * self.buffer_size
        self._tokens = 0  # sum of buffered lengths
        self._buffer: list[Entry] = []  # in arrival order
        self._arrivals = 0
        self._emitted = 0

    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def full(self) -> bool:
        return len(self._buffer) >= self.buffer_size or self._tokens >= self.lookahead_tokens

    @property
    def buffered_tokens(self) -> int:
        return self._tokens

    def add(self, key: Hashable, length: int, payload: Any = None) -> None:
        if not 0 < length <= self.max_tokens:
            raise ValueError(f"sample length {length} outside 1..{self.max_tokens}: apply fit_to_limit first")
        self._buffer.append(Entry(key, int(length), self._arrivals, self._emitted, payload))
        self._arrivals += 1
        self._tokens += int(length)

    def pop_sequence(self) -> list[Entry]:
        """The samples of the next sequence, in arrival order, removed from the buffer."""
        if not self._buffer:
            raise IndexError("pop_sequence on an empty packer")
        order = sorted(self._buffer, key=lambda e: (-e.length, e.arrival))
        oldest = self._buffer[0]
        if self._emitted - oldest.admitted_at >= self.max_wait:
            order.remove(oldest)
            order.insert(0, oldest)
        room = self.max_tokens
        chosen: list[Entry] = []
        for entry in order:
            if entry.length <= room:
                chosen.append(entry)
                room -= entry.length
                if room == 0:
                    break
        taken = {id(e) for e in chosen}
        self._buffer = [e for e in self._buffer if id(e) not in taken]
        self._tokens -= self.max_tokens - room
        self._emitted += 1
        return sorted(chosen, key=lambda e: e.arrival)

    # --- checkpoint state -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """JSON-able: the buffer as keys and lengths (never tensors), plus the counters."""
        return {
            "max_tokens": self.max_tokens,
            "buffer_size": self.buffer_size,
            "lookahead_tokens": self.lookahead_tokens,
            "max_wait": self.max_wait,
            "arrivals": self._arrivals,
            "emitted": self._emitted,
            "buffer": [[_jsonable(e.key), e.length, e.arrival, e.admitted_at] for e in self._buffer],
        }

    def load_state_dict(self, state: dict, payloads: Sequence[tuple[int, Any]]) -> None:
        """Restore the buffer; `payloads[i]` is (length, payload) rebuilt from the i-th saved key
        (`saved_keys(state)`). A rebuilt length that differs from the saved one means the data or
        the processing changed since the checkpoint, and is refused."""
        names = ("max_tokens", "buffer_size", "lookahead_tokens", "max_wait")
        mine = {name: getattr(self, name) for name in names}
        saved = {name: state[name] for name in names}
        if mine != saved:
            raise ValueError(f"packer state saved with {saved}, now {mine}")
        entries = state["buffer"]
        if len(payloads) != len(entries):
            raise ValueError(f"{len(payloads)} payloads for {len(entries)} buffered samples")
        buffer = []
        for (key, length, arrival, admitted_at), (rebuilt_length, payload) in zip(entries, payloads):
            if rebuilt_length != length:
                raise ValueError(
                    f"buffered sample {key} has {rebuilt_length} tokens now but {length} when saved: "
                    "the data or the processor changed since the checkpoint"
                )
            buffer.append(Entry(_hashable(key), int(length), int(arrival), int(admitted_at), payload))
        self._buffer = buffer
        self._tokens = sum(e.length for e in buffer)
        self._arrivals = int(state["arrivals"])
        self._emitted = int(state["emitted"])


def saved_keys(state: dict) -> list:
    """The keys of the samples buffered in a packer state, in buffer order."""
    return [_hashable(key) for key, *_ in state["buffer"]]


def _jsonable(key: Any) -> Any:
    return [_jsonable(k) for k in key] if isinstance(key, tuple) else key


def _hashable(key: Any) -> Hashable:
    """JSON turns tuples into lists; give them back as tuples."""
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key


# --- collation ----------------------------------------------------------------------------------


def packed_inputs(samples: Sequence[Sample]) -> dict[str, torch.Tensor | None]:
    """Samples -> the model's packed inputs: input_ids / labels (1, total), position_ids (3, 1,
    total), cu_seqlens over the samples, vision tensors in sample order. Labels are -100 on each
    sample's first token (see the module docstring)."""
    # imported on use: training.processor pulls in the model package (transformers), which
    # `import training.data` should not pay for
    from training.processor import collate_packed

    inputs = collate_packed(list(samples))
    starts = inputs["cu_seqlens"][:-1].long()
    inputs["labels"][0, starts] = IGNORE_INDEX
    return inputs


def vision_cu_seqlens(image_grid_thw: torch.Tensor, video_grid_thw: torch.Tensor) -> torch.Tensor:
    """Patch offsets of the ViT's attention segments: one per image, one per whole video (all its
    frames attend to each other), images first, then videos — the order in which the model runs
    `pixel_values` and `pixel_values_videos` through the ViT."""
    grids = torch.cat([image_grid_thw.view(-1, 3), video_grid_thw.view(-1, 3)]).long()
    sizes = grids.prod(dim=1)
    return torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)]).to(torch.int32)


def processed_shape(sample: Sample, merge_size: int = 2) -> SampleShape:
    """The cost model's view of a processed sample (training.data.cost): text tokens and grids."""
    grids = [tuple(int(v) for v in g) for g in torch.cat([sample.image_grid_thw, sample.video_grid_thw]).tolist()]
    vision = sum(t * h * w for t, h, w in grids) // merge_size**2
    return SampleShape(len(sample.input_ids) - vision, tuple(grids))
