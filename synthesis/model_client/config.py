"""ClientConfig: every setting of the model client, one typed dataclass.

`curation.config` reads it from YAML and `key=value` overrides like any job config (choices are
`Literal`, checked at parse time). `check_config` catches what types cannot say (a missing model
folder, an empty endpoint list, a schema with keywords we cannot validate) when a client is built,
so a misconfigured job stops before any row is sent, with a message naming the setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlsplit

from synthesis.model_client.schema_check import SchemaError, check_schema

# Request `overrides` may change these per request (everything that is a sampling parameter or
# the reply's schema); endpoints, timeouts and the backend are the client's, never a request's.
OVERRIDABLE = (
    "n",
    "temperature",
    "top_p",
    "seed",
    "max_tokens",
    "logprobs",
    "top_logprobs",
    "response_schema",
    "extra_body",
)


class ClientConfigError(ValueError):
    """A model-client setting that cannot work; the message names the setting to change."""


@dataclass
class ClientConfig:
    backend: Literal["openai", "transformers"] = "openai"

    # --- OpenAI-compatible HTTP (vLLM, SGLang, `transformers serve`, hosted APIs) -----------------
    # One or more endpoints, each the API root (".../v1"); every attempt picks one at random, so a
    # retry may land on another server, as Keye dispatches its reward calls.
    base_urls: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8000/v1"])
    # The key is read from this environment variable when the client is built and sent as a bearer
    # token; it is never part of the config, a cache key, a log line or an error. Unset or empty:
    # no Authorization header (local servers started without --api-key).
    api_key_env: str = "OPENAI_API_KEY"
    model: str = ""  # the served model name; for the transformers backend only a label (cache key)
    # How a response_schema reaches the server: OpenAI's response_format json_schema, or vLLM's
    # extra body {"structured_outputs": {"json": schema}} (vLLM >= 0.12; older ones took guided_json).
    structured_outputs: Literal["response_format", "vllm_extra_body"] = "response_format"
    # OpenAI's newer models want max_completion_tokens; vLLM and SGLang read both.
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens"
    extra_body: dict[str, Any] = field(
        default_factory=dict
    )  # merged into every request body (top_k, chat_template_kwargs, ...)

    # --- sampling (any of these may be overridden per request) ---------------------------------
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    max_tokens: int = 1024
    logprobs: bool = False
    top_logprobs: int = 0
    # A JSON schema the reply must satisfy: sent as a structured-output constraint, and every reply
    # is parsed and validated on return; a reply that fails is re-asked up to schema_reasks times.
    response_schema: dict[str, Any] | None = None
    schema_name: str = "reply"  # OpenAI requires a name for a json_schema response format
    # OpenAI's strict mode (every property required, additionalProperties false); vLLM ignores it.
    schema_strict: bool = True
    schema_reasks: int = 2  # re-asks for replies that are empty or fail the schema (0: none)

    # --- transport ---------------------------------------------------------------------------------
    concurrency: int = 8  # requests in flight at once per client (per Spark Python worker)
    timeout_s: float = 120.0  # per HTTP attempt: connecting, and each wait for bytes of the reply
    max_retries: int = 5  # retries after the first attempt, for 408/409/425/429/5xx, timeouts, lost connections
    backoff_s: float = 1.0  # first backoff; doubles per retry, with jitter
    backoff_max_s: float = 60.0  # longest wait; a Retry-After longer than this ends the request instead

    # --- cache -------------------------------------------------------------------------------------
    cache_dir: str = ""  # a folder of successful completions ("" = no disk cache)
    # Part of every cache key: bump it whenever the prompt or the parser of the caller changes, so
    # a changed prompt is never served an answer made for the old one.
    prompt_version: str = "1"

    # --- in-process transformers -------------------------------------------------------------------
    model_path: str = ""  # a local Hugging Face folder (any chat model, or a keyeforge Keye export)
    batch_size: int = 8
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bfloat16 on CUDA, float32 on CPU
    trust_remote_code: bool = False


def model_configs(base: ClientConfig, models: list[str], urls: list[str] = (), **settings) -> list[ClientConfig]:
    """One config per model of a panel (judges, solvers): the shared settings, the model's name,
    its own endpoint when `urls` names one (same order as `models`), and `settings` on top."""
    urls = list(urls)
    return [replace(base, model=model, base_urls=[urls[k]] if k < len(urls) else base.base_urls, **settings)
            for k, model in enumerate(models)]


def check_config(cfg: ClientConfig) -> None:
    """Raise ClientConfigError for a setting that cannot work (before any request is sent)."""
    problems: list[str] = []
    if cfg.backend == "openai":
        if not cfg.base_urls:
            problems.append("base_urls is empty: give one or more endpoints such as http://127.0.0.1:8000/v1")
        for url in cfg.base_urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                problems.append(f"base_urls: {url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
        if not cfg.model:
            problems.append("model is empty: name the served model (as the server lists it under /v1/models)")
    else:
        if not cfg.model_path:
            problems.append("model_path is empty: give a local Hugging Face model folder")
        elif not os.path.isfile(os.path.join(cfg.model_path, "config.json")):
            problems.append(f"model_path {cfg.model_path!r} has no config.json: not a Hugging Face model folder")
        if cfg.batch_size < 1:
            problems.append("batch_size must be at least 1")
    for name in ("n", "concurrency", "max_tokens"):
        if getattr(cfg, name) < 1:
            problems.append(f"{name} must be at least 1")
    for name in ("max_retries", "schema_reasks", "top_logprobs"):
        if getattr(cfg, name) < 0:
            problems.append(f"{name} must not be negative")
    if cfg.timeout_s <= 0 or cfg.backoff_s < 0 or cfg.backoff_max_s < cfg.backoff_s:
        problems.append("timeout_s must be positive and 0 <= backoff_s <= backoff_max_s")
    if cfg.response_schema is not None:
        try:
            check_schema(cfg.response_schema)
        except SchemaError as exc:
            problems.append(f"response_schema: {exc}")
    if problems:
        raise ClientConfigError("model client: " + "; ".join(problems))
