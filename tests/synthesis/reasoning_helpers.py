"""Shared helpers of the reasoning-task tests: the sandbox to run agentic code in, and the pieces
of a row's reply (its text, its code, what it says the sandbox printed, its input files)."""

from __future__ import annotations

import functools
import json
import re

from synthesis.reasoning import ModeTemplates, input_files

TEMPLATES = ModeTemplates.load()


@functools.lru_cache(maxsize=1)
def sandbox_run():
    """synthesis.sandbox.run_python; where bubblewrap cannot make namespaces, its unsafe_subprocess
    mode (what runs is our own generated code: the tests are about its output, not isolation).
    A generous timeout: the test machine may be busy, and a slow run is not a wrong one."""
    from synthesis.sandbox import SandboxUnavailable, check_sandbox, run_python

    try:
        check_sandbox()
        mode = "bwrap"
    except SandboxUnavailable:
        mode = "unsafe_subprocess"

    def run(code: str, files: dict[str, bytes]):
        return run_python(code, files=files, timeout_s=120, mode=mode)

    return run


def reply_text(row: dict, key: str = "messages") -> str:
    turn = row[key][-1]
    assert turn["role"] == "assistant"
    return "".join(p["text"] for p in turn["content"] if p["type"] == "text")


def code_of(reply: str) -> str:
    t = TEMPLATES
    pattern = (
        re.escape(t.tags.code.open + t.code_fence.open) + r"(.*?)" + re.escape(t.code_fence.close + t.tags.code.close)
    )
    found = re.findall(pattern, reply, re.DOTALL)
    assert len(found) == 1, reply
    return found[0]


def sandbox_output_of(reply: str) -> str:
    tag = TEMPLATES.tags.sandbox_output
    found = re.findall(re.escape(tag.open) + r"(.*?)" + re.escape(tag.close), reply, re.DOTALL)
    assert len(found) == 1, reply
    return found[0]


def row_inputs(row: dict) -> dict[str, bytes]:
    """The files an agentic row's code sees: its input images (not those the code saved)."""
    n = json.loads(row["extra"])["agentic"]["input_images"]
    return input_files([image["bytes"] for image in row["images"][:n]])
