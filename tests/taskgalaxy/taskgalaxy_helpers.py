"""An OpenAI-compatible server on 127.0.0.1 that plays TaskGalaxy's models for the generation
test, deciding each reply from the request (which model, which prompt), with the faults the test
needs:

    every request       the first `storm` requests get 429 (Retry-After: 0): a 429 storm
    model "writer"      filter prompts: prose first (not JSON: the client re-asks), then JSON
                        naming two of the listed candidates plus one label that is not listed;
                        question prompts: a question and an answer
    model "judge-yes"   every judgement positive
    model "judge-picky" negative for the images whose base64 payload's sha256 starts with 0-7 (about
                        half; picky(image bytes) says which), so their pairs get one yes vote
                        and are rejected
    model "judge-slow"  sleeps longer than the client's timeout (a judge that times out)
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time

from synthesis.model_client.rule_server import RuleServer, completion

MADE_UP = "made up~not a candidate~at all"


def picky(payload: str | bytes) -> bool:
    """judge-picky's rule, from the image's base64 payload (or its bytes)."""
    if isinstance(payload, bytes):
        payload = base64.b64encode(payload).decode()
    return hashlib.sha256(payload.encode()).hexdigest()[0] in "01234567"


def _image_payload(body: dict) -> str:
    for part in body["messages"][0]["content"]:
        if part.get("type") == "image_url":
            return part["image_url"]["url"].split(",", 1)[1]
    return ""


def _text(body: dict) -> str:
    first = body["messages"][0]["content"]
    return first if isinstance(first, str) else " ".join(p.get("text", "") for p in first if p.get("type") == "text")


class GenerationServer(RuleServer):
    def __init__(self, storm: int = 6, slow_seconds: float = 2.0):
        super().__init__(self._counted)
        self.storm, self.slow_seconds = storm, slow_seconds
        self.statuses: list[int] = []
        self._seen = 0
        self._count_lock = threading.Lock()

    def _counted(self, body: dict) -> tuple[int, dict, dict]:
        with self._count_lock:
            self._seen += 1
            number = self._seen
        status, payload, headers = self._reply(body, number)
        with self._count_lock:
            self.statuses.append(status)
        return status, payload, headers

    def _reply(self, body: dict, number: int) -> tuple[int, dict, dict]:
        if number <= self.storm:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        model, text = body.get("model"), _text(body)
        if model == "judge-slow":
            time.sleep(self.slow_seconds)
        if model and model.startswith("judge"):
            path = re.search(r"Task type: (\S[^(]*?) \(", text).group(1)
            ok = not (model == "judge-picky" and picky(_image_payload(body)))
            return 200, completion(body, [json.dumps({"task_type_fits": ok, "question_fits": ok, "answer_correct": ok})]), {}
        if text.startswith("Here are candidate task types"):
            listed = re.findall(r"^- ([^:\n]+):", text, flags=re.M)
            if len(body["messages"]) == 1:  # the first ask: prose, which the client must re-ask
                return 200, completion(body, ["I think the first two fit best."]), {}
            return 200, completion(body, [json.dumps({"task_types": listed[:2] + [MADE_UP]})]), {}
        path = re.search(r"Task type: (\S[^(]*?) \(", text).group(1)
        return 200, completion(body, [json.dumps({"question": f"A question of type {path}?", "answer": "An answer."})]), {}
