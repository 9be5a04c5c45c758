"""Iterative alignment: two rounds of (sample from the current weights, score, pair best against
worst, write a preference folder with its card, MPO from the current weights), and a run that dies
between rounds resumed by the same call to the same bytes."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from keye_helpers import write_shards
from safetensors.torch import load_file

from curation.schema import make_row, message

ARGS = ("stage=iterative_alignment", "alignment.rounds=2", "alignment.prompts=4", "alignment.margin=0.001",
        "max_steps=2", "max_tokens=512", "rl.group_size=4", "rl.max_new_tokens=8", "rl.top_k=4",
        "rl.rewards.correctness=0", "rl.rewards.format=0", "rl.rewards.repetition=0", "rl.rewards.length=1",
        "rl.length_target=12", "optimizer.lr=1e-3", "shuffle_buffer=4", "ledger=false")


class DiedBetweenRounds(Exception):
    pass


def test_two_rounds_write_pair_folders_with_cards_and_resume_between_rounds(tmp_path, monkeypatch):
    import training.alignment
    from training.launch import run
    from training.stages import load_stage
    from training.tasks.preference import reference_name

    rows = [make_row("synthetic", "rl", [message("user", f"Name a number below {i}.")], answer=str(i),
                     extra={"answer_kind": "number"}) for i in range(8)]
    folder = write_shards(tmp_path / "prompts", rows)
    args = [*ARGS, f"data={folder}"]
    run(load_stage([*args, f"output={tmp_path / 'straight'}"]))
    straight = tmp_path / "straight"
    in_order = pq.read_table(folder / "part-00000.parquet", columns=["id"]).column("id").to_pylist()
    for round_index, prompt_ids in ((1, in_order[:4]), (2, in_order[4:])):  # round r: the next 4 prompts
        pairs = straight / f"round_{round_index}" / "pairs"
        manifest = json.loads((pairs / "_manifest.json").read_text())
        funnel = json.loads((pairs / "_funnel.json").read_text())
        step = funnel["steps"][0]
        assert step["in"] == 4 == step["out"] + sum(step["rejected"].values())  # every prompt accounted for
        assert manifest["rows"] == step["out"] > 0 and (pairs / "card" / "README.md").is_file()
        table = pq.read_table(pairs / "part-00000.parquet").to_pylist()
        assert {r["kind"] for r in table} == {"preference"}
        for row in table:
            extra = json.loads(row["extra"])
            assert extra["round"] == round_index and extra["prompt_id"] in prompt_ids
            assert extra["margin"] >= 0.001
            assert extra["scores_chosen"]["total"] - extra["scores_rejected"]["total"] == pytest.approx(extra["margin"])
            assert row["messages"][:-1] == row["rejected"][:-1]  # same prompt, two replies
        assert (straight / f"round_{round_index}" / "train" / "export" / "model.safetensors").is_file()
    # round 2 starts from round 1's weights, and its MPO reference is those weights
    report = (straight / "round_2" / "train" / "report.md").read_text()
    assert str(straight / "round_1" / "train" / "export") in report
    assert reference_name(load_stage([*args, f"init={straight / 'round_1' / 'train' / 'export'}"])) in report
    assert "2 rounds" in (straight / "report.md").read_text()

    sample_pairs = training.alignment.sample_pairs

    def dies_at_round_2(cfg, source, round_index, target):
        if round_index == 2:
            raise DiedBetweenRounds
        return sample_pairs(cfg, source, round_index, target)

    monkeypatch.setattr(training.alignment, "sample_pairs", dies_at_round_2)
    killed = tmp_path / "killed"
    with pytest.raises(DiedBetweenRounds):
        run(load_stage([*args, f"output={killed}"]))
    assert (killed / "round_1" / "train" / "export").is_dir() and not (killed / "round_2").exists()
    monkeypatch.setattr(training.alignment, "sample_pairs", sample_pairs)
    run(load_stage([*args, f"output={killed}"]))
    for round_index in (1, 2):
        here = f"round_{round_index}"
        assert (killed / here / "pairs" / "part-00000.parquet").read_bytes() == \
            (straight / here / "pairs" / "part-00000.parquet").read_bytes()
    a = load_file(str(straight / "round_2" / "train" / "export" / "model.safetensors"))
    b = load_file(str(killed / "round_2" / "train" / "export" / "model.safetensors"))
    assert [k for k in a if not a[k].equal(b[k])] == []
