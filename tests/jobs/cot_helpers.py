"""A teacher on 127.0.0.1 for the build_cot tests: a real HTTP server speaking the OpenAI
chat-completions format that answers each question it was given the answer of, in the mode its
switch asks for, with one wrong reply, a long right one and a short right one (agentic: code that
saves an image and prints the answer, and once a reply whose claimed output differs from what the code prints)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

from synthesis.model_client.rule_server import LocalServer

SWITCHES = {" /agentic_think": "agentic", " /auto_think": "auto_think", " /no_think": "no_think", " /think": "think"}


def replies(answer: str, mode: str) -> list[str]:
    boxed = f"\\boxed{{{answer}}}"
    if mode == "no_think":
        return ["999", f"The answer, after looking at the picture carefully, is {answer}.", answer]
    if mode == "auto_think":
        return [f"<analysis>Easy.</analysis>999",
                f"<analysis>This needs care.</analysis><think>Looking at every part of the image in turn.</think><answer>{boxed}</answer>",
                f"<analysis>Easy.</analysis>{answer}"]
    if mode == "agentic":
        code = f"from PIL import Image\nImage.new('RGB', (16, 8), 'red').save('zoom.png')\nprint({answer!r})"
        good = (f"<think>Let me check with code.\n<code>```python\n{code}\n```</code>\n<sandbox_output>{answer}\n"
                f"</sandbox_output>\nIt printed {answer}.</think>\n<answer>{boxed}</answer>")
        lying = good.replace(f"<sandbox_output>{answer}\n", "<sandbox_output>something else\n")
        return [lying, good + " " * 40, good]
    return [f"<think>Wrong sum.</think><answer>\\boxed{{999}}</answer>",
            f"<think>Counting each one slowly, twice, to be sure.</think><answer>{boxed}</answer>",
            f"<think>Counted.</think><answer>{boxed}</answer>"]


class TeacherServer(LocalServer):
    """`answers`: question text -> answer. Questions it does not know get wrong replies only."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.requests = answers, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                server.requests.append(body)
                texts = [p["text"] for m in body["messages"] if m["role"] == "user"
                         for p in (m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}])
                         if p.get("type") == "text"]
                question = texts[-1] if texts else ""
                mode = next((m for s, m in SWITCHES.items() if question.endswith(s)), "think")
                for switch in SWITCHES:
                    question = question.removesuffix(switch)
                answer = server.answers.get(question.strip())
                choices = replies(answer, mode) if answer is not None else ["no idea"] * 3
                n = int(body.get("n") or 1)
                payload = json.dumps({
                    "id": "x", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": choices[i % len(choices)]}}
                                for i in range(n)],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._serve(Handler)
