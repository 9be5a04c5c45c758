"""What goes into the client and what comes out: ChatRequest, Completion, and the reason codes.

A request's messages follow the sample contract (curation.schema): turns of
``{"role": "system"|"user"|"assistant", "content": [{"type": "text", "text": ...} | {"type": "image", "index": i}]}``
where ``index`` points into the request's ``images`` (encoded bytes: JPEG, PNG, WebP, GIF or BMP).

A Completion either succeeded (``error is None``: exactly n texts, each non-empty, each valid
against the response schema when one is set, then ``parsed`` holds the decoded JSON) or failed
with one reason code below and a human-readable ``detail``. The client never raises for a failed
request and never passes an empty string off as an answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Reason codes of a failed Completion (Completion.error).
BAD_REQUEST = (
    "bad_request"  # the request itself cannot be sent: unknown role or part, image index out of range, bad override
)
BAD_IMAGE = "bad_image"  # image bytes of a format no server reads (not JPEG/PNG/WebP/GIF/BMP)
TIMEOUT = "timeout"  # every attempt timed out (retried max_retries times)
CONNECTION_ERROR = "connection_error"  # every attempt failed to connect or lost the connection
BAD_RESPONSE = "bad_response"  # every attempt got a 200 whose body is not a chat completion (not JSON, no choices)
# http_<status>_exhausted: a retryable status (408, 409, 425, 429, 5xx) on every attempt, or a
# Retry-After longer than backoff_max_s; http_<status>: a status retrying cannot fix (400, 401, 404, ...).
MISSING_CHOICES = "missing_choices"  # the server returned fewer than n choices (it ignores `n`)
EMPTY_REPLY = "empty_reply"  # a reply was empty (or whitespace) after every re-ask
REFUSAL = "refusal"  # the model refused (OpenAI's message.refusal), after every re-ask
MALFORMED_JSON = "malformed_json"  # a schema is set and a reply was not JSON, after every re-ask
SCHEMA_VIOLATION = "schema_violation"  # a reply was JSON that breaks the schema, after every re-ask
PROMPT_TOO_LONG = "prompt_too_long"  # transformers backend: the prompt leaves no room for max_tokens
IMAGES_UNSUPPORTED = "images_unsupported"  # transformers backend: a text-only model was given images
GENERATION_ERROR = "generation_error"  # transformers backend: generate raised for this request
CLIENT_ERROR = "client_error"  # an unexpected error inside the client for this request (a bug to report)


@dataclass
class ChatRequest:
    id: str
    messages: list[dict]
    images: list[bytes] = field(default_factory=list)
    # Per-request sampling settings over the config's (see config.OVERRIDABLE), e.g. {"n": 8, "temperature": 1.0}.
    overrides: dict = field(default_factory=dict)


@dataclass
class Completion:
    request_id: str
    # n replies when error is None; on error, the replies that passed so far (fewer than n), for a
    # look in the rejects, never for use.
    texts: list[str] = field(default_factory=list)
    error: str | None = None
    detail: str | None = None
    # Per text, the chosen tokens as [{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]
    # when logprobs were asked for, else None.
    logprobs: list[list[dict]] | None = None
    usage: dict = field(
        default_factory=dict
    )  # prompt_tokens, completion_tokens, total_tokens over every attempt and re-ask
    cached: bool = False
    parsed: list[Any] | None = None  # per text, its JSON value when a response schema is set
    finish_reasons: list[str] = field(default_factory=list)  # per text: stop, length, ...
    reasoning: list[str] = field(default_factory=list)  # per text: a reasoning parser's separate thinking ("" if none)
    attempts: int = 0  # backend calls made for this request (HTTP attempts incl. retries, plus re-asks)

    @property
    def ok(self) -> bool:
        return self.error is None
