"""A teacher model's reasoning on the user's prompts: prompts x modes -> the model client -> replies
checked against each prompt's answer -> rows of the mode's folder.

Prompts (`synthesis.cot.prompts`) are rows that carry an answer, from shard folders or JSONL:
their user turns (images and text) are the prompt. For each prompt and mode the
client asks for `samples` replies, with a system prompt that states the mode's format and the
mode's switch at the end of the user text. A reply is kept when `extract_answer` finds its final
answer and `answers_match` says it equals the reference (math-verify for math, normalised match
for choices and numbers); of the correct replies the shortest is kept (`keep=shortest`) or all.
An agentic reply's code runs in the sandbox with the prompt's images as `image_<i>.<ext>`: it is
kept only when the code runs and printed exactly what the reply's `<sandbox_output>` says (the
reasoning after it was built on that output). A prompt with no kept reply is a refused row with
the reason: the client's (`timeout`, `http_429_exhausted`, `schema_violation`, ...), or
`no_correct_reply` / `sandbox_failed` / `sandbox_output_differs` with the counts.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Literal

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from curation import schema
from curation.sources.common import ROW_SCHEMA
from curation.steps import REJECT
from synthesis.model_client import ChatRequest, ClientConfig, Completion, chat_frame
from synthesis.sandbox import SandboxConfig

STEP = "teacher"
FOLDER = "_folder"  # which output folder a row goes to (its mode)
Mode = Literal["think", "no_think", "auto_think", "agentic"]

DEFAULT_SYSTEM = {
    "think": "Think step by step inside <think></think>, then give the final answer inside <answer></answer>; "
    "put a numeric or mathematical final answer in \\boxed{}.",
    "no_think": "Answer directly with the final answer only, no reasoning.",
    "auto_think": "First decide inside <analysis></analysis> whether the question needs step-by-step reasoning. "
    "If it does not, give the answer directly; if it does, think inside <think></think> and answer inside <answer></answer>.",
    "agentic": "Think step by step inside <think></think>. When looking closer at the image helps, write Python inside "
    "<code>```python ... ```</code> that reads image_0.png (image_1.jpg, ...) with PIL and numpy and prints what you "
    "need; its output follows inside <sandbox_output></sandbox_output>. Then give the final answer inside <answer></answer>.",
}


@dataclass
class TeacherConfig:
    enabled: bool = False
    client: ClientConfig = field(default_factory=ClientConfig)
    modes: list[Mode] = field(default_factory=lambda: ["think", "no_think", "auto_think", "agentic"])
    samples: int = 4  # replies asked per prompt and mode
    keep: Literal["shortest", "all"] = "shortest"
    system: dict[Mode, str] = field(default_factory=lambda: dict(DEFAULT_SYSTEM))


def teacher_frame(prompts: DataFrame, cfg: TeacherConfig, sandbox: SandboxConfig, templates: str) -> DataFrame:
    """Every (prompt, mode) through the client: kept rows and refusals (ROW_SCHEMA + `_folder`).
    `prompts` come from `synthesis.cot.prompts.prompt_rows`: a prompt refused there (a bad line)
    is a refused row in every mode's folder, with its reason."""
    spark = prompts.sparkSession
    modes = spark.createDataFrame([(m,) for m in cfg.modes], f"{FOLDER} string")
    out_schema = from_arrow_schema(ROW_SCHEMA).add(FOLDER, "string")
    good = prompts.where(F.col(REJECT).isNull()).drop(REJECT).crossJoin(modes)
    bad = prompts.where(F.col(REJECT).isNotNull()).crossJoin(modes).select(*out_schema.fieldNames())
    client = dataclasses.replace(cfg.client, n=cfg.samples)
    asked = chat_frame(good, client, _Ask(cfg, templates), _Judge(cfg, sandbox), out_schema)
    return asked.unionByName(bad)


def prompt_turns(row: dict) -> list[dict]:
    """The user (and system) turns of a prompt row: what the model is asked."""
    return [m for m in row["messages"] or () if m["role"] in ("system", "user")]


def with_switch(turns: list[dict], switch: str) -> list[dict]:
    """The turns with `switch` at the end of the last user text (a text part added if none)."""
    turns = [{"role": t["role"], "content": [dict(p) for p in t["content"]]} for t in turns]
    users = [t for t in turns if t["role"] == "user"]
    if users:
        texts = [p for p in users[-1]["content"] if p["type"] == "text"]
        if texts:
            texts[-1]["text"] = (texts[-1]["text"] or "") + switch
        else:
            users[-1]["content"].append({"type": "text", "text": switch.strip(), "index": None})
    return turns


class _Ask:
    def __init__(self, cfg: TeacherConfig, templates_path: str):
        self.cfg, self.templates_path, self.templates = cfg, templates_path, None

    def __call__(self, row: dict) -> ChatRequest:
        from synthesis.reasoning import ModeTemplates

        self.templates = self.templates or ModeTemplates.load(self.templates_path)
        mode = row[FOLDER]
        turns = with_switch(prompt_turns(row), self.templates.switch(mode))
        system = [{"role": "system", "content": [{"type": "text", "text": self.cfg.system[mode]}]}]
        images = [image["bytes"] for image in row["images"] or ()]
        return ChatRequest(id=f"{row['id']}:{mode}", messages=system + turns, images=images)


class _Judge:
    """Completion -> the kept row(s) of the prompt in its mode, or one refused row."""

    def __init__(self, cfg: TeacherConfig, sandbox: SandboxConfig):
        self.cfg, self.sandbox = cfg, sandbox

    def __call__(self, row: dict, completion: Completion) -> list[dict]:
        from synthesis.reasoning import answers_match, extract_answer

        mode = row[FOLDER]
        if not completion.ok:
            return [self.refused(row, completion.error or "client_error", completion.detail or "")]
        kind = json.loads(row.get("extra") or "{}").get("answer_kind", "text")
        correct, failures = [], {"wrong_answer": 0, "no_answer": 0, "sandbox_failed": 0, "sandbox_output_differs": 0}
        saved: dict[str, list[list[bytes]]] = {}  # agentic reply -> images each code block saved
        for text in completion.texts:
            found = extract_answer(text, mode)
            if found is None:
                failures["no_answer"] += 1
            elif not answers_match(found, row["answer"], kind):
                failures["wrong_answer"] += 1
            elif mode == "agentic" and isinstance(replayed := self.replay(text, row), str):
                failures[replayed] += 1
            else:
                correct.append(text)
                if mode == "agentic":
                    saved[text] = replayed
        if not correct:
            reason = "no_correct_reply"
            if failures["sandbox_failed"] + failures["sandbox_output_differs"] and not failures["wrong_answer"]:
                reason = max(("sandbox_failed", "sandbox_output_differs"), key=lambda k: failures[k])
            return [self.refused(row, reason, json.dumps(failures, sort_keys=True))]
        kept = sorted(correct, key=len)[:1] if self.cfg.keep == "shortest" else correct
        return [self.kept_row(row, text, len(completion.texts), len(correct), saved.get(text, [])) for text in kept]

    def replay(self, text: str, row: dict) -> str | list[list[bytes]]:
        """Run every code block of an agentic reply again: the images each block saved, or the
        reason it fails (a block that does not run, saves an unreadable image, or did not print
        what the reply says it printed)."""
        from synthesis.reasoning import input_files
        from synthesis.reasoning.agentic import SandboxFailed, saved_images
        from synthesis.sandbox import run_python

        files = input_files([image["bytes"] for image in row["images"] or ()])
        saved = []
        for code, claimed in code_and_outputs(text):
            result = run_python(code, files=files, **dataclasses.asdict(self.sandbox))
            if not result.ok:
                return "sandbox_failed"
            if claimed is None or result.stdout.strip() != claimed.strip():
                return "sandbox_output_differs"
            try:
                saved.append([data for _, data in saved_images(result.files, files)])
            except SandboxFailed:
                return "sandbox_failed"
        return saved

    def kept_row(self, row: dict, reply: str, asked: int, correct: int, saved: list[list[bytes]]) -> dict:
        mode = row[FOLDER]
        extra = json.loads(row.get("extra") or "{}")
        extra.update({"teacher": self.cfg.client.model or self.cfg.client.model_path, "prompt_id": row["id"],
                      "answer": row["answer"], "replies_asked": asked, "replies_correct": correct})
        images = [dict(i) for i in row["images"] or ()]
        parts = reply_parts(reply, saved, first_index=len(images))
        images += [schema.image_entry(data) for block in saved for data in block]
        if any(saved):
            extra["agentic"] = {"input_images": len(row["images"] or ()), "saved_images": sum(map(len, saved))}
        out = schema.make_row(
            "teacher_reasoning", "vqa", [*prompt_turns(row), {"role": "assistant", "content": parts}],
            images, think_mode=mode, task_types=row.get("task_types") or (), lang=row.get("lang"), extra=extra,
        )
        return {**out, REJECT: None, FOLDER: mode}

    def refused(self, row: dict, reason: str, detail: str) -> dict:
        mode = row[FOLDER]
        origin = f"{row['id']}:{mode}"
        out = schema.make_row("teacher_reasoning", "vqa", [], id=schema.raw_id(STEP, origin), extra={"origin": origin})
        return {**out, REJECT: {"step": STEP, "reason": reason, "detail": detail[:300]}, FOLDER: mode}


_CODE = re.compile(r"<code>\s*```(?:python)?\n(.*?)```\s*</code>\s*(?:<sandbox_output>(.*?)</sandbox_output>)?", re.S)


def reply_parts(text: str, saved: list[list[bytes]], first_index: int) -> list[dict]:
    """An assistant reply as content parts: its text, with the images each code block saved shown
    right after that block's <sandbox_output> (image parts indexing past the prompt's images)."""
    parts, start, index = [], 0, first_index
    for match, images in zip(_CODE.finditer(text), saved):
        if images:
            parts.append(schema.text_part(text[start : match.end()]))
            parts += [schema.image_part(index + k) for k in range(len(images))]
            start, index = match.end(), index + len(images)
    parts.append(schema.text_part(text[start:]))
    return parts


def code_and_outputs(text: str) -> list[tuple[str, str | None]]:
    """(code, the sandbox output the reply shows after it, or None) of each code block in order."""
    return [(m.group(1), m.group(2)) for m in _CODE.finditer(text)]
