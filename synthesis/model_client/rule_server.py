"""An OpenAI-compatible chat server on 127.0.0.1 that answers each request by a rule you give: for
tests and benchmarks of the jobs that call models (nothing here is a model).

    def reply(body: dict) -> tuple[int, dict] | tuple[int, dict, dict]:   # status, JSON, headers
        return 200, completion(body, ["4"])

    with RuleServer(reply) as server:
        ... ClientConfig(base_urls=[server.url], model="any") ...

`completion(body, texts)` builds a chat completion with the request's `n` choices (texts cycled;
with per-word logprobs of -0.5 when the request asks for logprobs);
`user_texts(body)` are the user turns' texts (a turn's content may be a string or parts);
`LocalServer` is the threaded server on a free local port that other test servers build on.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def user_texts(body: dict) -> list[str]:
    texts = []
    for message in body.get("messages") or []:
        if message.get("role") == "user":
            content = message.get("content")
            texts.append(content if isinstance(content, str)
                         else " ".join(p.get("text", "") for p in content or () if p.get("type") == "text"))
    return texts


def completion(body: dict, texts: list[str]) -> dict:
    n = int(body.get("n") or 1)
    choices = []
    for i in range(n):
        text = texts[i % len(texts)]
        choice = {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        if body.get("logprobs"):
            top = int(body.get("top_logprobs") or 0)
            choice["logprobs"] = {"content": [
                {"token": w, "logprob": -0.5, "bytes": list(w.encode()), "top_logprobs": [{"token": w, "logprob": -0.5}] * top}
                for w in text.split()]}
        choices.append(choice)
    return {"id": "chatcmpl-rule", "object": "chat.completion", "created": 0, "model": body.get("model"), "choices": choices,
            "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n}}


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 at a free port, serving while used as a context
    manager; `url` is its OpenAI-style base (`.../v1`). Subclasses build their request handler
    and call `_serve(handler)` at the end of `__init__`."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RuleServer(LocalServer):
    def __init__(self, reply: Callable[[dict], tuple]):
        self.reply = reply
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                with server._lock:
                    server.requests.append(body)
                status, payload, *rest = server.reply(body)
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                                       **(rest[0] if rest else {})}.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout): nothing to answer

        self._serve(Handler)
