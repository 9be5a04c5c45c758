"""Judge agreement against numbers worked out by hand (see each test)."""

from __future__ import annotations

import pytest

from curation.agreement import ballot, ballot_from_detail, fleiss_kappa, judge_agreement, votes_detail


def test_agreement_of_three_judges_by_hand():
    # a = Y Y Y N, b = Y Y N N, c = Y N N N over four items
    a, b, c = [True, True, True, False], [True, True, False, False], [True, False, False, False]
    found = judge_agreement([{"a": x, "b": y, "c": z} for x, y, z in zip(a, b, c)])
    # pairs: a/b alike on items 1, 2, 4; a/c on 1, 4; b/c on 1, 3, 4
    assert {p: v["agreement"] for p, v in found["pairs"].items()} == {"a / b": 0.75, "a / c": 0.5, "b / c": 0.75}
    assert found["judges"] == {"a": {"votes": 4, "yes": 3, "failed": 0}, "b": {"votes": 4, "yes": 2, "failed": 0},
                               "c": {"votes": 4, "yes": 1, "failed": 0}}
    # Fleiss: per item P_i = 1, 1/3, 1/3, 1 -> mean 2/3; p_yes = 6/12 -> chance 1/2; (2/3 - 1/2) / (1/2) = 1/3
    assert found["fleiss_kappa"] == pytest.approx(1 / 3, abs=1e-4) and found["items_every_judge_voted"] == 4


def test_missing_votes_and_undefined_kappa():
    found = judge_agreement([{"a": True, "b": True}, {"a": True, "b": None}, {"a": True, "b": False}])
    assert found["pairs"]["a / b"] == {"items": 2, "agreement": 0.5}
    assert found["judges"]["b"] == {"votes": 2, "yes": 1, "failed": 1}
    assert found["items_every_judge_voted"] == 2  # the item b failed on is not one
    assert fleiss_kappa([(2, 0), (2, 0)]) is None  # every vote yes: chance agreement is 1
    assert fleiss_kappa([(2, 0), (0, 2)]) == 1.0
    with pytest.raises(ValueError):
        fleiss_kappa([(2, 0), (1, 0)])


def test_ballots_round_trip_through_a_reject_detail():
    votes = [{"judge": "j-1", "vote": True}, {"judge": "j:2", "vote": False}, {"judge": "j-3", "error": "timeout"}]
    text = votes_detail(votes)
    assert text == "votes=j-1:yes,j:2:no,j-3:timeout"
    assert ballot_from_detail(text) == ballot(votes) == {"j-1": True, "j:2": False, "j-3": None}
    assert ballot_from_detail("score 0.1 < 0.2") is None


def test_counted_ballots_equal_the_ballots_written_out():
    kinds = [{"a": True, "b": True, "c": False}, {"a": False, "b": False, "c": False}, {"a": True, "b": None, "c": True}]
    counts = [5, 2, 3]
    written_out = [k for k, n in zip(kinds, counts) for _ in range(n)]
    assert judge_agreement(kinds, counts) == judge_agreement(written_out)
