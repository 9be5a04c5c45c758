"""Prompt batches for on-policy training (task `rl`): ShardReader -> rows of kind `rl` -> batches of
`prompts` rows, each row a prompt (its messages, images, videos) and the `answer` it is scored
against. Nothing is tokenised for the batch itself: the task renders each prompt in the thinking
mode its group is given and generates the responses (training/tasks/rl.py).

A PromptBatch carries what the loop reads of any batch (sample ids, row coordinates for the
balancer and the ledger, a cost-model shape per prompt, token counts for the metrics line); the
balancer moves whole prompt batches between ranks (`rebuild` from coordinates). State for
checkpoints: the reader's, and the counters (no look-ahead buffer: a batch is the next rows).
Rows that are not `rl` rows with an answer are skipped with a reason (`not_rl`, `no_answer`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .cost import SampleShape, sample_shape
from .reader import RowCoord, ShardReader

STATE_VERSION = 1
NOT_RL = "not_rl"
NO_ANSWER = "no_answer"


@dataclass
class PromptBatch:
    rows: list[dict]
    sample_ids: list[str]
    coords: list[RowCoord]
    kinds: list[str]
    shapes: list[SampleShape]  # each prompt as the cost model sees it (estimated tokens, grids)
    max_tokens: int  # the token slots the batch may grow to: prompts + every group's responses
    real_tokens: int  # estimated prompt tokens (the responses are not known before the rollout)
    loss_tokens: int = 0
    truncated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def padding_tokens(self) -> int:
        return max(self.max_tokens - self.real_tokens, 0)


class PromptPipeline:
    """Iterates PromptBatch of `prompts` rows (the last of a finite run may be shorter).
    `response_slots`: tokens a prompt's responses may take (group size x max new tokens)."""

    def __init__(self, reader: ShardReader, prompts: int, response_slots: int):
        if prompts < 1:
            raise ValueError(f"prompts per batch must be >= 1, got {prompts}")
        self.reader, self.prompts, self.response_slots = reader, int(prompts), int(response_slots)
        self._pending_skips: Counter[str] = Counter()
        self.totals: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def __iter__(self) -> Iterator[PromptBatch]:
        return self

    def __next__(self) -> PromptBatch:
        rows: list[tuple[RowCoord, dict]] = []
        while len(rows) < self.prompts:
            try:
                coord, row = self.reader.next_item()
            except StopIteration:
                break
            self.totals["rows"] += 1
            reason = self._refusal(row)
            if reason:
                self._pending_skips[reason] += 1
                self.skipped[reason] += 1
            else:
                rows.append((RowCoord(*coord), dict(row)))
        if not rows:
            raise StopIteration
        batch = self._assemble(rows, dict(self._pending_skips))
        self._pending_skips.clear()
        self.totals.update(samples=len(rows), batches=1, real_tokens=batch.real_tokens,
                           padding_tokens=batch.padding_tokens)
        return batch

    @staticmethod
    def _refusal(row: Mapping) -> str | None:
        if row.get("kind") != "rl":
            return NOT_RL
        if not (row.get("answer") or "").strip():
            return NO_ANSWER
        return None

    def _assemble(self, rows: list[tuple[RowCoord, dict]], skipped: dict[str, int]) -> PromptBatch:
        shapes = [sample_shape(row) for _, row in rows]
        prompt_tokens = sum(s.llm_tokens() for s in shapes)
        return PromptBatch(
            rows=[row for _, row in rows],
            sample_ids=[row["id"] for _, row in rows],
            coords=[coord for coord, _ in rows],
            kinds=[row["kind"] for _, row in rows],
            shapes=shapes,
            max_tokens=prompt_tokens + self.response_slots * len(rows),
            real_tokens=prompt_tokens,
            skipped=skipped,
        )

    def rebuild(self, coords: Sequence[Sequence[int]]) -> PromptBatch:
        """The batch of these rows, read again (a batch the balancer moved to this rank)."""
        coords = [RowCoord(*c) for c in coords]
        rows = list(zip(coords, (dict(r) for r in self.reader.read_rows(coords))))
        refused = [(c, self._refusal(r)) for c, r in rows if self._refusal(r)]
        if refused:
            raise ValueError(f"rows {refused} are not prompts this pipeline made")
        return self._assemble(rows, {})

    @property
    def padding_fraction(self) -> float:
        slots = self.totals["padding_tokens"] + self.totals["real_tokens"]
        return self.totals["padding_tokens"] / slots if slots else 0.0

    def _settings(self) -> dict:
        return {"prompts": self.prompts, "response_slots": self.response_slots}

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "settings": self._settings(), "reader": self.reader.state_dict(),
                "pending_skips": dict(self._pending_skips), "totals": dict(self.totals), "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION or state["settings"] != self._settings():
            raise ValueError(f"prompt pipeline state {state.get('version')}/{state.get('settings')} does not match "
                             f"{STATE_VERSION}/{self._settings()}")
        self.reader.load_state_dict(state["reader"])
        self._pending_skips = Counter(state["pending_skips"])
        self.totals = Counter(state["totals"])
        self.skipped = Counter(state["skipped"])
