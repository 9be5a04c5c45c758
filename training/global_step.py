"""One global step's packed sequences on this rank: draw, even out the ends, balance, fetch.

    steps = GlobalSteps(pipeline, micro_batches=4, cost=lambda batch: flops)
    plan = steps.next()          # None when the data has ended on every rank
    for batch in plan.mine: ...  # exactly plan.per_rank sequences, on every rank

1. Draw. Every rank draws `micro_batches` sequences from its own pipeline (its own rows: the
   ShardReader gives ranks disjoint slices) and costs them (FLOPs, training/data/cost.py).
2. Exchange. Ranks all-gather, as plain int64/float64 tensors, whether their data has ended, the
   costs, and the row coordinates of each sequence: numbers, never pixels or tokens.
3. Uneven ends. In a finite run (epochs=n) the ranks' slices end a few sequences apart. A rank
   whose data has ended draws nothing more; the ranks that still have data draw the missing
   sequences (`extra_draws`), so steps stay full until the data has ended everywhere. The last
   step runs `total // world` sequences per rank; the remainder (fewer than `world` sequences,
   read but not run) is counted and logged as dropped, never silently lost.
4. Balance. All ranks compute the same assignment from the same numbers
   (`balance_costs(..., per_rank=m)`): every rank runs exactly m sequences, because ZeRO-2/3
   reduce gradients inside every backward pass and ranks must issue the same collectives. With
   balance=False rank r runs the r-th block of m in draw order, which is its own sequences
   whenever every rank drew m.
5. Fetch. A sequence assigned to another rank than its reader is rebuilt there from its row
   coordinates (`DataPipeline.rebuild`): the shard folders are shared storage.

Nothing here has state between steps: each rank's pipeline state (checkpointed with the engine)
already says what it has drawn, and the plan is a pure function of the drawn costs, so a resumed
run makes the same plans.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from training.data.balance import all_gather_lists, balance_costs

log = logging.getLogger(__name__)

COORD_FIELDS = 4  # RowCoord: source, epoch, shard, row


@dataclass
class StepPlan:
    mine: list  # the sequences (PackedBatch) this rank runs, in order
    owners: list[int]  # the rank that read each of them
    per_rank: int  # sequences per rank this step
    loads: list[float]  # per rank: summed cost of what it runs
    loads_unbalanced: list[float]  # per rank: what it would run without the balancer
    dropped_sequences: int = 0  # read but not run: the remainder at the very end of a finite run
    dropped_samples: int = 0

    @staticmethod
    def _ratio(loads: Sequence[float]) -> float:
        mean = sum(loads) / len(loads)
        return max(loads) / mean if mean > 0 else 1.0

    @property
    def imbalance(self) -> float:
        """max / mean rank cost of the step as run."""
        return self._ratio(self.loads)

    @property
    def imbalance_unbalanced(self) -> float:
        """The same without the balancer: what the balancer saved."""
        return self._ratio(self.loads_unbalanced)


def extra_draws(counts: Sequence[int], ended: Sequence[bool], per_rank: int) -> list[int]:
    """How many more sequences each rank draws to fill a step of len(counts) x per_rank: the
    deficit spread over the ranks whose data has not ended, lower ranks first for the remainder."""
    deficit = len(counts) * per_rank - sum(counts)
    active = [r for r, done in enumerate(ended) if not done]
    draws = [0] * len(counts)
    if deficit <= 0 or not active:
        return draws
    share, rest = divmod(deficit, len(active))
    for i, rank in enumerate(active):
        draws[rank] = share + (1 if i < rest else 0)
    return draws


def assign(costs: Sequence[float], world: int, per_rank: int, balance: bool) -> list[list[int]]:
    """Indices (into `costs`, world x per_rank of them in draw order) each rank runs."""
    if balance:
        return [list(r) for r in balance_costs(costs, world, per_rank=per_rank).ranks]
    return [list(range(r * per_rank, (r + 1) * per_rank)) for r in range(world)]


class GlobalSteps:
    """Makes each global step's StepPlan on this rank (see the module docstring).

    cost(batch) -> float: the sequence's cost (FLOPs); balance: move sequences between ranks.
    exchange(ints, floats) -> (every rank's ints, every rank's floats): the all-gather; by default
    torch.distributed's (a world of one without a process group). Tests pass an in-process one
    to run several ranks as threads.
    """

    def __init__(self, pipeline, micro_batches: int, cost: Callable[[object], float], balance: bool = True,
                 rank: int = 0, world: int = 1, group=None, exchange=None):
        self.pipeline, self.micro_batches, self.cost, self.balance = pipeline, micro_batches, cost, balance
        self.rank, self.world = rank, world
        self.exchange = exchange or (
            lambda ints, floats: (all_gather_lists(ints, integers=True, group=group), all_gather_lists(floats, group=group))
        )
        self._batches = iter(pipeline)
        self.ended = False
        self.dropped_sequences = self.dropped_samples = 0  # so far, incl. a final draw too small to run

    def _draw(self, n: int) -> list:
        drawn = []
        while len(drawn) < n and not self.ended:
            try:
                drawn.append(next(self._batches))
            except StopIteration:
                self.ended = True
        return drawn

    def _exchange(self, drawn: list) -> tuple[list[bool], list[list[float]], list[list[list[list[int]]]]]:
        """(data ended, costs, row coordinates per sequence) of every rank's new draws."""
        ints = [int(self.ended), len(drawn)]
        for batch in drawn:
            ints.append(len(batch.coords))
            ints.extend(int(v) for coord in batch.coords for v in coord)
        gathered_ints, gathered_costs = self.exchange(ints, [self.cost(b) for b in drawn])
        ended, coords = [], []
        for values in gathered_ints:
            ended.append(bool(values[0]))
            sequences, at = [], 2
            for _ in range(values[1]):
                rows = values[at]
                flat = values[at + 1 : at + 1 + rows * COORD_FIELDS]
                sequences.append([flat[i : i + COORD_FIELDS] for i in range(0, len(flat), COORD_FIELDS)])
                at += 1 + rows * COORD_FIELDS
            coords.append(sequences)
        return ended, gathered_costs, coords

    def next(self) -> StepPlan | None:
        local, costs, coords = [], [[] for _ in range(self.world)], [[] for _ in range(self.world)]
        want = self.micro_batches
        while True:  # one round in a normal step; more only where some rank's data has ended
            drawn = self._draw(want)
            local.extend(drawn)
            ended, new_costs, new_coords = self._exchange(drawn)
            for r in range(self.world):
                costs[r].extend(new_costs[r])
                coords[r].extend(new_coords[r])
            more = extra_draws([len(c) for c in costs], ended, self.micro_batches)
            if not any(more):
                break
            want = more[self.rank]

        order = [(r, i) for r in range(self.world) for i in range(len(costs[r]))]  # draw order
        per_rank = min(self.micro_batches, len(order) // self.world)
        kept, dropped = order[: per_rank * self.world], order[per_rank * self.world :]
        dropped_samples = sum(len(coords[r][i]) for r, i in dropped)
        self.dropped_sequences += len(dropped)
        self.dropped_samples += dropped_samples
        if dropped:
            log.warning("data ended: %d sequence(s) (%d samples) read but not run, fewer than one per rank",
                        len(dropped), dropped_samples)
        if per_rank == 0:
            return None
        flat_costs = [costs[r][i] for r, i in kept]
        groups = assign(flat_costs, self.world, per_rank, self.balance)
        unbalanced = assign(flat_costs, self.world, per_rank, balance=False)
        mine = []
        for index in groups[self.rank]:
            owner, i = kept[index]
            mine.append(local[i] if owner == self.rank else self.pipeline.rebuild(coords[owner][i]))
        return StepPlan(
            mine=mine,
            owners=[kept[index][0] for index in groups[self.rank]],
            per_rank=per_rank,
            loads=[sum(flat_costs[i] for i in g) for g in groups],
            loads_unbalanced=[sum(flat_costs[i] for i in g) for g in unbalanced],
            dropped_sequences=len(dropped),
            dropped_samples=dropped_samples,
        )
