"""Assistant replies in each reasoning mode, as content parts of the sample contract.

    think       <think>\\nSTEPS\\n</think>\\n\\n<answer>ANSWER</answer>
    no_think    ANSWER
    auto_think  <analysis>DECISION</analysis>\\n\\n then the no_think or the think reply
    agentic     <think>\\nBEFORE\\n\\n<code>```python\\nCODE```</code>\\n | <sandbox_output>STDOUT</sandbox_output>
                | saved images | \\nAFTER\\n</think>\\n\\n<answer>ANSWER</answer>

(tags and the fence from ModeTemplates; ANSWER boxed for the boxed kinds). In agentic replies the
sandbox output is a text part of its own, tags included, so the processor can keep it out of the
loss; the images the code saved follow it as image parts that index past the task's own images.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from curation.schema import image_part, text_part
from synthesis.reasoning.agentic import AgenticRun
from synthesis.reasoning.task import Task
from synthesis.reasoning.templates import MODES, ModeTemplates


@dataclass
class Plan:
    """What a reply says; corruptions edit a plan before it is written out."""

    steps: list[str]
    answer: str
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    direct: bool = False  # auto_think: answer without reasoning
    answer_times: int = 1  # the answer written this many times (a looping reply)


def plan_of(task: Task, mode: str) -> Plan:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; modes: {MODES}")
    return Plan(
        list(task.steps),
        task.answer,
        list(task.agentic_before),
        list(task.agentic_after),
        direct=mode == "no_think" or (mode == "auto_think" and task.simple),
    )


def mode_rng(task: Task, mode: str, salt: str = "") -> random.Random:
    return random.Random(f"keyeforge.reasoning.reply:{task.kind}:{task.lang}:{task.seed}:{mode}:{salt}")


def analysis_sentence(task: Task, templates: ModeTemplates, direct: bool) -> str:
    sentences = templates.auto_think.direct if direct else templates.auto_think.think
    return sentences.pick(mode_rng(task, "auto_think"), task.lang).format(reason=task.analysis)


def think_reply(templates: ModeTemplates, steps: list[str], body: str) -> str:
    t = templates.tags
    return f"{t.think.open}\n" + "\n".join(steps) + f"\n{t.think.close}\n\n" + t.answer.wrap(body)


def write(task: Task, mode: str, templates: ModeTemplates, plan: Plan, run: AgenticRun | None = None) -> list[dict]:
    """The reply's content parts (text, and for agentic the saved images' parts)."""
    body = "\n".join([templates.answer_body(plan.answer, task.answer_kind)] * plan.answer_times)
    t = templates.tags
    if mode == "no_think":
        return [text_part(body)]
    if mode == "think":
        return [text_part(think_reply(templates, plan.steps, body))]
    if mode == "auto_think":
        head = t.analysis.wrap(analysis_sentence(task, templates, plan.direct)) + "\n\n"
        return [text_part(head + (body if plan.direct else think_reply(templates, plan.steps, body)))]
    if run is None:
        raise ValueError("an agentic reply needs the sandbox run of the task's code")
    code = templates.code_fence.wrap(task.agentic_code)
    parts = [
        text_part(f"{t.think.open}\n" + "\n".join(plan.before) + "\n\n" + t.code.wrap(code) + "\n"),
        text_part(t.sandbox_output.wrap(run.stdout)),
    ]
    parts += [image_part(len(task.images) + k) for k in range(len(run.saved))]
    parts.append(text_part("\n" + "\n".join(plan.after) + f"\n{t.think.close}\n\n" + t.answer.wrap(body)))
    return parts


def text_of(parts: list[dict]) -> str:
    """A reply's text: its text parts joined (images are not text)."""
    return "".join(p["text"] for p in parts if p["type"] == "text")
