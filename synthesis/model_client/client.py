"""ModelClient: requests in, one Completion per request out, in order; a failure is a Completion
with a reason, never an exception.

Per chat() call:
  1. each request is checked (roles, parts, image indices, overrides) and keyed; a bad one ends
     as `bad_request` at once, a cached one is served from disk;
  2. the rest go to the backend together (HTTP: `concurrency` at a time, each through the retry
     layer; transformers: batched generate);
  3. every reply is judged (non-empty, not a refusal, valid against the schema); a request still
     short of n good replies is re-asked for the missing ones, up to schema_reasks times, with the
     bad reply and what was wrong appended when a schema failed, and a shifted seed so a seeded
     server does not repeat itself; then it succeeds (cached) or fails with the last reason.

`counts` tallies outcomes over the client's life (ok, cached, each reason code, retries, re-asks):
the numbers a job reports next to its funnel.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
import threading
import typing
from dataclasses import dataclass, field
from typing import Any

from synthesis.model_client.backend import Backend, Call, Choice, Reply
from synthesis.model_client.cache import DiskCache, cache_key
from synthesis.model_client.config import OVERRIDABLE, ClientConfig, check_config
from synthesis.model_client.content import RequestError, checked_messages, image_sha256s
from synthesis.model_client.records import BAD_REQUEST, MISSING_CHOICES, SCHEMA_VIOLATION, ChatRequest, Completion
from synthesis.model_client.replies import judge, reask_turns, shorten
from synthesis.model_client.retry import CallError
from synthesis.model_client.schema_check import SchemaError, check_schema

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass
class _Pending:
    """One request on its way: what it asks, the good replies so far, the last failure."""

    index: int
    request: ChatRequest
    messages: list[dict]
    params: dict[str, Any]
    schema: dict | None
    key: str
    good: list[tuple[Choice, Any]] = field(default_factory=list)
    reasks: int = 0
    attempts: int = 0
    usage: collections.Counter = field(default_factory=collections.Counter)
    failure: tuple[str, str] | None = None  # (code, detail) of the last bad reply
    retry_turns: list[dict] = field(default_factory=list)  # appended on a re-ask after a schema failure

    def call(self) -> Call:
        params = dict(self.params, n=self.params["n"] - len(self.good))
        if self.reasks and params["seed"] is not None:
            params["seed"] = params["seed"] + self.reasks
        return Call(self.messages + self.retry_turns, self.request.images, params, self.schema)


class ModelClient:
    def __init__(self, cfg: ClientConfig, backend: Backend | None = None):
        check_config(cfg)
        self.cfg = cfg
        self.backend = backend if backend is not None else _make_backend(cfg)
        self.cache = DiskCache(cfg.cache_dir) if cfg.cache_dir else None
        # What the cache calls the model: the served name, or the folder of an in-process model.
        self.model_label = cfg.model or os.path.realpath(cfg.model_path)
        self.counts: collections.Counter = collections.Counter()
        self._lock = threading.Lock()  # one chat() at a time drives the backend (a GPU model is not re-entrant)

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.backend.close()

    def chat(self, requests: list[ChatRequest]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        pending: list[_Pending] = []
        for i, request in enumerate(requests):
            try:
                item = self._prepare(i, request)
            except RequestError as exc:
                results[i] = Completion(request.id, error=exc.code, detail=exc.detail)
                continue
            hit = self.cache.get(item.key) if self.cache else None
            if hit is not None:
                results[i] = Completion(request.id, cached=True, **{k: v for k, v in hit.items()})
                continue
            pending.append(item)
        with self._lock:
            while pending:
                replies = self.backend.run([item.call() for item in pending])
                pending = [item for item, reply in zip(pending, replies) if not self._absorb(item, reply, results)]
        for completion in results:
            self._count(completion)
        return results  # type: ignore[return-value]

    # --- one request ------------------------------------------------------------------------------

    def _prepare(self, index: int, request: ChatRequest) -> _Pending:
        messages = checked_messages(list(request.messages or []), len(request.images))
        params, schema = self._params(request.overrides or {})
        key = cache_key(
            backend=self.cfg.backend,
            model=self.model_label,
            messages=messages,
            image_sha256s=image_sha256s(request.images),
            params=params,
            response_schema=schema,
            structured_outputs=self.cfg.structured_outputs,
            prompt_version=self.cfg.prompt_version,
        )
        return _Pending(index, request, messages, params, schema, key)

    def _params(self, overrides: dict) -> tuple[dict[str, Any], dict | None]:
        from curation.config import ConfigError, coerce

        unknown = sorted(set(overrides) - set(OVERRIDABLE))
        if unknown:
            raise RequestError(
                BAD_REQUEST, f"overrides {', '.join(unknown)} cannot be set per request (only {', '.join(OVERRIDABLE)})"
            )
        hints = typing.get_type_hints(ClientConfig)
        values = {name: getattr(self.cfg, name) for name in OVERRIDABLE}
        try:
            for name, value in overrides.items():
                values[name] = coerce(value, hints[name], f"overrides.{name}")
            if overrides.get("response_schema") is not None:
                check_schema(values["response_schema"])
        except (ConfigError, SchemaError) as exc:
            raise RequestError(BAD_REQUEST, str(exc)) from None
        if values["n"] < 1 or values["max_tokens"] < 1 or values["top_logprobs"] < 0:
            raise RequestError(BAD_REQUEST, "overrides: n and max_tokens must be at least 1, top_logprobs not negative")
        schema = values.pop("response_schema")
        values["extra_body"] = copy.deepcopy(values["extra_body"])
        return values, schema

    def _absorb(self, item: _Pending, reply: Reply | CallError, results: list) -> bool:
        """Take one backend answer into `item`; True when the request is finished (result set)."""
        n = item.params["n"]
        if isinstance(reply, CallError):
            item.attempts += reply.attempts
            self.counts["retries"] += max(0, reply.attempts - 1)
            results[item.index] = self._failed(item, reply.final_code(), reply.detail)
            return True
        item.attempts += reply.attempts
        self.counts["retries"] += reply.attempts - 1
        item.usage.update({k: v for k, v in reply.usage.items() if k in USAGE_KEYS})
        asked = n - len(item.good)
        if len(reply.choices) < asked:
            detail = f"asked for {asked} choices, the server returned {len(reply.choices)} (does it support n > 1?)"
            results[item.index] = self._failed(item, MISSING_CHOICES, detail)
            return True
        item.retry_turns = []
        for choice in reply.choices[:asked]:
            verdict = judge(choice, item.schema)
            if verdict.ok:
                item.good.append((choice, verdict.parsed))
                continue
            detail = verdict.reason + (f"; reply: {shorten(choice.text)}" if verdict.code == SCHEMA_VIOLATION else "")
            item.failure = (verdict.code, detail)
            if item.schema is not None and not item.retry_turns and choice.text.strip():
                item.retry_turns = reask_turns(choice.text, verdict.reason, item.schema)
        if len(item.good) == n:
            results[item.index] = self._succeeded(item)
            return True
        if item.reasks >= self.cfg.schema_reasks:
            code, detail = item.failure
            results[item.index] = self._failed(item, code, f"after {item.reasks} re-asks: {detail}")
            return True
        item.reasks += 1
        self.counts["reasks"] += 1
        return False

    def _succeeded(self, item: _Pending) -> Completion:
        choices = [c for c, _ in item.good]
        values = {
            "texts": [c.text for c in choices],
            "logprobs": [c.logprobs or [] for c in choices] if item.params["logprobs"] else None,
            "usage": dict(item.usage),
            "parsed": [p for _, p in item.good] if item.schema is not None else None,
            "finish_reasons": [c.finish_reason for c in choices],
            "reasoning": [c.reasoning for c in choices],
        }
        if self.cache is not None:
            self.cache.put(item.key, values)
        return Completion(item.request.id, attempts=item.attempts, **values)

    def _failed(self, item: _Pending, code: str, detail: str) -> Completion:
        return Completion(
            item.request.id,
            texts=[c.text for c, _ in item.good],
            error=code,
            detail=detail,
            usage=dict(item.usage),
            attempts=item.attempts,
        )

    def _count(self, completion: Completion) -> None:
        if completion.error is not None:
            self.counts[completion.error] += 1
        else:
            self.counts["cached" if completion.cached else "ok"] += 1


def _make_backend(cfg: ClientConfig) -> Backend:
    if cfg.backend == "openai":
        from synthesis.model_client.http_backend import OpenAIBackend

        return OpenAIBackend(cfg)
    from synthesis.model_client.hf_backend import TransformersBackend

    return TransformersBackend(cfg)


# --- one client per process and config (what each Spark Python worker uses) ------------------------

_CLIENTS: dict[str, ModelClient] = {}
_CLIENTS_LOCK = threading.Lock()


def client_for(cfg: ClientConfig) -> ModelClient:
    """The process's client for this config, built on first use (a model loads once per worker)."""
    key = json.dumps(dataclasses.asdict(cfg), sort_keys=True, default=str)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = ModelClient(cfg)
        return client
