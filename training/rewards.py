"""Rewards for RL and rejection sampling: named functions of (reply, row, mode) in [0, 1], and a
model judge through the model client.

    scores = score_replies(replies, rows, modes, weights, settings, judge=client)
    scores["total"][i]      # the weighted sum the advantages are computed from
    scores["correctness"][i], scores["format"][i], ...   # each reward, for metrics and pair data

Rule rewards (registry `RULE_REWARDS`):
- correctness: the reply's final answer (its mode's structure, \\boxed{} when boxed) against the
  row's `answer`, by the row's answer kind (synthesis.reasoning.answers: numbers by value, then
  math-verify; choices and texts by normalised text). A malformed reply has no answer: 0.
- format: the reply has exactly its mode's structure (think: a closed think block then the answer;
  no_think: no thinking at all; auto_think: the analysis then either; synthesis.reasoning.answers).
- repetition: 1 - the share of repeated word n-grams (character n-grams for text without spaces).
- length: 1 up to `length_target` characters, target / length beyond.
The judge (Keye's RL: a large model scores the final answer's correctness and whether the
reasoning supports it) asks for JSON {"correct": bool, "consistent": bool} and gives the mean of
the two; a request that fails (after the client's retries and re-asks) scores 0 and is counted.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from synthesis.reasoning.answers import answers_match, extract_answer, format_ok


@dataclass
class RewardSettings:
    repetition_ngram: int = 4
    length_target: int = 2000  # characters


def answer_kind(row: Mapping) -> str:
    kind = json.loads(row.get("extra") or "{}").get("answer_kind")
    return kind if kind in ("number", "choice", "text") else "text"


def correctness(reply: str, row: Mapping, mode: str, settings: RewardSettings) -> float:
    answer = row.get("answer")
    if not answer:
        return 0.0
    return float(answers_match(extract_answer(reply, mode), answer, answer_kind(row)))


def format_reward(reply: str, row: Mapping, mode: str, settings: RewardSettings) -> float:
    return float(format_ok(reply, mode))


def repeat_ratio(text: str, n: int = 4) -> float:
    """Share of the text's n-grams that repeat an earlier one: words, or characters where the text
    has no spaces (Chinese); 0 for a text shorter than n."""
    words = text.split()
    units = words if len(words) > 1 else list(text.strip())
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def repetition(reply: str, row: Mapping, mode: str, settings: RewardSettings) -> float:
    return 1.0 - repeat_ratio(reply, settings.repetition_ngram)


def length(reply: str, row: Mapping, mode: str, settings: RewardSettings) -> float:
    chars = len(reply)
    return 1.0 if chars <= settings.length_target else settings.length_target / chars


RULE_REWARDS: dict[str, Callable[[str, Mapping, str, RewardSettings], float]] = {
    "correctness": correctness,
    "format": format_reward,
    "repetition": repetition,
    "length": length,
}
REWARD_NAMES = (*RULE_REWARDS, "judge")

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"correct": {"type": "boolean"}, "consistent": {"type": "boolean"}},
    "required": ["correct", "consistent"],
    "additionalProperties": False,
}
JUDGE_PROMPT = (
    "You grade an answer to a question. Reference answer: {answer}\n\n"
    "Question:\n{question}\n\nResponse to grade:\n{reply}\n\n"
    "Reply with JSON: \"correct\" is true when the response's final answer equals the reference answer; "
    "\"consistent\" is true when the response's reasoning supports its own final answer (true when there is "
    "no reasoning)."
)


def question_text(row: Mapping) -> str:
    return "\n".join(p.get("text") or "" for m in row["messages"] if m["role"] == "user"
                     for p in m["content"] if p["type"] == "text").strip()


def judge_scores(client, replies: Sequence[str], rows: Sequence[Mapping], failures: Counter) -> list[float]:
    """The judge's score per reply (see the module docstring); images go with the question."""
    from synthesis.model_client.records import ChatRequest

    requests = []
    for i, (reply, row) in enumerate(zip(replies, rows)):
        text = JUDGE_PROMPT.format(answer=row.get("answer") or "", question=question_text(row), reply=reply)
        images = [image["bytes"] for image in row.get("images") or ()]
        content = [{"type": "image", "index": k} for k in range(len(images))] + [{"type": "text", "text": text}]
        requests.append(ChatRequest(id=str(i), messages=[{"role": "user", "content": content}], images=images,
                                    overrides={"response_schema": JUDGE_SCHEMA, "temperature": 0.0}))
    scores = []
    for completion in client.chat(requests):
        if not completion.ok or not completion.parsed:
            failures[completion.error or "no_verdict"] += 1
            scores.append(0.0)
            continue
        verdict = completion.parsed[0]
        scores.append((float(bool(verdict["correct"])) + float(bool(verdict["consistent"]))) / 2)
    return scores


def score_replies(replies: Sequence[str], rows: Sequence[Mapping], modes: Sequence[str],
                  weights: Mapping[str, float], settings: RewardSettings, judge=None,
                  judge_failures: Counter | None = None) -> dict[str, list[float]]:
    """Every reward with a non-zero weight per reply, and "total", their weighted sum."""
    unknown = sorted(set(weights) - set(REWARD_NAMES))
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; rewards: {', '.join(REWARD_NAMES)}")
    scores: dict[str, list[float]] = {}
    for name, function in RULE_REWARDS.items():
        if weights.get(name):
            scores[name] = [function(r, row, m, settings) for r, row, m in zip(replies, rows, modes)]
    if weights.get("judge"):
        if judge is None:
            raise ValueError("the judge reward has a weight but no judge client is configured")
        scores["judge"] = judge_scores(judge, replies, rows, judge_failures if judge_failures is not None else Counter())
    scores["total"] = [sum(weights[name] * values[i] for name, values in scores.items()) for i in range(len(replies))]
    return scores
