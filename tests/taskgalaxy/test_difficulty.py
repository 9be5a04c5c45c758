"""Difficulty by pass rate, in build_sft against an OpenAI-compatible server on 127.0.0.1 whose
solvers answer by rule (the client, answer matching and the step are the real ones).

Questions are "What is A + B? [level]"; with samples=4 and the models solver-a, solver-b and
solver-down (always 503):
    easy    both solvers always right            8/8 = 1.00 > 0.75 -> too_easy
    medium  solver-a right, solver-b half right  6/8 = 0.75        -> kept (not above)
    hard    both always wrong                    0/8 < 0.10        -> too_hard
    open    a long reference, graded by `grader`: solver-a repeats it, solver-b does not -> 4/8
The pass rates are computed here by hand from those rules and compared with extra.difficulty.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation import config as configuration
from curation import schema
from synthesis.model_client.rule_server import RuleServer, completion, user_texts
from taskgalaxy.difficulty import answer_kind, is_open, reference_of

OPEN_REFERENCE = "a red ball on a wooden table next to the open window"


def solver_reply(body: dict) -> tuple[int, dict]:
    model, text = body["model"], " ".join(user_texts(body))
    if model == "solver-down":
        return 503, {"error": {"message": "overloaded"}}
    if model == "grader":
        reference, candidate = re.search(r"Reference answer: (.*)\nCandidate answer: (.*)\n", text).groups()
        return 200, completion(body, [json.dumps({"same": reference.strip() == candidate.strip()})])
    if "[open]" in text:
        right, wrong = f"\\boxed{{{OPEN_REFERENCE}}}", "\\boxed{a blue cube}"
        return 200, completion(body, [right if model == "solver-a" else wrong])
    a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", text).groups())
    right, wrong = f"\\boxed{{{a + b}}}", f"\\boxed{{{a + b + 1}}}"
    level = re.search(r"\[(\w+)\]", text).group(1)
    replies = {"easy": [right], "hard": [wrong], "medium": [right] if model == "solver-a" else [right, wrong]}[level]
    return 200, completion(body, replies)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


def _qa(question: str, answer: str | None, use_answer_column: bool = False) -> dict:
    m = schema.message
    turns = [m("user", schema.image_part(0), question)] + ([] if answer is None or use_answer_column else [m("assistant", answer)])
    return schema.make_row("qa", "vqa", turns, [schema.image_entry(_png())],
                           answer=answer if use_answer_column else None, task_types=["counting~x~y"])


ROWS = {
    "easy": _qa("What is 2 + 3? [easy]", "5"),
    "medium": _qa("What is 4 + 4? [medium]", "8", use_answer_column=True),
    "hard": _qa("What is 1 + 9? [hard]", "10"),
    "open": _qa("Describe the scene. [open]", OPEN_REFERENCE),
    "no_reference": _qa("What is 7 + 1? [easy]", None),
    "multi_turn": schema.make_row("qa", "vqa", [schema.message("user", schema.image_part(0), "What is 1 + 1? [easy]"),
                                                schema.message("assistant", "2"), schema.message("user", "And 2 + 2? [easy]"),
                                                schema.message("assistant", "4")], [schema.image_entry(_png())]),
}
EXPECTED_RATE = {"easy": 1.0, "medium": 0.75, "hard": 0.0, "open": 0.5}


def _run(src: Path, out: Path, server: RuleServer, spark, *extra_args: str):
    from jobs.build_sft import BuildSftConfig, run

    args = [f"sources={src}", f"output={out}", "card=false", "keep_work=true", "difficulty.enabled=true",
            f"difficulty.client.base_urls=[{server.url}]", "difficulty.client.max_retries=0",
            "difficulty.client.backoff_s=0.01", "difficulty.models=[solver-a,solver-b,solver-down]",
            "difficulty.samples=4", "difficulty.min_pass_rate=0.1", "difficulty.grader_model=grader", *extra_args]
    manifest = run(configuration.load(BuildSftConfig, args), spark)
    kept = [r for s in manifest["shards"] for r in pq.read_table(out / s["path"]).to_pylist()]
    rejects = pq.read_table(out / "_rejects").to_pylist() if (out / "_rejects").exists() else []
    steps = json.loads((out / "_stats.json").read_text())
    return kept, rejects, steps


def test_pass_rates_refusals_and_a_new_threshold_without_asking_again(spark, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    caption = schema.caption_row("pics", _png(), "a red square")
    rows = [*ROWS.values(), caption]
    pq.write_table(schema.rows_to_table(rows), src / "part-00000.parquet")
    name = {r["id"]: k for k, r in ROWS.items()}
    with RuleServer(solver_reply) as server:
        kept, rejects, steps = _run(src, tmp_path / "out", server, spark)
        asked_first = len(server.requests)
        # the same output again (its work folder kept), with a stricter threshold
        kept2, rejects2, steps2 = _run(src, tmp_path / "out", server, spark, "difficulty.max_pass_rate=0.7")
        asked_second = len(server.requests) - asked_first
    assert len(kept) + len(rejects) == len(rows)
    refused = {name[r["id"]]: r for r in rejects}
    assert {k: r["reason"] for k, r in refused.items()} == {"easy": "too_easy", "hard": "too_hard"}
    assert refused["easy"]["step"] == "difficulty" and "8 of 8" in refused["easy"]["detail"]
    records = {name.get(r["id"], "caption"): json.loads(r["extra"]) for r in kept}
    assert "difficulty" not in records["caption"]  # a caption is not a question
    assert records["no_reference"]["difficulty"] == {"unscored": "no_reference"}
    assert records["multi_turn"]["difficulty"] == {"unscored": "multi_turn"}
    for level in ("medium", "open"):
        record = records[level]["difficulty"]
        assert record["pass_rate"] == EXPECTED_RATE[level] and record["asked"] == 8
        assert record["models"]["solver-down"]["error"].startswith("http_503")
    assert records["medium"]["difficulty"]["models"]["solver-b"] == {"asked": 4, "correct": 2}
    assert records["open"]["difficulty"]["answer_kind"] == "open"
    stats = next(s for s in steps["steps"] if s["step"] == "difficulty")["stats"]
    assert stats["scored"] == 4 and stats["too_easy"] == 1 and stats["too_hard"] == 1
    assert stats["unscored"] == {"multi_turn": 1, "no_reference": 1} and stats["answers_reused"] is False
    assert stats["model_errors"] == {"solver-down: http_503_exhausted": 4}
    # a stricter threshold: medium (0.75) is now too easy, from the persisted answers
    assert {name[r["id"]]: r["reason"] for r in rejects2} == {"easy": "too_easy", "medium": "too_easy", "hard": "too_hard"}
    stats2 = next(s for s in steps2["steps"] if s["step"] == "difficulty")["stats"]
    assert stats2["answers_reused"] is True and asked_second == 0


def test_reference_and_answer_kind():
    assert reference_of({"answer": "42", "messages": []}) == "42"
    turns = [{"role": "user", "content": [{"type": "text", "text": "q"}]},
             {"role": "assistant", "content": [{"type": "text", "text": " The answer is B "}]}]
    assert reference_of({"answer": None, "messages": turns}) == "The answer is B"
    assert reference_of({"answer": None, "messages": turns[:1]}) is None
    assert answer_kind("3.50", {}) == "number" and answer_kind("\\boxed{12}", {}) == "number"
    assert answer_kind("(C)", {}) == "choice" and answer_kind("b", {}) == "choice"
    assert answer_kind("a cat", {}) == "text" and answer_kind("12", {"answer_kind": "text"}) == "text"
    assert is_open(OPEN_REFERENCE, "text", 8) and not is_open("a cat", "text", 8) and not is_open(OPEN_REFERENCE, "number", 8)


def test_bad_settings_stop_before_work():
    from taskgalaxy.difficulty import DifficultyConfig, RateDifficulty

    with pytest.raises(ValueError, match="min_pass_rate"):
        RateDifficulty(DifficultyConfig(enabled=True, max_pass_rate=0.2, min_pass_rate=0.5)).preflight()
    with pytest.raises(ValueError, match="models"):
        RateDifficulty(DifficultyConfig(enabled=True, models=[])).preflight()
