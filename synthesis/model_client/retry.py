"""The one retry layer: exponential backoff with jitter that honours Retry-After.

Every HTTP attempt either returns or raises CallError. A retryable error (408, 409, 425, 429, 5xx,
a timeout, a lost connection, a 200 whose body is not a completion) is tried again up to
max_retries times. The wait is the server's Retry-After when it sent one (never shorter: a server
that asks for a pause gets it, plus a little jitter so many workers do not return in step), else
"equal jitter" exponential backoff: half of min(backoff_max_s, backoff_s * 2^k) fixed, half random.
A Retry-After longer than backoff_max_s ends the request at once (rejected with the reason)
rather than stalling a job on one row or hammering a server that asked for quiet.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from synthesis.model_client.records import BAD_RESPONSE, CONNECTION_ERROR, TIMEOUT

RETRYABLE_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
T = TypeVar("T")


class CallError(Exception):
    """One failed attempt: a reason code, a detail for people, and whether trying again can help."""

    def __init__(
        self,
        code: str,
        detail: str,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
    ):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.attempts = 1  # set by with_retries to the attempts it made

    def final_code(self) -> str:
        """The Completion reason when this error ends a request."""
        if self.status is not None:
            return f"http_{self.status}_exhausted" if self.retryable else f"http_{self.status}"
        return self.code


def http_error(status: int, detail: str, headers: Mapping[str, str]) -> CallError:
    return CallError(f"http_{status}", detail, status in RETRYABLE_STATUS, parse_retry_after(headers), status)


def timeout_error(detail: str) -> CallError:
    return CallError(TIMEOUT, detail, retryable=True)


def connection_error(detail: str) -> CallError:
    return CallError(CONNECTION_ERROR, detail, retryable=True)


def bad_response(detail: str) -> CallError:
    return CallError(BAD_RESPONSE, detail, retryable=True)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from the response headers, or None. `retry-after-ms` (OpenAI's, finer)
    wins over `Retry-After`, which is delay-seconds or an HTTP-date (RFC 9110, 10.2.3)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass
class Backoff:
    base_s: float
    max_s: float
    rng: random.Random

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds before retry number `retry` (0-based)."""
        if retry_after is not None:
            return retry_after + self.rng.uniform(0, min(self.base_s, 1.0))
        step = min(self.max_s, self.base_s * 2**retry)
        return step / 2 + self.rng.uniform(0, step / 2)


def with_retries(
    attempt: Callable[[], T],
    max_retries: int,
    backoff: Backoff,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """(attempt's result, attempts made); raises the last CallError, its detail saying how many
    attempts were made, once retrying can no longer help."""
    made = 0
    while True:
        made += 1
        try:
            return attempt(), made
        except CallError as exc:
            if not exc.retryable:
                exc.attempts = made
                raise
            if made > max_retries:
                exc.detail = f"{made} attempts; last: {exc.detail}"
                exc.attempts = made
                raise
            wait = backoff.delay(made - 1, exc.retry_after)
            if exc.retry_after is not None and exc.retry_after > backoff.max_s:
                asked = f"server asked to wait {exc.retry_after:.0f} s (Retry-After)"
                exc.detail = f"{asked}, more than backoff_max_s={backoff.max_s:g}; {exc.detail}"
                exc.attempts = made
                raise
            sleep(wait)
