"""Spreading one global step's packed sequences over data-parallel ranks by estimated cost.

Each global step every rank has packed some sequences; their costs (cost.py: ViT + LLM FLOPs)
differ several-fold, and a synchronous step lasts as long as its most loaded rank. The ranks
all-gather the costs (`all_gather_lists`: numbers, never the data) and each computes the same
assignment from the same numbers (`balance_costs`), so no rank has to broadcast it. Which rank
runs what, and fetching a sequence read by another rank, is training/global_step.py's job.

Partitioning: greedy LPT (longest first, each to the least loaded rank; max load <= 4/3 optimum)
and Karmarkar-Karp largest differencing for k-way partitions (usually closer to the mean when
sequences are few per rank); `balance_costs` runs both, keeps the lower maximum, then improves it
with single moves/swaps off the most loaded rank (`improve_by_swaps`).

Counts per rank: equal (`balance_costs(costs, k, per_rank=m)`: every rank runs exactly m, LPT
into ranks with room, then swaps only) is what the trainer runs: ZeRO-2 and -3 reduce-scatter
gradients in every backward pass, so ranks must run the same number of micro-steps or their
collectives stop matching and the step hangs. Free counts (`balance_costs(costs, k)`: ranks may
get different numbers of sequences) would only suit ZeRO-0/1; bench/balance.py reports both, to
show what the equal-count constraint costs. A rank needs at least one sequence (an idle rank never
reaches the reduction), and the loss is normalised by the global number of loss tokens, so a token
weighs the same on whichever rank it runs.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Assignment:
    """ranks[r]: indices of the sequences rank r runs; loads[r]: their summed cost."""

    ranks: tuple[tuple[int, ...], ...]
    loads: tuple[float, ...]
    method: str

    @property
    def imbalance(self) -> float:
        """max / mean rank load: 1.0 is perfect; a step takes this times the ideal time."""
        mean = sum(self.loads) / len(self.loads)
        return max(self.loads) / mean if mean > 0 else 1.0

    def rank_of(self) -> list[int]:
        owner = [0] * sum(len(r) for r in self.ranks)
        for rank, items in enumerate(self.ranks):
            for i in items:
                owner[i] = rank
        return owner


def _assignment(costs: Sequence[float], groups: Sequence[Sequence[int]], method: str) -> Assignment:
    ranks = tuple(tuple(sorted(g)) for g in groups)
    loads = tuple(float(sum(costs[i] for i in g)) for g in ranks)
    return Assignment(ranks, loads, method)


def _check(costs: Sequence[float], num_ranks: int) -> None:
    if num_ranks < 1:
        raise ValueError(f"num_ranks must be >= 1, got {num_ranks}")
    if len(costs) < num_ranks:
        raise ValueError(
            f"{len(costs)} sequences for {num_ranks} ranks: every rank needs at least one sequence per "
            "global step (an idle rank never reaches the gradient all-reduce)"
        )
    if any(not c >= 0 for c in costs):
        raise ValueError("costs must be non-negative numbers")


def greedy_lpt(costs: Sequence[float], num_ranks: int) -> Assignment:
    """Longest processing time first: costliest sequence to the currently least loaded rank."""
    _check(costs, num_ranks)
    heap = [(0.0, 0, rank) for rank in range(num_ranks)]  # (load, count, rank): ties -> fewer, lower rank
    groups: list[list[int]] = [[] for _ in range(num_ranks)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, count, rank = heapq.heappop(heap)
        groups[rank].append(i)
        heapq.heappush(heap, (load + costs[i], count + 1, rank))
    return _assignment(costs, groups, "lpt")


def lpt_equal_counts(costs: Sequence[float], num_ranks: int, per_rank: int) -> Assignment:
    """LPT under a cardinality limit: costliest first, each to the least loaded rank that holds
    fewer than `per_rank`; exactly num_ranks x per_rank sequences, so every rank ends with per_rank."""
    _check(costs, num_ranks)
    if len(costs) != num_ranks * per_rank:
        raise ValueError(f"{len(costs)} sequences cannot give {num_ranks} ranks {per_rank} each")
    heap = [(0.0, rank) for rank in range(num_ranks)]  # ranks with room, by (load, rank)
    groups: list[list[int]] = [[] for _ in range(num_ranks)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, rank = heapq.heappop(heap)
        groups[rank].append(i)
        if len(groups[rank]) < per_rank:  # a full rank leaves the heap
            heapq.heappush(heap, (load + costs[i], rank))
    return _assignment(costs, groups, "lpt_equal_counts")


def karmarkar_karp(costs: Sequence[float], num_ranks: int) -> Assignment:
    """Largest differencing method for k-way partitioning (Karmarkar & Karp 1982; Korf's k-way form).

    Every sequence starts as a partial k-partition: its cost in one subset, the others empty.
    Repeatedly take the two partial partitions with the largest spread (max - min subset sum) and
    merge them, joining the first's largest subset with the second's smallest and so on, which
    cancels their spreads against each other; the last partition left is the assignment.
    Subsets are tracked as a tree of merges (node ids), so a merge is a few numpy operations.
    """
    _check(costs, num_ranks)
    k, n = num_ranks, len(costs)
    children: list[tuple[int, int]] = []  # node n + j merges children[j]; nodes < n are sequences
    heap = []
    for i, cost in enumerate(costs):
        sums = np.zeros(k)
        sums[0] = cost
        nodes = np.full(k, -1, dtype=np.int64)  # -1: empty subset
        nodes[0] = i
        heap.append((-float(cost), i, sums, nodes))  # subsets kept sorted by sum, largest first
    heapq.heapify(heap)
    tiebreak = n
    while len(heap) > 1:
        _, _, sums_a, nodes_a = heapq.heappop(heap)
        _, _, sums_b, nodes_b = heapq.heappop(heap)
        sums = sums_a + sums_b[::-1]  # a's largest with b's smallest
        left, right = nodes_a, nodes_b[::-1]
        nodes = np.where(left >= 0, left, right)
        both = (left >= 0) & (right >= 0)
        if both.any():
            fresh = np.arange(n + len(children), n + len(children) + int(both.sum()))
            children.extend(zip(left[both].tolist(), right[both].tolist()))
            nodes[both] = fresh
        order = np.argsort(-sums, kind="stable")
        sums, nodes = sums[order], nodes[order]
        heapq.heappush(heap, (-(float(sums[0] - sums[-1])), tiebreak, sums, nodes))
        tiebreak += 1
    _, _, _, nodes = heap[0]
    groups = [_leaves(int(node), n, children) for node in nodes]
    groups = _fill_empty_ranks(costs, groups)
    return _assignment(costs, groups, "karmarkar_karp")


def _leaves(node: int, n: int, children: list[tuple[int, int]]) -> list[int]:
    if node < 0:
        return []
    out, stack = [], [node]
    while stack:
        node = stack.pop()
        if node < n:
            out.append(node)
        else:
            stack.extend(children[node - n])
    return out


def _fill_empty_ranks(costs: Sequence[float], groups: list[list[int]]) -> list[list[int]]:
    """Differencing can leave a subset empty when zero-cost ties pair two empty subsets; with at
    least as many sequences as ranks, move the cheapest sequence of a multi-sequence rank there."""
    for empty in [g for g in groups if not g]:
        donor = min((g for g in groups if len(g) > 1), key=lambda g: min(costs[i] for i in g))
        cheapest = min(donor, key=lambda i: (costs[i], i))
        donor.remove(cheapest)
        empty.append(cheapest)
    return groups


def improve_by_swaps(
    costs: Sequence[float], plan: Assignment, max_rounds: int | None = None, moves: bool = True
) -> Assignment:
    """Local search after a construction: lower the most loaded rank by moving one of its sequences
    to another rank, or swapping it for a cheaper one there, whichever gives the lowest pair
    maximum; repeat while that strictly helps. Pays most when ranks hold few sequences each, where
    LPT and differencing leave a few percent on the table. No move empties a rank; moves=False
    allows swaps only, so every rank keeps its count."""
    c = np.asarray(costs, dtype=float)
    k = len(plan.ranks)
    owner = np.empty(len(c), dtype=np.int64)
    for rank, items in enumerate(plan.ranks):
        owner[list(items)] = rank
    loads = np.array(plan.loads, dtype=float)
    counts = np.bincount(owner, minlength=k)
    # columns: every sequence (swap partner), then one zero-cost "slot" per rank (a plain move)
    partner_cost = np.concatenate([c, np.zeros(k)])
    partner_rank = np.concatenate([owner, np.arange(k)])
    improved = False
    for _ in range(max_rounds if max_rounds is not None else 4 * len(c)):
        top = int(np.argmax(loads))
        mine = np.flatnonzero(owner == top)
        partner_rank[: len(c)] = owner
        allowed = partner_rank != top
        if counts[top] < 2 or not moves:
            allowed[len(c) :] = False  # moving its only sequence away would idle the rank
        new_top = loads[top] - c[mine][:, None] + partner_cost[None, :]
        new_other = loads[partner_rank][None, :] - partner_cost[None, :] + c[mine][:, None]
        worst = np.where(allowed[None, :], np.maximum(new_top, new_other), np.inf)
        i, j = np.unravel_index(int(np.argmin(worst)), worst.shape)
        if not worst[i, j] < loads[top] * (1 - 1e-12):
            break
        item, other = int(mine[i]), int(partner_rank[j])
        loads[top] += partner_cost[j] - c[item]
        loads[other] += c[item] - partner_cost[j]
        owner[item] = other
        if j < len(c):
            owner[j] = top
        else:
            counts[top] -= 1
            counts[other] += 1
        improved = True
    if not improved:
        return plan
    groups = [np.flatnonzero(owner == rank).tolist() for rank in range(k)]
    return _assignment(costs, groups, plan.method + "+swaps")


def balance_costs(
    costs: Sequence[float], num_ranks: int, method: str = "best", per_rank: int | None = None
) -> Assignment:
    """Assign sequences (by cost) to ranks. method: "lpt", "karmarkar_karp", or "best": both, keep
    the lower maximum load (LPT on ties), then `improve_by_swaps`. per_rank=m: every rank gets
    exactly m sequences (needs num_ranks x m costs; LPT with room, then swaps; `method` is not
    used). Deterministic: equal inputs give equal assignments on every rank."""
    costs = [float(c) for c in costs]
    if per_rank is not None:
        return improve_by_swaps(costs, lpt_equal_counts(costs, num_ranks, per_rank), moves=False)
    if method == "lpt":
        return greedy_lpt(costs, num_ranks)
    if method == "karmarkar_karp":
        return karmarkar_karp(costs, num_ranks)
    if method != "best":
        raise ValueError(f"unknown balance method {method!r}")
    lpt, kk = greedy_lpt(costs, num_ranks), karmarkar_karp(costs, num_ranks)
    return improve_by_swaps(costs, kk if max(kk.loads) < max(lpt.loads) else lpt)


def all_gather_lists(values: Sequence[float], integers: bool = False, group=None) -> list[list]:
    """Every rank's list of numbers, in rank order, on every rank (one list without a process group).

    Two collectives of plain tensors (no pickled objects): the lengths, then the values padded to
    the longest list, as float64 or (integers=True) int64. Tensors go on the current CUDA device
    under NCCL, which cannot move CPU tensors.
    """
    import torch
    import torch.distributed as dist

    cast = int if integers else float
    if not (dist.is_available() and dist.is_initialized()):
        return [[cast(v) for v in values]]
    world = dist.get_world_size(group)
    device = (
        torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(group) == "nccl" else torch.device("cpu")
    )
    dtype = torch.int64 if integers else torch.float64
    count = torch.tensor([len(values)], dtype=torch.int64, device=device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count, group=group)
    longest = max(int(c.item()) for c in counts)
    padded = torch.zeros(longest, dtype=dtype, device=device)
    padded[: len(values)] = torch.tensor([cast(v) for v in values], dtype=dtype)
    gathered = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded, group=group)
    return [g[: int(c.item())].cpu().tolist() for g, c in zip(gathered, counts)]
