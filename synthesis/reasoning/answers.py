"""Reading answers back out of replies, and matching them: the teacher path keeps a model's reply
only when its answer matches the generator's, and RL rewards use the same two functions.

``format_ok(reply, mode)``: the reply has exactly the mode's structure (see replies.py).
``extract_answer(reply, mode)``: the answer it gives (inside \\boxed{} when boxed), or None when the
format is broken. ``answers_match(predicted, reference, answer_kind)``: numbers by value (plain
decimals first, then math-verify for LaTeX forms like \\frac{17}{4}), choices and texts by their
normalised text (case, width, spaces and punctuation do not count).
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from synthesis.reasoning.normalise import plain, text_key
from synthesis.reasoning.templates import ModeTemplates

MAX_MATH_CHARS = 200  # longer "answers" are not answers; math-verify runs without a timeout


@lru_cache(maxsize=1)
def default_templates() -> ModeTemplates:
    return ModeTemplates.load()


def _tags(templates: ModeTemplates) -> list[str]:
    t = templates.tags
    return [
        t.think.open,
        t.think.close,
        t.answer.open,
        t.answer.close,
        t.analysis.open,
        t.analysis.close,
        t.code.open,
        t.code.close,
        t.sandbox_output.open,
        t.sandbox_output.close,
    ]


def _split_think(reply: str, templates: ModeTemplates) -> tuple[str, str] | None:
    """(reasoning, answer body) of '<think>R</think> <answer>A</answer>', each tag exactly once."""
    t = templates.tags
    pattern = (
        rf"\s*{re.escape(t.think.open)}(.*?){re.escape(t.think.close)}\s*"
        rf"{re.escape(t.answer.open)}(.*?){re.escape(t.answer.close)}\s*"
    )
    found = re.fullmatch(pattern, reply, re.DOTALL)
    if not found:
        return None
    reasoning, body = found.groups()
    if any(tag in reasoning for tag in (t.think.open, t.think.close, t.answer.open, t.answer.close, t.analysis.open)):
        return None
    if any(tag in body for tag in _tags(templates)):
        return None
    return reasoning, body


def _code_blocks_ok(reasoning: str, templates: ModeTemplates) -> bool:
    """At least one <code>…</code>, each followed by one <sandbox_output>…</sandbox_output>."""
    t = templates.tags
    pattern = (
        rf"{re.escape(t.code.open)}(?:(?!{re.escape(t.code.open)}).)*?{re.escape(t.code.close)}\s*"
        rf"{re.escape(t.sandbox_output.open)}.*?{re.escape(t.sandbox_output.close)}"
    )
    blocks = re.findall(pattern, reasoning, re.DOTALL)
    return bool(blocks) and len(blocks) == reasoning.count(t.code.open) == reasoning.count(
        t.code.close
    ) == reasoning.count(t.sandbox_output.open) == reasoning.count(t.sandbox_output.close)


def _direct_body(reply: str, templates: ModeTemplates) -> str | None:
    """The answer of a reply without reasoning (an empty think block in front is allowed)."""
    t = templates.tags
    rest = re.sub(rf"^\s*{re.escape(t.think.open)}\s*{re.escape(t.think.close)}", "", reply)
    if any(tag in rest for tag in _tags(templates)) or not rest.strip():
        return None
    return rest


def _body(reply: str, mode: str, templates: ModeTemplates) -> str | None:
    if mode == "no_think":
        return _direct_body(reply, templates)
    if mode in ("think", "agentic"):
        split = _split_think(reply, templates)
        if split is None:
            return None
        reasoning, body = split
        if mode == "agentic" and not _code_blocks_ok(reasoning, templates):
            return None
        return body
    if mode == "auto_think":
        a = templates.tags.analysis
        found = re.fullmatch(rf"\s*{re.escape(a.open)}(.*?){re.escape(a.close)}(.*)", reply, re.DOTALL)
        if not found or not found.group(1).strip():
            return None
        rest = found.group(2)
        return _body(rest, "think", templates) if templates.tags.think.open in rest else _direct_body(rest, templates)
    raise ValueError(f"unknown mode {mode!r}")


def format_ok(reply: str, mode: str, templates: ModeTemplates | None = None) -> bool:
    return _body(reply, mode, templates or default_templates()) is not None


def unboxed(text: str) -> str:
    """The content of the last \\boxed{...} (braces balanced), else the text stripped."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return text.strip()
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j].strip()
    return text[i + 1 :].strip()


def extract_answer(reply: str, mode: str, templates: ModeTemplates | None = None) -> str | None:
    body = _body(reply, mode, templates or default_templates())
    return None if body is None else unboxed(body)


def _decimal(text: str) -> Decimal | None:
    cleaned = plain(text).strip("$ ").replace(",", "").replace(" ", "")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def _math_verify(predicted: str, reference: str) -> bool:
    if len(predicted) > MAX_MATH_CHARS:
        return False
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that no timeout is set, per call
    # no signal-based timeouts: they only work in a process's main thread (not in every Spark worker)
    gold = parse(f"${reference}$", parsing_timeout=None)
    guess = parse(predicted if "$" in predicted or "\\" in predicted else f"${predicted}$", parsing_timeout=None)
    return bool(gold and guess and verify(gold, guess, timeout_seconds=None))


def answers_match(predicted: str | None, reference: str, answer_kind: str) -> bool:
    if predicted is None:
        return False
    predicted = unboxed(predicted)
    if answer_kind == "number":
        a, b = _decimal(predicted), _decimal(reference)
        if a is not None and b is not None:
            return a == b
        return _math_verify(plain(predicted), plain(reference))
    if answer_kind in ("choice", "text"):
        return bool(text_key(predicted)) and text_key(predicted) == text_key(reference)
    raise ValueError(f"unknown answer kind {answer_kind!r}; kinds: number, choice, text")
