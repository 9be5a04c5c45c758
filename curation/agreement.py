"""How far a panel of judges agrees, from their yes/no votes (TaskGalaxy's judges, or any job that
records votes): each judge's yes rate, the share of items each pair voted alike, and Fleiss' kappa
over the items every judge voted on (agreement beyond what the judges' overall yes rate gives by
chance; 1 = always alike, 0 = chance, below 0 = worse than chance).

    judge_agreement([{"a": True, "b": True, "c": False}, {"a": False, "b": False, "c": False}])

A judge that failed on an item (an error, a timeout: None in its ballot) or is missing from it is
left out of that item's comparisons, and its failures are counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations


def fleiss_kappa(counts: Sequence[tuple[int, int]], weights: Sequence[int] | None = None) -> float | None:
    """Fleiss' kappa of items rated yes/no by the same number m >= 2 of raters: counts are (yes,
    no) per item (or per kind of item, `weights` saying how many items). None when it is
    undefined (no items, or every vote the same)."""
    weights = list(weights) if weights is not None else [1] * len(counts)
    items = sum(weights)
    if not items:
        return None
    m = sum(counts[0])
    if m < 2 or any(sum(c) != m for c in counts):
        raise ValueError("fleiss_kappa: every item needs the same number (>= 2) of votes")
    agreement = sum(w * (yes * yes + no * no - m) / (m * (m - 1)) for (yes, no), w in zip(counts, weights)) / items
    p_yes = sum(w * yes for (yes, _), w in zip(counts, weights)) / (m * items)
    chance = p_yes**2 + (1 - p_yes) ** 2
    return None if chance == 1 else (agreement - chance) / (1 - chance)


def judge_agreement(ballots: Sequence[Mapping[str, bool | None]], counts: Sequence[int] | None = None) -> dict:
    """ballots: per item, {judge: vote, or None where the judge failed}; or, with `counts`, each
    distinct ballot once and how many items cast it (what a Spark groupBy gives at scale)."""
    counts = list(counts) if counts is not None else [1] * len(ballots)
    judges = sorted({j for ballot in ballots for j in ballot})
    voted = [({j: v for j, v in b.items() if v is not None}, n) for b, n in zip(ballots, counts)]
    per_judge = {j: {"votes": sum(n for b, n in voted if j in b), "yes": sum(n for b, n in voted if b.get(j) is True),
                     "failed": sum(n for b, n in zip(ballots, counts) if j in b and b[j] is None)} for j in judges}
    pairs = {}
    for a, b in combinations(judges, 2):
        both = [(ballot, n) for ballot, n in voted if a in ballot and b in ballot]
        items, alike = sum(n for _, n in both), sum(n for ballot, n in both if ballot[a] == ballot[b])
        pairs[f"{a} / {b}"] = {"items": items, "agreement": round(alike / items, 4) if items else None}
    complete = [((sum(b.values()), len(b) - sum(b.values())), n) for b, n in voted if len(b) == len(judges)]
    kappa = fleiss_kappa([c for c, _ in complete], [n for _, n in complete]) if len(judges) >= 2 else None
    return {"items": sum(counts), "judges": per_judge, "pairs": pairs, "items_every_judge_voted": sum(n for _, n in complete),
            "fleiss_kappa": None if kappa is None else round(kappa, 4)}


def ballot(votes: Sequence[Mapping]) -> dict[str, bool | None]:
    """{judge: vote, None where it failed} from recorded votes ([{"judge", "vote"} | {"judge",
    "error"}], as rows keep them in extra.votes)."""
    return {v["judge"]: bool(v["vote"]) if "vote" in v else None for v in votes}


def votes_detail(votes: Sequence[Mapping]) -> str:
    """A refused row's detail naming every judge's vote: `votes=a:yes,b:no,c:timeout`."""
    said = [f"{v['judge']}:{('yes' if v['vote'] else 'no') if 'vote' in v else v.get('error', 'error')}" for v in votes]
    return "votes=" + ",".join(said)


def ballot_from_detail(detail: str) -> dict[str, bool | None] | None:
    """The ballot in a `votes_detail` text, or None when the text is not one."""
    if not detail or not detail.startswith("votes="):
        return None
    found = {}
    for entry in detail[len("votes="):].split(","):
        judge, _, said = entry.rpartition(":")
        if judge:
            found[judge] = {"yes": True, "no": False}.get(said)
    return found
