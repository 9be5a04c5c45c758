"""Judging one reply: is it an answer (non-empty, not a refusal, valid against the schema)?

Shared by every backend, so "an empty string is never an answer" and "a reply that breaks the
schema is re-asked, then rejected" hold whoever generated the text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from synthesis.model_client.backend import Choice
from synthesis.model_client.records import EMPTY_REPLY, MALFORMED_JSON, REFUSAL, SCHEMA_VIOLATION
from synthesis.model_client.schema_check import first_violation

# A reasoning model's thinking before its answer, and a Markdown fence around a JSON answer: both
# are stripped before parsing (models without constrained decoding add them), never from `texts`.
_LEADING_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n(.*?)\n?```$", re.DOTALL)
SHOWN = 200  # characters of a failed reply kept in a detail


@dataclass
class Verdict:
    ok: bool
    code: str | None = None  # a records reason code when not ok
    reason: str = ""  # what was wrong, for the detail and the re-ask message
    parsed: Any = None


def judge(choice: Choice, schema: dict | None) -> Verdict:
    text = choice.text
    if not text.strip():
        if choice.refusal:
            return Verdict(False, REFUSAL, f"the model refused: {shorten(choice.refusal)}")
        why = f" (finish_reason {choice.finish_reason})" if choice.finish_reason else ""
        return Verdict(False, EMPTY_REPLY, f"the reply was empty{why}")
    if schema is None:
        return Verdict(True)
    try:
        value = parse_json(text)
    except ValueError as exc:
        return Verdict(False, MALFORMED_JSON, f"the reply is not JSON ({exc}): {shorten(text)}")
    problem = first_violation(value, schema)
    if problem:
        return Verdict(False, SCHEMA_VIOLATION, f"the reply breaks the schema at {problem}")
    return Verdict(True, parsed=value)


def parse_json(text: str) -> Any:
    body = _LEADING_THINK.sub("", text, count=1).strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    return json.loads(body)


def reask_turns(bad_text: str, reason: str, schema: dict) -> list[dict]:
    """The turns appended to a conversation whose reply failed its schema: the reply itself, then
    what was wrong and the schema, so a model without constrained decoding can correct itself."""
    schema_text = json.dumps(schema, ensure_ascii=False, sort_keys=True)
    return [
        {"role": "assistant", "content": [{"type": "text", "text": bad_text}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": f"That reply cannot be used: {reason}. Answer again with only a JSON value "
                    f"that satisfies this JSON schema, no other text: {schema_text}",
                }
            ],
        },
    ]


def shorten(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."
