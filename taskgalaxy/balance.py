"""Balanced mixtures over task types: how many rows each type keeps (pure functions), the Spark
steps that tag rows and that keep those rows, and the entropy that says how even a mixture is.

Allocation, level by level (L1 families, then L2 types, then leaves): a node's rows are shared
among its children in proportion to n^T (n: the child's rows; T = temperature: 1 keeps the input's
proportions, 0 gives every child the same share), no child getting more than it can give (its
rows, under `cap` per leaf); what a full child cannot take goes to the others, in the same
proportions. Integer shares by largest remainder, ties by name. A row's type is its first
`task_types` path; rows without one are the type "untagged". Within a type, rows are kept in the
order of sha256(seed, id): the same input and seed keep the same rows, whatever the partitioning.
Rows left out are refused with reason `balanced_out` (the funnel keeps counting them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from taskgalaxy.taxonomy import split_path

UNTAGGED = "untagged"


@dataclass
class BalanceConfig:
    enabled: bool = True
    total: int = 0  # rows in the mixture (0: every row the caps allow)
    cap: int = 0  # rows per leaf type at most (0: no cap)
    temperature: float = 0.5  # shares follow n^T at every level
    seed: int = 0


def entropy(counts: Mapping[str, int]) -> float:
    """Shannon entropy (bits) of the distribution of rows over types."""
    total = sum(counts.values())
    return -sum(n / total * math.log2(n / total) for n in counts.values() if n) if total else 0.0


def allocate(counts: Mapping[str, int], total: int, cap: int = 0, temperature: float = 0.5) -> dict[str, int]:
    """Rows to keep per leaf type (paths "a~b~c" or UNTAGGED), see the module doc."""
    capacity = {leaf: min(n, cap) if cap else n for leaf, n in counts.items()}
    budget = min(total, sum(capacity.values())) if total else sum(capacity.values())
    tree: dict = {}
    for leaf in counts:
        node = tree
        for name in split_path(leaf) if leaf != UNTAGGED else [UNTAGGED]:
            node = node.setdefault(name, {})
        node[""] = leaf  # marks a leaf (a path may also be a prefix of another: both are kept)
    out: dict[str, int] = {}
    _share(tree, budget, counts, capacity, temperature, out)
    return out


def _leaves(node: dict) -> list[str]:
    found = [node[""]] if "" in node else []
    for name, child in node.items():
        if name != "":
            found += _leaves(child)
    return found


def _share(node: dict, budget: int, counts, capacity, temperature: float, out: dict) -> None:
    if set(node) == {""}:  # a leaf
        out[node[""]] = budget
        return
    children = {name: child for name, child in sorted(node.items()) if name != ""}
    if "" in node:  # a path that is also a parent (an L2 type used as a tag): a child of its own
        children = {"": {"": node[""]}, **children}
    room = {name: sum(capacity[leaf] for leaf in _leaves(child)) for name, child in children.items()}
    weight = {name: sum(counts[leaf] for leaf in _leaves(child)) ** temperature for name, child in children.items()}
    shares = {name: 0 for name in children}
    left, open_ = budget, [name for name in children if room[name] > 0]
    while left > 0 and open_:
        total_weight = sum(weight[name] for name in open_)
        exact = {name: left * weight[name] / total_weight for name in open_}
        given = {name: min(math.floor(exact[name]), room[name] - shares[name]) for name in open_}
        spare = left - sum(given.values())
        # the rest one by one, largest remainder first (ties by name), to children with room
        by_remainder = sorted(open_, key=lambda n: (-(exact[n] - math.floor(exact[n])), n))
        for name in by_remainder:
            if spare and shares[name] + given[name] < room[name]:
                given[name] += 1
                spare -= 1
        for name in open_:
            shares[name] += given[name]
        left = budget - sum(shares.values())
        open_ = [name for name in open_ if shares[name] < room[name]]
        if not any(given.values()):
            break
    for name, child in children.items():
        _share(child, shares[name], counts, capacity, temperature, out)


def primary_types(task_types_column) -> Counter:
    return Counter((types[0] if types else UNTAGGED) for types in task_types_column)
