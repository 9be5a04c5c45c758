"""The OpenAI-compatible HTTP backend (vLLM, SGLang, `transformers serve`, hosted APIs), on the
standard library: http.client, one thread pool of `concurrency` workers, keep-alive connections
per worker thread and endpoint.

Wire format: POST {base_url}/chat/completions with a JSON body (model, messages, n, temperature,
top_p, max_tokens or max_completion_tokens, seed, logprobs/top_logprobs, the structured-output
constraint, and `extra_body` merged on top); the reply's `choices[i].message.content` are the texts
(`reasoning_content` / `reasoning` when the server runs a reasoning parser, `refusal` when the
model refused), `choices[i].logprobs.content` the token logprobs, `usage` the token counts.

Every attempt picks an endpoint at random (so a retry may land on a healthy server). This module
has the client's only retry loop: nothing below it retries (http.client does not), so retries
never multiply. The API key is held here only, sent as a bearer token, and scrubbed from any text
that could reach an error detail.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import SplitResult, urlsplit

from synthesis.model_client.backend import Call, Choice, Reply
from synthesis.model_client.config import ClientConfig
from synthesis.model_client.content import RequestError, openai_messages
from synthesis.model_client.records import CLIENT_ERROR
from synthesis.model_client.retry import (
    Backoff,
    CallError,
    bad_response,
    connection_error,
    http_error,
    timeout_error,
    with_retries,
)

SNIPPET = 300  # characters of a server's error body kept in a detail
# Errors of a keep-alive connection the server closed while idle: resent once at once on a fresh
# connection, without counting as a retry (nothing was answered).
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def request_body(cfg: ClientConfig, call: Call) -> dict:
    p = call.params
    body = {
        "model": cfg.model,
        "messages": openai_messages(call.messages, call.images),
        "n": p["n"],
        "temperature": p["temperature"],
        "top_p": p["top_p"],
        cfg.max_tokens_field: p["max_tokens"],
    }
    if p["seed"] is not None:
        body["seed"] = p["seed"]
    if p["logprobs"]:
        body["logprobs"] = True
        if p["top_logprobs"]:
            body["top_logprobs"] = p["top_logprobs"]
    if call.schema is not None:
        if cfg.structured_outputs == "response_format":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": cfg.schema_name, "schema": call.schema, "strict": cfg.schema_strict},
            }
        else:  # vLLM >= 0.12 reads its structured-output parameters from the body's top level
            body["structured_outputs"] = {"json": call.schema}
    body.update(p["extra_body"])  # last: what the user sets explicitly wins
    return body


def parse_reply(body: dict) -> Reply:
    """A chat-completion body -> Reply (choices in their `index` order). Raises bad_response."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise bad_response(f"200 without a choices list: {_snippet(json.dumps(body))}")
    out = []
    for choice in sorted(choices, key=lambda c: c.get("index") or 0):
        message = choice.get("message") or {}
        content = message.get("content")
        if isinstance(content, list):  # some servers answer with content parts
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        logprobs = (choice.get("logprobs") or {}).get("content")
        out.append(
            Choice(
                text=content if isinstance(content, str) else "",
                finish_reason=str(choice.get("finish_reason") or ""),
                reasoning=str(message.get("reasoning_content") or message.get("reasoning") or ""),
                logprobs=[_token_logprob(t) for t in logprobs] if isinstance(logprobs, list) else None,
                refusal=message.get("refusal") or None,
            )
        )
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    return Reply(out, {k: v for k, v in usage.items() if isinstance(v, int)})


def _token_logprob(entry: dict) -> dict:
    top = entry.get("top_logprobs") or []
    return {
        "token": entry.get("token"),
        "logprob": entry.get("logprob"),
        "top_logprobs": [{"token": t.get("token"), "logprob": t.get("logprob")} for t in top],
    }


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET else text[:SNIPPET] + "..."


class OpenAIBackend:
    def __init__(self, cfg: ClientConfig, sleep=None):
        self.cfg = cfg
        self._key = os.environ.get(cfg.api_key_env) or None  # never logged, never in cfg or a cache key
        self._endpoints = [urlsplit(url) for url in cfg.base_urls]
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="model-client")
        self._rng = random.Random()
        self._backoff = Backoff(cfg.backoff_s, cfg.backoff_max_s, self._rng)
        self._sleep = sleep  # tests pass a recorder; None: time.sleep
        self._ssl = ssl.create_default_context()

    def __repr__(self) -> str:  # the key stays out of reprs and tracebacks' locals summaries
        return f"OpenAIBackend(model={self.cfg.model!r}, endpoints={len(self._endpoints)})"

    def run(self, calls: list[Call]) -> list[Reply | CallError]:
        return list(self._pool.map(self._run_one, calls))

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- one call: body, retries, parse -----------------------------------------------------------

    def _run_one(self, call: Call) -> Reply | CallError:
        try:
            return self._send(call)
        except Exception as exc:  # noqa: BLE001 - one request's surprise must not end the whole batch
            return CallError(CLIENT_ERROR, self._scrub(f"{type(exc).__name__}: {exc}"))

    def _send(self, call: Call) -> Reply | CallError:
        try:
            payload = json.dumps(request_body(self.cfg, call), ensure_ascii=False).encode("utf-8")
        except RequestError as exc:
            return CallError(exc.code, exc.detail)
        kwargs = {"sleep": self._sleep} if self._sleep is not None else {}
        try:
            body, attempts = with_retries(lambda: self._post(payload), self.cfg.max_retries, self._backoff, **kwargs)
        except CallError as exc:
            exc.detail = self._scrub(exc.detail)
            return exc
        try:
            reply = parse_reply(body)
        except CallError as exc:  # a 200 with a body of the wrong shape: retried in _post already
            return exc
        reply.attempts = attempts
        return reply

    def _post(self, payload: bytes) -> dict:
        endpoint = self._rng.choice(self._endpoints)
        where = f"{endpoint.hostname}:{endpoint.port or (443 if endpoint.scheme == 'https' else 80)}"
        path = endpoint.path.rstrip("/") + "/chat/completions"
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "keyeforge-model-client",
        }
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        for fresh_try in (False, True):
            conn, reused = self._connection(endpoint)
            try:
                conn.request("POST", path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except TimeoutError:
                self._drop(endpoint)
                raise timeout_error(f"{where}: no reply within {self.cfg.timeout_s:g} s") from None
            except STALE as exc:
                self._drop(endpoint)
                if reused and not fresh_try:
                    continue
                raise connection_error(f"{where}: {type(exc).__name__}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop(endpoint)
                raise connection_error(f"{where}: {type(exc).__name__}: {exc}") from None
        if response.will_close:
            self._drop(endpoint)
        text = data.decode("utf-8", errors="replace")
        if response.status != 200:
            raise http_error(
                response.status, f"{where}: {response.status} {_snippet(text)}", dict(response.getheaders())
            )
        try:
            body = json.loads(text)
        except ValueError:
            raise bad_response(f"{where}: 200 with a body that is not JSON: {_snippet(text)}") from None
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            raise bad_response(f"{where}: 200 without a choices list: {_snippet(text)}")
        return body

    def _connection(self, endpoint: SplitResult) -> tuple[http.client.HTTPConnection, bool]:
        conns = self._local.__dict__.setdefault("conns", {})
        key = (endpoint.scheme, endpoint.netloc)
        if key in conns:
            return conns[key], True
        host, port = endpoint.hostname, endpoint.port
        if endpoint.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.cfg.timeout_s, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.cfg.timeout_s)
        conns[key] = conn
        return conn, False

    def _drop(self, endpoint: SplitResult) -> None:
        conn = self._local.__dict__.get("conns", {}).pop((endpoint.scheme, endpoint.netloc), None)
        if conn is not None:
            conn.close()

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "[api key]") if self._key else text
