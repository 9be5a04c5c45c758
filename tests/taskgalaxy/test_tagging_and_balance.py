"""Tagging accuracy on a labelled set written for it, the allocation's caps, determinism and
entropy, and `build_sft` end to end on shards made here (in-process Spark)."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from labelled_questions import LABELLED  # noqa: E402

from curation import config as configuration  # noqa: E402
from curation import schema  # noqa: E402
from taskgalaxy.balance import UNTAGGED, allocate, entropy  # noqa: E402


@pytest.fixture(scope="module")
def index():
    from taskgalaxy.embed import text_embedder
    from taskgalaxy.tagging import TypeIndex
    from taskgalaxy.taxonomy import Taxonomy

    return TypeIndex(Taxonomy.load(), text_embedder())


def test_tagging_accuracy_at_the_first_and_second_level(index):
    tags = index.tag([q for q, _ in LABELLED], threshold=0.0)
    l1 = sum(t[0][0].split("~")[0] == want.split("~")[0] for t, (_, want) in zip(tags, LABELLED)) / len(LABELLED)
    l2 = sum("~".join(t[0][0].split("~")[:2]) == want for t, (_, want) in zip(tags, LABELLED)) / len(LABELLED)
    print(f"tagging top-1 accuracy on {len(LABELLED)} questions: L1 {l1:.3f}, L2 {l2:.3f}")
    assert len(LABELLED) >= 100 and l1 >= 0.9 and l2 >= 0.8


def test_threshold_and_empty_text(index):
    [none, empty] = index.tag(["zxqv blorp frumious", ""], threshold=0.9)
    assert none == [] and empty == []
    [three] = index.tag(["How many apples are on the table?"], threshold=0.0, top_k=3)
    assert len(three) == 3 and three[0][1] >= three[1][1] >= three[2][1]


SKEWED = {"a~x~1": 900, "a~x~2": 40, "a~y~1": 30, "b~z~1": 12, "b~z~2": 3, UNTAGGED: 15}


def test_allocation_meets_caps_and_totals_exactly():
    quota = allocate(SKEWED, total=120, cap=50, temperature=0.5)  # the caps allow 150
    assert sum(quota.values()) == 120 and all(quota[t] <= min(50, n) for t, n in SKEWED.items())
    # everything the caps allow when the total asks for more than there is
    full = allocate(SKEWED, total=10_000, cap=50)
    assert full == {t: min(n, 50) for t, n in SKEWED.items()}
    # temperature 0 at a level: equal shares where there is room (a: 200 / 2 families ... )
    flat = allocate({"a~x~1": 500, "b~y~1": 500, "c~z~1": 500}, total=90, temperature=0.0)
    assert flat == {"a~x~1": 30, "b~y~1": 30, "c~z~1": 30}
    # temperature 1 keeps proportions
    assert allocate({"a~x~1": 300, "b~y~1": 100}, total=40, temperature=1.0) == {"a~x~1": 30, "b~y~1": 10}


def test_allocation_is_deterministic_and_raises_entropy():
    items = list(SKEWED.items())
    random.Random(3).shuffle(items)
    assert allocate(dict(items), 200, 50, 0.5) == allocate(SKEWED, 200, 50, 0.5)
    quota = allocate(SKEWED, 200, 50, 0.5)
    assert entropy(quota) > entropy(SKEWED) + 1.0


def _rows() -> list[dict]:
    """A skewed pool: every labelled question once, counting questions 60 times more, a few
    rows that already have a type."""
    m = schema.message
    rows = []
    for k, (question, _) in enumerate(LABELLED):
        rows.append(schema.make_row("labelled", "vqa", [m("user", question), m("assistant", f"answer {k}")]))
    for k in range(60):
        rows.append(schema.make_row("apples", "vqa", [m("user", f"How many apples are in basket {k}?"), m("assistant", str(k))]))
    for k in range(5):
        rows.append(schema.make_row("typed", "vqa", [m("user", f"Q{k}"), m("assistant", "A")], task_types=["my~own~type"]))
    return rows


def test_build_sft_tags_balances_and_repeats_itself(spark, tmp_path, index):
    from jobs.build_sft import BuildSftConfig, run
    from taskgalaxy.tagging import question_text

    src = tmp_path / "pool"
    src.mkdir()
    pq.write_table(schema.rows_to_table(_rows()), src / "part-00000.parquet")
    args = [f"sources={src}", "balance.total=100", "balance.cap=10", "card=false"]
    manifest = run(configuration.load(BuildSftConfig, args + [f"output={tmp_path / 'one'}"]), spark)
    kept = pq.read_table(tmp_path / "one" / manifest["shards"][0]["path"]).to_pylist()
    rejects = pq.read_table(tmp_path / "one" / "_rejects").to_pylist()
    assert len(kept) == 100 and len(kept) + len(rejects) == len(_rows())
    assert {r["reason"] for r in rejects} == {"balanced_out"}
    types = Counter(r["task_types"][0] if r["task_types"] else UNTAGGED for r in kept)
    assert max(types.values()) <= 10 and types["my~own~type"] == 5  # existing types kept as they were
    # the job's tags are the tagger's, row for row (the question only, not the answer)
    tagged = [r for r in kept if r["source"] != "typed"]
    direct = index.tag([question_text(r["messages"]) for r in tagged], threshold=0.25)
    assert [r["task_types"] for r in tagged] == [[p for p, _ in d] for d in direct]
    apples = [r for r in kept if r["source"] == "apples"]
    assert sum(r["task_types"][0].startswith("counting~") for r in apples) >= 0.8 * len(apples)
    stats = {s["step"]: s["stats"] for s in json.loads((tmp_path / "one" / "_stats.json").read_text())["steps"]}
    balance = stats["balance_mixture"]
    assert balance["entropy_bits_after"] > balance["entropy_bits_before"]
    from curation.card import build_card  # the card (rebuilt from the folder) reports the balancing

    card = build_card(tmp_path / "one").read_text()
    assert (f"entropy over types {balance['entropy_bits_before']:.3f} bits before, {balance['entropy_bits_after']:.3f} after; "
            f"{balance['taxonomy_coverage']['with_a_kept_row']:,} of the taxonomy's 312 leaf types have a kept row") in card
    funnel = json.loads((tmp_path / "one" / "_funnel.json").read_text())
    assert funnel["input_rows"] == len(_rows()) and funnel["kept_rows"] == 100
    # the same rows from a second run (another output folder, fresh work)
    again = run(configuration.load(BuildSftConfig, args + [f"output={tmp_path / 'two'}"]), spark)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
