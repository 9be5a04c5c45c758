"""The model client: one service for every model call of the platform (reasoning-data generation,
TaskGalaxy, recaptioning, RL judge rewards).

    from synthesis.model_client import ClientConfig, ChatRequest, ModelClient

    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    cfg = ClientConfig(base_urls=["http://127.0.0.1:8000/v1"], model="Qwen/Qwen2.5-VL-7B-Instruct", n=4,
                       response_schema=schema)
    question = [{"type": "image", "index": 0}, {"type": "text", "text": "Rate this image 1-10 as JSON."}]
    with ModelClient(cfg) as client:
        [done] = client.chat([ChatRequest("row-1", [{"role": "user", "content": question}], images=[png_bytes])])
        if done.ok: scores = [p["score"] for p in done.parsed]
        else: reject(done.error, done.detail)     # e.g. http_429_exhausted, timeout, schema_violation

Two backends behind one ClientConfig: `openai` (any OpenAI-compatible server, several endpoints
with random dispatch) and `transformers` (a local HF folder or a keyeforge Keye export, batched
generate). One retry layer, a per-request timeout, a concurrency limit, a disk cache keyed by
what decides the answer, schema-validated replies with bounded re-asks; every failure is a
Completion with a reason code (records.py lists them), never an exception and never an empty
string taken for an answer. In Spark, `chat_frame` runs it in mapInPandas with one client per
Python worker (`client_for`).

Layout
    config.py         ClientConfig, check_config, ClientConfigError
    records.py        ChatRequest, Completion, the reason codes
    content.py        checking request messages; OpenAI content parts (data: URIs); image hashes
    schema_check.py   JSON-schema validation (the structured-output subset; unknown keywords refused)
    replies.py        judging a reply (empty, refusal, malformed JSON, schema) and the re-ask turns
    retry.py          CallError, Retry-After parsing, backoff with jitter, the retry loop
    cache.py          cache keys (sha256 of canonical JSON) and the disk cache
    backend.py        Call / Choice / Reply and the backend interface
    http_backend.py   OpenAI-compatible HTTP on the standard library
    hf_backend.py     in-process transformers (any chat model)
    keye_runner.py    in-process keyeforge Keye exports (the trainer's processor and decoder)
    client.py         ModelClient, client_for
    spark.py          chat_frame, reject_of
"""

from synthesis.model_client.client import ModelClient, client_for
from synthesis.model_client.config import ClientConfig, ClientConfigError, check_config
from synthesis.model_client.records import ChatRequest, Completion
from synthesis.model_client.spark import chat_frame, reject_of

__all__ = [
    "ChatRequest",
    "ClientConfig",
    "ClientConfigError",
    "Completion",
    "ModelClient",
    "chat_frame",
    "check_config",
    "client_for",
    "reject_of",
]
