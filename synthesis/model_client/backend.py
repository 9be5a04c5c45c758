"""What the client hands a backend (Call) and gets back (Reply), and the interface between them.

A backend turns calls into replies and nothing more: retries live in the HTTP backend's single
retry layer, while re-asks, schema checks, the cache and the final Completion are the client's,
the same for every backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from synthesis.model_client.retry import CallError


@dataclass
class Call:
    messages: list[dict]  # checked messages (content.checked_messages)
    images: list[bytes]
    # The effective sampling parameters: n, temperature, top_p, seed, max_tokens, logprobs,
    # top_logprobs, extra_body (config values with the request's overrides on top).
    params: dict[str, Any]
    schema: dict | None = None


@dataclass
class Choice:
    text: str
    finish_reason: str = ""
    reasoning: str = ""
    logprobs: list[dict] | None = None
    refusal: str | None = None


@dataclass
class Reply:
    choices: list[Choice]
    usage: dict = field(default_factory=dict)
    attempts: int = 1


class Backend(Protocol):
    def run(self, calls: list[Call]) -> list[Reply | CallError]:
        """One Reply or CallError per call, in order; never raises for a single call's failure."""

    def close(self) -> None: ...
