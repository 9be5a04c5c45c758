"""The model client over its real paths: HTTP against a scripted server on 127.0.0.1 (the client,
its retries and its parsing are the real ones), the in-process backend with a tiny random Qwen3
and a tiny random Keye export, and chat_frame in Spark. Every failure must end as a retry or a
counted reject with its reason, never an exception and never an empty answer."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path

import pytest
from model_client_helpers import ScriptedServer, save_tiny_keye, save_tiny_qwen2_vl, save_tiny_qwen3
from PIL import Image

from synthesis.model_client import (
    ChatRequest,
    ClientConfig,
    ClientConfigError,
    ModelClient,
    chat_frame,
    client_for,
    reject_of,
)
from synthesis.model_client.retry import parse_retry_after
from synthesis.model_client.schema_check import SchemaError, check_schema, first_violation

ROOT = Path(__file__).resolve().parents[2]
SCORE = {
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}, "why": {"type": "string"}},
    "required": ["score", "why"],
    "additionalProperties": False,
}


def png(color=(200, 30, 30), size=(8, 8)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def ask(request_id: str, text: str, images: list[bytes] = (), **overrides) -> ChatRequest:
    content = [{"type": "image", "index": i} for i in range(len(images))] + [{"type": "text", "text": text}]
    return ChatRequest(request_id, [{"role": "user", "content": content}], list(images), overrides)


def config(server: ScriptedServer, **kw) -> ClientConfig:
    base = dict(
        base_urls=[server.url],
        model="scripted",
        timeout_s=2.0,
        max_retries=2,
        backoff_s=0.01,
        backoff_max_s=5.0,
        concurrency=4,
    )
    return ClientConfig(**{**base, **kw})


# --- HTTP: the wire format ---------------------------------------------------------------------------


def test_request_body_images_key_and_reply(monkeypatch):
    monkeypatch.setenv("KF_TEST_KEY", "sk-secret-123")
    image = png()
    with (
        ScriptedServer() as server,
        ModelClient(config(server, api_key_env="KF_TEST_KEY", seed=7, temperature=0.3, max_tokens=64)) as client,
    ):
        [done] = client.chat(
            [
                ChatRequest(
                    "r1",
                    [
                        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                        {
                            "role": "user",
                            "content": [
                                {"type": "image", "index": 0, "text": None},
                                {"type": "text", "text": "What is this?", "index": None},
                            ],
                        },
                    ],
                    [image],
                )
            ]
        )
    assert done.ok and done.texts == ["echo: What is this?"] and done.attempts == 1
    assert done.usage == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    [sent] = server.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer sk-secret-123"
    body = sent["body"]
    assert (body["model"], body["n"], body["temperature"], body["seed"], body["max_tokens"]) == (
        "scripted",
        1,
        0.3,
        7,
        64,
    )
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    image_part, text_part = body["messages"][1]["content"]
    assert image_part == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()},
    }
    assert text_part == {"type": "text", "text": "What is this?"}
    assert "response_format" not in body and "logprobs" not in body


def test_no_key_no_authorization_header(monkeypatch):
    monkeypatch.delenv("KF_UNSET_KEY", raising=False)
    with ScriptedServer() as server, ModelClient(config(server, api_key_env="KF_UNSET_KEY")) as client:
        assert client.chat([ask("a", "hi")])[0].ok
    assert "Authorization" not in server.requests[0]["headers"]


def test_structured_output_modes_and_extra_body():
    reply = [("reply", ['{"score": 3, "why": "ok"}'])]
    with ScriptedServer({"s": reply}) as server:
        with ModelClient(
            config(server, response_schema=SCORE, extra_body={"top_k": 20}, max_tokens_field="max_completion_tokens")
        ) as client:
            [done] = client.chat([ask("a", "script:s rate")])
        with ModelClient(config(server, response_schema=SCORE, structured_outputs="vllm_extra_body")) as client:
            client.chat([ask("b", "script:s rate again")])
    assert done.parsed == [{"score": 3, "why": "ok"}]
    first, second = server.bodies("s")
    assert first["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": SCORE, "strict": True},
    }
    assert first["top_k"] == 20 and first["max_completion_tokens"] == 1024 and "max_tokens" not in first
    assert second["structured_outputs"] == {"json": SCORE} and "response_format" not in second


# --- HTTP: retries -----------------------------------------------------------------------------------


def test_429_waits_for_retry_after_then_succeeds():
    with ScriptedServer({"busy": [("status", 429, {"Retry-After": "1"}), ("reply", ["fine"])]}) as server:
        with ModelClient(config(server)) as client:
            start = time.monotonic()
            [done] = client.chat([ask("a", "script:busy go")])
            waited = time.monotonic() - start
    assert done.ok and done.texts == ["fine"] and done.attempts == 2
    assert waited >= 1.0  # the server's Retry-After, not the 0.01 s backoff
    assert client.counts["retries"] == 1 and client.counts["ok"] == 1


def test_429_exhausted_and_retry_after_beyond_the_cap_are_counted_rejects():
    scripts = {
        "busy": [("status", 429, {"retry-after-ms": "20"})],
        "closed": [("status", 503, {"Retry-After": "3600"})],
    }
    with ScriptedServer(scripts) as server, ModelClient(config(server)) as client:
        busy, closed = client.chat([ask("a", "script:busy x"), ask("b", "script:closed y")])
    assert (busy.error, busy.attempts) == ("http_429_exhausted", 3) and "3 attempts" in busy.detail
    assert (closed.error, closed.attempts) == ("http_503_exhausted", 1) and "3600" in closed.detail
    assert len(server.bodies("busy")) == 3 and len(server.bodies("closed")) == 1
    assert client.counts["http_429_exhausted"] == 1 and client.counts["http_503_exhausted"] == 1


def test_500_is_retried_and_400_is_not():
    scripts = {
        "flaky": [("status", 500), ("reply", ["recovered"])],
        "down": [("status", 500)],
        "bad": [("status", 400)],
    }
    with ScriptedServer(scripts) as server, ModelClient(config(server)) as client:
        flaky, down, bad = client.chat([ask("a", "script:flaky"), ask("b", "script:down"), ask("c", "script:bad")])
    assert flaky.ok and flaky.texts == ["recovered"] and flaky.attempts == 2
    assert down.error == "http_500_exhausted" and len(server.bodies("down")) == 3
    assert bad.error == "http_400" and bad.attempts == 1 and len(server.bodies("bad")) == 1


def test_timeout_is_retried_then_rejected():
    scripts = {"slow_once": [("sleep", 1.5), ("reply", ["in time"])], "slow": [("sleep", 1.5)]}
    with ScriptedServer(scripts) as server, ModelClient(config(server, timeout_s=0.3, max_retries=1)) as client:
        once, always = client.chat([ask("a", "script:slow_once"), ask("b", "script:slow")])
    assert once.ok and once.texts == ["in time"] and once.attempts == 2
    assert always.error == "timeout" and always.attempts == 2 and "0.3 s" in always.detail


def test_connection_refused_is_a_reject():
    with ScriptedServer() as server:
        url = server.url
    with ModelClient(ClientConfig(base_urls=[url], model="m", max_retries=1, backoff_s=0.01)) as client:
        [done] = client.chat([ask("a", "anyone?")])
    assert done.error == "connection_error" and done.attempts == 2


def test_malformed_body_is_retried_then_rejected():
    scripts = {
        "garbled_once": [("raw", b"<html>proxy error"), ("reply", ["ok now"])],
        "garbled": [("raw", b'{"no": "choices"}')],
    }
    with ScriptedServer(scripts) as server, ModelClient(config(server)) as client:
        once, always = client.chat([ask("a", "script:garbled_once"), ask("b", "script:garbled")])
    assert once.ok and once.texts == ["ok now"]
    assert always.error == "bad_response" and always.attempts == 3


def test_api_key_never_reaches_an_error(monkeypatch):
    monkeypatch.setenv("KF_TEST_KEY", "sk-do-not-leak")
    with ScriptedServer({"auth": [("echo_auth", 401)]}) as server:
        with ModelClient(config(server, api_key_env="KF_TEST_KEY")) as client:
            [done] = client.chat([ask("a", "script:auth")])
    assert done.error == "http_401" and "sk-do-not-leak" not in done.detail and "[api key]" in done.detail
    assert "sk-do-not-leak" not in repr(client.backend) and "sk-do-not-leak" not in json.dumps(client.cfg.__dict__)


def test_concurrency_limit():
    with ScriptedServer({"slow": [("sleep", 0.25)]}) as server, ModelClient(config(server, concurrency=2)) as client:
        start = time.monotonic()
        done = client.chat([ask(str(i), "script:slow") for i in range(6)])
        took = time.monotonic() - start
    assert all(c.ok for c in done) and server.max_in_flight == 2 and took >= 3 * 0.25


def test_random_dispatch_over_endpoints():
    with ScriptedServer() as a, ScriptedServer() as b:
        cfg = ClientConfig(base_urls=[a.url, b.url], model="m", concurrency=4)
        with ModelClient(cfg) as client:
            done = client.chat([ask(str(i), f"q{i}") for i in range(40)])
    assert all(c.ok for c in done) and [c.texts[0] for c in done] == [f"echo: q{i}" for i in range(40)]
    assert len(a.requests) + len(b.requests) == 40 and min(len(a.requests), len(b.requests)) >= 5


# --- replies: empty, malformed JSON, schema violations, n > 1 -----------------------------------------


def test_empty_reply_is_never_an_answer():
    with ScriptedServer({"mute": [("reply", ["  "])], "late": [("reply", [""]), ("reply", ["said it"])]}) as server:
        with ModelClient(config(server, schema_reasks=1)) as client:
            mute, late = client.chat([ask("a", "script:mute"), ask("b", "script:late")])
    assert mute.error == "empty_reply" and mute.texts == [] and len(server.bodies("mute")) == 2
    assert late.ok and late.texts == ["said it"] and late.attempts == 2


def test_malformed_json_is_reasked_with_the_reason():
    scripts = {
        "fix": [("reply", ["score: 7"]), ("reply", ['```json\n{"score": 7, "why": "sharp"}\n```'])],
        "never": [("reply", ["nope"])],
    }
    with ScriptedServer(scripts) as server, ModelClient(config(server, response_schema=SCORE, seed=5)) as client:
        fixed, never = client.chat([ask("a", "script:fix rate"), ask("b", "script:never rate")])
    assert fixed.ok and fixed.parsed == [{"score": 7, "why": "sharp"}]
    first, second = server.bodies("fix")
    assert len(second["messages"]) == 3 and second["messages"][1] == {"role": "assistant", "content": "score: 7"}
    assert "not JSON" in second["messages"][2]["content"] and '"required"' in second["messages"][2]["content"]
    assert (first["seed"], second["seed"]) == (5, 6)  # a seeded server must not repeat the bad reply
    assert never.error == "malformed_json" and "after 2 re-asks" in never.detail and len(server.bodies("never")) == 3
    assert client.counts["malformed_json"] == 1 and client.counts["reasks"] == 3


def test_schema_violation_is_a_counted_reject():
    bad = [("reply", ['{"score": "high", "why": "x"}'])]
    with (
        ScriptedServer({"bad": bad}) as server,
        ModelClient(config(server, response_schema=SCORE, schema_reasks=1)) as client,
    ):
        [done] = client.chat([ask("a", "script:bad rate")])
    assert done.error == "schema_violation" and "$.score: expected integer" in done.detail
    assert len(server.bodies("bad")) == 2 and client.counts == {"schema_violation": 1, "reasks": 1, "retries": 0}


def test_n_choices_reask_only_the_missing_ones_and_carry_logprobs():
    scripts = {"three": [("reply", ["one two", "", "three"]), ("reply", ["four"])]}
    with ScriptedServer(scripts) as server, ModelClient(config(server, logprobs=True, top_logprobs=2)) as client:
        [done] = client.chat([ask("a", "script:three go", n=3)])
    assert done.ok and done.texts == ["one two", "three", "four"]
    assert [b["n"] for b in server.bodies("three")] == [3, 1]
    assert [len(lp) for lp in done.logprobs] == [2, 1, 1]
    assert done.logprobs[0][0] == {
        "token": "one",
        "logprob": -0.5,
        "top_logprobs": [{"token": "one", "logprob": -0.5}] * 2,
    }
    assert done.usage["completion_tokens"] == 15 + 5


def test_server_ignoring_n_is_missing_choices():
    with ScriptedServer({"single": [("fixed", ["just one"])]}) as server, ModelClient(config(server)) as client:
        [done] = client.chat([ask("a", "script:single", n=2)])
    assert done.error == "missing_choices" and "asked for 2 choices, the server returned 1" in done.detail


# --- requests that cannot be sent ---------------------------------------------------------------------


def test_bad_requests_are_rejected_before_sending():
    with ScriptedServer() as server, ModelClient(config(server)) as client:
        done = client.chat(
            [
                ChatRequest("idx", [{"role": "user", "content": [{"type": "image", "index": 1}]}], [png()]),
                ChatRequest("role", [{"role": "tool", "content": [{"type": "text", "text": "x"}]}]),
                ask("override", "x", bogus=1),
                ask("n", "x", n="many"),
                ask("schema", "x", response_schema={"type": "object", "if": {}}),
                ask("format", "x", images=[b"not an image at all"]),
                ask("fine", "x"),
            ]
        )
    assert [c.error for c in done] == ["bad_request"] * 5 + ["bad_image", None]
    assert "image index 1" in done[0].detail and "role 'tool'" in done[1].detail and "bogus" in done[2].detail
    assert len(server.requests) == 1  # only the good one was sent


def test_example_config_loads_and_checks():
    from curation.config import ConfigError, load
    from synthesis.model_client import check_config

    cfg = load(
        ClientConfig,
        [
            "--config",
            str(ROOT / "configs" / "model_client.yaml"),
            "n=4",
            "base_urls=http://h1:8000/v1,http://h2:8000/v1",
        ],
    )
    check_config(cfg)
    assert cfg.n == 4 and len(cfg.base_urls) == 2 and cfg.response_schema["required"] == ["score", "reason"]
    with pytest.raises(ConfigError, match="vllm_extra_body"):
        load(ClientConfig, ["structured_outputs=guided_json"])


def test_config_errors_stop_before_any_request(tmp_path):
    with pytest.raises(ClientConfigError, match="model is empty"):
        ModelClient(ClientConfig())
    with pytest.raises(ClientConfigError, match="not an http"):
        ModelClient(ClientConfig(base_urls=["127.0.0.1:8000"], model="m"))
    with pytest.raises(ClientConfigError, match="no config.json"):
        ModelClient(ClientConfig(backend="transformers", model_path=str(tmp_path)))
    with pytest.raises(ClientConfigError, match="patternProperties"):
        ModelClient(ClientConfig(model="m", response_schema={"type": "object", "patternProperties": {}}))


# --- the disk cache -----------------------------------------------------------------------------------


def test_cache_serves_repeats_and_misses_on_any_change(tmp_path):
    cache = str(tmp_path / "cache")
    with ScriptedServer() as a, ScriptedServer() as b:
        with ModelClient(config(a, cache_dir=cache)) as client:
            first = client.chat([ask("a", "describe", [png()])])[0]
            again = client.chat([ask("a2", "describe", [png()])])[0]
            other_image = client.chat([ask("a3", "describe", [png((0, 0, 255))])])[0]
            other_params = client.chat([ask("a4", "describe", [png()], temperature=0.5)])[0]
        # another endpoint and key: same answer from the cache (the key is endpoint-independent)
        with ModelClient(config(b, cache_dir=cache, api_key_env="SOME_OTHER_KEY")) as client:
            moved = client.chat([ask("a5", "describe", [png()])])[0]
        with ModelClient(config(b, cache_dir=cache, prompt_version="2")) as client:
            new_prompt = client.chat([ask("a6", "describe", [png()])])[0]
    assert not first.cached and again.cached and again.texts == first.texts and again.request_id == "a2"
    assert not other_image.cached and not other_params.cached
    assert moved.cached and not new_prompt.cached
    assert len(a.requests) == 3 and len(b.requests) == 1
    for entry in (tmp_path / "cache").rglob("*.json"):
        assert a.url not in entry.read_text() and b.url not in entry.read_text()


def test_failures_are_not_cached(tmp_path):
    cache = str(tmp_path / "cache")
    with ScriptedServer({"x": [("status", 500), ("reply", ["later"])]}) as server:
        with ModelClient(config(server, cache_dir=cache, max_retries=0)) as client:
            failed = client.chat([ask("a", "script:x")])[0]
            retried = client.chat([ask("a", "script:x")])[0]
            cached = client.chat([ask("a", "script:x")])[0]
    assert failed.error == "http_500_exhausted" and retried.ok and not retried.cached and cached.cached


# --- pieces: Retry-After, schema validation, client_for ------------------------------------------------


def test_retry_after_forms():
    assert parse_retry_after({"Retry-After": "120"}) == 120.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, now=1445412480 - 30) == 30.0
    assert parse_retry_after({"Retry-After": "soon"}) is None and parse_retry_after({}) is None


def test_schema_subset():
    assert first_violation({"score": 3, "why": "ok"}, SCORE) is None
    assert first_violation({"score": 3.0, "why": "ok"}, SCORE) is None  # 3.0 is an integer in JSON
    assert "missing required 'why'" in first_violation({"score": 3}, SCORE)
    assert "unexpected property" in first_violation({"score": 3, "why": "", "x": 1}, SCORE)
    assert "maximum" in first_violation({"score": 11, "why": ""}, SCORE)
    assert "expected integer" in first_violation({"score": True, "why": ""}, SCORE)
    refs = {"$defs": {"tag": {"enum": ["a", "b"]}}, "type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 1}
    assert first_violation(["a", "b"], refs) is None and "not one of" in first_violation(["c"], refs)
    assert "fewer than 1" in first_violation([], refs)
    either = {"anyOf": [{"type": "string", "pattern": "^[0-9]+$"}, {"type": "null"}]}
    assert (
        first_violation("42", either) is None and first_violation(None, either) is None and first_violation("x", either)
    )
    with pytest.raises(SchemaError, match="does not resolve"):
        check_schema({"$ref": "#/$defs/missing"})
    with pytest.raises(SchemaError, match="only local"):
        check_schema({"$ref": "http://example.com/s.json"})


def test_client_for_is_one_client_per_config():
    with ScriptedServer() as server:
        cfg = config(server)
        assert client_for(cfg) is client_for(config(server)) and client_for(cfg) is not client_for(config(server, n=2))


# --- in-process transformers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return save_tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"))


def test_transformers_backend_batches_seeds_and_logprobs(tiny_qwen):
    cfg = ClientConfig(
        backend="transformers",
        model_path=str(tiny_qwen),
        batch_size=2,
        max_tokens=6,
        temperature=0.8,
        seed=3,
        n=2,
        logprobs=True,
        top_logprobs=3,
    )
    requests = [ask(f"r{i}", f"question {i}") for i in range(3)]
    with ModelClient(cfg) as client:
        first = client.chat(requests)
        second = client.chat(requests)
        greedy = client.chat([ask("g", "question 0", temperature=0.0, n=1, logprobs=False)])[0]
        picture = client.chat([ask("img", "what is this?", [png()])])[0]
    assert all(c.ok for c in first) and [c.texts for c in first] == [c.texts for c in second]  # seeded batches repeat
    for done in first:
        assert len(done.texts) == 2 and all(t.strip() for t in done.texts)
        assert [
            "".join(tok["token"] for tok in lp) for lp in done.logprobs
        ] == done.texts  # one entry per generated token
        assert all(len(tok["top_logprobs"]) == 3 and tok["logprob"] <= 0 for lp in done.logprobs for tok in lp)
        assert (
            done.usage["completion_tokens"] > 0
            and done.usage["prompt_tokens"] > 0
            and done.finish_reasons[0] in ("stop", "length")
        )
    assert greedy.ok and greedy.logprobs is None
    assert picture.error == "images_unsupported"


def test_transformers_backend_rejects_what_it_cannot_answer(tiny_qwen):
    cfg = ClientConfig(
        backend="transformers",
        model_path=str(tiny_qwen),
        max_tokens=4,
        temperature=0.0,
        response_schema=SCORE,
        schema_reasks=1,
    )
    with ModelClient(cfg) as client:
        json_reply, too_long = client.chat([ask("j", "rate it as JSON"), ask("long", "word " * 3000)])
    assert (
        json_reply.error in ("malformed_json", "empty_reply") and json_reply.attempts == 2
    )  # a random model writes no JSON
    assert too_long.error == "prompt_too_long"


def test_transformers_vision_model_batches_images_and_text(tmp_path):
    folder = save_tiny_qwen2_vl(tmp_path / "tiny_qwen2_vl")
    cfg = ClientConfig(backend="transformers", model_path=str(folder), max_tokens=5, temperature=0.0, batch_size=4)
    with ModelClient(cfg) as client:
        mixed = client.chat(
            [
                ask("img", "What is this?", [png(size=(64, 48))]),
                ask("txt", "What is this?"),
                ask("two", "Compare.", [png(), png((0, 0, 255))]),
            ]
        )
        alone = client.chat([ask("img", "What is this?", [png(size=(64, 48))])])[0]
    assert all(c.ok and len(c.texts) == 1 and c.texts[0].strip() for c in mixed)
    image, text, two = (c.usage["prompt_tokens"] for c in mixed)
    assert image > text and two > text  # the processor expanded each image into its tokens
    assert alone.texts == mixed[0].texts  # greedy: the same answer alone as in a left-padded batch


def test_keye_export_answers_about_an_image(tmp_path):
    folder = save_tiny_keye(tmp_path / "keye_export", ROOT)
    cfg = ClientConfig(
        backend="transformers", model_path=str(folder), max_tokens=5, temperature=0.7, seed=1, n=2, batch_size=4
    )
    with ModelClient(cfg) as client:
        done = client.chat([ask("img", "Describe the picture.", [png(size=(56, 84))]), ask("txt", "Say hi.")])
        again = client.chat([ask("img", "Describe the picture.", [png(size=(56, 84))]), ask("txt", "Say hi.")])
        logprobs = client.chat([ask("lp", "x", logprobs=True)])[0]
    assert all(c.ok for c in done) and all(len(c.texts) == 2 for c in done)
    assert [c.texts for c in done] == [c.texts for c in again]
    assert done[0].usage["prompt_tokens"] > done[1].usage["prompt_tokens"]  # the image's tokens are in the prompt
    assert logprobs.error == "bad_request"


# --- Spark ---------------------------------------------------------------------------------------------


def test_chat_frame_in_spark(spark):
    rows = [("a", "script:ok first"), ("b", "script:down second"), ("c", "BREAK"), ("d", "script:ok fourth")]
    df = spark.createDataFrame(rows, "id string, text string").repartition(2)

    # Defined here, using only importable names: Spark's workers unpickle them without this module.
    def to_request(row):
        if row["text"] == "BREAK":
            raise ValueError("no text to send")
        return ChatRequest(row["id"], [{"role": "user", "content": [{"type": "text", "text": row["text"]}]}])

    def from_completion(row, completion):
        if completion.ok:
            return [{"id": row["id"], "reply": completion.texts[0], "_reject": None}]
        return [{"id": row["id"], "reply": None, "_reject": reject_of(completion, "recaption")}]

    schema = "id string, reply string, _reject struct<step:string,reason:string,detail:string>"
    with ScriptedServer({"ok": [("reply", ["fine"])], "down": [("status", 503)]}) as server:
        out = chat_frame(df, config(server, max_retries=1), to_request, from_completion, schema)
        got = {r["id"]: r for r in out.collect()}
    assert sorted(got) == ["a", "b", "c", "d"]  # in = kept + rejected
    assert got["a"]["reply"] == "fine" and got["a"]["_reject"] is None and got["d"]["reply"] == "fine"
    assert (got["b"]["_reject"]["step"], got["b"]["_reject"]["reason"]) == ("recaption", "http_503_exhausted")
    assert got["c"]["_reject"]["reason"] == "bad_request" and "no text to send" in got["c"]["_reject"]["detail"]
