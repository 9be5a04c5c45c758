"""training/global_step.py: every rank runs the same number of sequences, the balancer evens their
cost, ranks whose data ended early are topped up, and nothing is lost without being counted.

Several ranks run here as threads of one process with an in-process all-gather (engine_helpers.ThreadWorld),
over the real GlobalSteps code; the multi-process run with DeepSpeed is in test_distributed.py."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from engine_helpers import run_ranks

from training.global_step import GlobalSteps, assign, extra_draws


@dataclass
class FakeBatch:
    """What GlobalSteps needs of a packed sequence: its rows and a cost."""

    sample_ids: list[str]
    coords: list[tuple[int, int, int, int]]
    cost: float = 1.0


@dataclass
class FakePipeline:
    """Rank r's sequences; rebuild() finds any rank's sequence by its coordinates."""

    rank: int
    batches: list[FakeBatch]
    everyone: dict = field(default_factory=dict)
    rebuilt: int = 0

    def __iter__(self):
        return iter(self.batches)

    def rebuild(self, coords):
        self.rebuilt += 1
        return self.everyone[tuple(tuple(c) for c in coords)]


def fake_world(counts: list[int], costs=None) -> list[FakePipeline]:
    everyone, pipelines = {}, []
    for rank, n in enumerate(counts):
        batches = []
        for i in range(n):
            coords = [(0, 0, rank, 10 * i), (0, 0, rank, 10 * i + 1)]
            cost = costs[rank][i] if costs else 1.0 + rank + i
            batch = FakeBatch([f"r{rank}s{i}a", f"r{rank}s{i}b"], coords, cost)
            everyone[tuple(coords)] = batch
            batches.append(batch)
        pipelines.append(FakePipeline(rank, batches, everyone))
    return pipelines


def test_extra_draws_spread_the_deficit_over_ranks_with_data():
    assert extra_draws([2, 2, 2], [False] * 3, 2) == [0, 0, 0]
    assert extra_draws([2, 0, 2], [False, True, False], 2) == [1, 0, 1]  # 2 missing, 2 ranks still reading
    assert extra_draws([2, 1, 0], [False, True, True], 2) == [3, 0, 0]
    assert extra_draws([1, 1, 0], [True, True, True], 2) == [0, 0, 0]  # nobody can draw: the data ended
    assert extra_draws([2, 1, 1, 0], [False, True, False, True], 2) == [2, 0, 2, 0]
    assert extra_draws([2, 2, 1], [False, False, True], 2) == [1, 0, 0]  # odd remainder: lower rank first


def test_assign_gives_every_rank_the_same_count():
    costs = [9.0, 1.0, 1.0, 1.0, 5.0, 5.0]
    balanced = assign(costs, 2, 3, balance=True)
    assert sorted(len(g) for g in balanced) == [3, 3]
    assert sorted(i for g in balanced for i in g) == list(range(6))
    loads = sorted(sum(costs[i] for i in g) for g in balanced)
    assert loads == [11.0, 11.0]  # {9,1,1} and {5,5,1}: even
    assert assign(costs, 2, 3, balance=False) == [[0, 1, 2], [3, 4, 5]]  # draw order: 11 vs 11 by luck
    assert assign([9.0, 5.0, 1.0, 1.0], 2, 2, balance=False) == [[0, 1], [2, 3]]  # 14 vs 2


def test_balanced_steps_move_sequences_and_even_the_cost():
    """Rank 0 drew expensive sequences, rank 1 cheap ones: the balancer swaps some over, the
    moved ones are rebuilt on the receiving rank, and every sequence runs exactly once."""
    costs = [[10.0, 9.0, 10.0, 9.0], [1.0, 2.0, 1.0, 2.0]]
    pipes = fake_world([4, 4], costs)
    plans = run_ranks(2, lambda r, ex: GlobalSteps(pipes[r], 2, lambda b: b.cost, rank=r, world=2, exchange=ex))
    assert [len(p) for p in plans] == [2, 2]
    for step in range(2):
        p0, p1 = plans[0][step], plans[1][step]
        assert p0.loads == p1.loads  # every rank made the same plan
        assert p0.per_rank == 2 and len(p0.mine) == len(p1.mine) == 2
        assert p0.imbalance < p0.imbalance_unbalanced
        assert p0.imbalance == pytest.approx(1.0)  # drawn {10, 9} | {1, 2} -> run {10, 1} | {9, 2}
        assert p0.imbalance_unbalanced == pytest.approx(19 / 11)
    ran = [b.sample_ids[0] for plans_r in plans for plan in plans_r for b in plan.mine]
    assert sorted(ran) == sorted(b.sample_ids[0] for p in pipes for b in p.batches)  # each once
    assert sum(p.rebuilt for p in pipes) > 0  # some crossed over, rebuilt from coordinates
    owners = [o for plan in plans[0] for o in plan.owners]
    assert set(owners) == {0, 1}


def test_a_rank_whose_data_ends_is_topped_up_by_the_others():
    """Rank 1 has 1 sequence, rank 0 has 6, two per rank per step: rank 0 keeps both ranks busy
    until its data ends too; the last odd sequence is dropped and counted, never run twice."""
    pipes = fake_world([6, 1])
    plans = run_ranks(2, lambda r, ex: GlobalSteps(pipes[r], 2, lambda b: b.cost, rank=r, world=2, exchange=ex))
    per_rank = [[plan.per_rank for plan in plans_r] for plans_r in plans]
    assert per_rank == [[2, 1], [2, 1]]  # 7 sequences: a full step of 4, then 1 each, 1 dropped
    ran = [b.sample_ids[0] for plans_r in plans for plan in plans_r for b in plan.mine]
    assert len(ran) == len(set(ran)) == 6
    assert plans[0][-1].dropped_sequences == 1 and plans[0][-1].dropped_samples == 2


def test_a_final_draw_too_small_for_every_rank_is_counted():
    """3 sequences over 2 ranks, 1 each per step: one full step, then 1 < world left: dropped."""
    pipes = fake_world([2, 1])
    made = {}

    def make(rank, exchange):
        made[rank] = GlobalSteps(pipes[rank], 1, lambda b: b.cost, rank=rank, world=2, exchange=exchange)
        return made[rank]

    plans = run_ranks(2, make)
    assert [len(p) for p in plans] == [1, 1]
    assert all(m.dropped_sequences == 1 and m.dropped_samples == 2 for m in made.values())
    assert plans[1][0].owners.count(0) >= 1  # rank 1 ran rank 0's rows


def test_without_the_balancer_ranks_run_what_they_read():
    pipes = fake_world([4, 4])
    plans = run_ranks(2, lambda r, ex: GlobalSteps(pipes[r], 2, lambda b: b.cost, balance=False, rank=r, world=2,
                                                  exchange=ex))
    for rank in range(2):
        assert all(o == rank for plan in plans[rank] for o in plan.owners)
        assert all(plan.imbalance == plan.imbalance_unbalanced for plan in plans[rank])
    assert sum(p.rebuilt for p in pipes) == 0


def test_one_rank_alone_runs_short_last_step():
    pipes = fake_world([5])
    plans = run_ranks(1, lambda r, ex: GlobalSteps(pipes[r], 2, lambda b: b.cost, rank=r, world=1, exchange=ex))
    assert [p.per_rank for p in plans[0]] == [2, 2, 1]
    assert all(p.dropped_sequences == 0 for p in plans[0])
