"""Contract rows (curation.schema) from tasks: a vqa row per reasoning mode, and rl rows.

The user turn holds the image part(s), then the question text, without the mode's switch: the row
carries think_mode and the trainer's processor appends the switch. ``extra`` records the task
(kind, seed, lang), its answer, answer kind and choices, and its checks: the independent answer
check when check_task ran, and for agentic rows that the sandbox output held the result line.
"""

from __future__ import annotations

from collections.abc import Callable

from curation.schema import image_entry, image_part, make_row, message
from synthesis.reasoning import agentic, replies
from synthesis.reasoning.task import Task
from synthesis.reasoning.templates import MODES, ModeTemplates

SOURCE = "synthetic_reasoning"


def prompt(task: Task) -> list[dict]:
    return [message("user", *[image_part(i) for i in range(len(task.images))], task.question)]


def task_extra(task: Task, mode: str, checks: dict | None = None, **more) -> dict:
    recorded = dict(checks or {})
    if task.check is not None:
        recorded["answer"] = {"ok": task.check[0], "how": task.check[1]}
    return {
        "kind": task.kind,
        "seed": task.seed,
        "lang": task.lang,
        "mode": mode,
        "answer": task.answer,
        "answer_kind": task.answer_kind,
        "choices": task.choices,
        "checks": recorded,
        **more,
    }


def run_if_agentic(task: Task, mode: str, sandbox_run: Callable | None) -> tuple[agentic.AgenticRun | None, dict]:
    if mode != "agentic":
        return None, {}
    run = agentic.run(task, sandbox_run)
    return run, {"sandbox": {"ok": True, "how": f"the sandbox output contains {task.agentic_expect!r}"}}


def agentic_extra(task: Task, run: agentic.AgenticRun | None) -> dict:
    if run is None:
        return {}
    return {"agentic": {"input_images": len(task.images), "saved_images": [name for name, _ in run.saved]}}


def mode_row(task: Task, mode: str, templates: ModeTemplates, sandbox_run: Callable | None = None) -> dict:
    """A vqa row in `mode`. For agentic, runs the task's code (SandboxFailed on failure)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; modes: {MODES}")
    run, checks = run_if_agentic(task, mode, sandbox_run)
    parts = replies.write(task, mode, templates, replies.plan_of(task, mode), run)
    images = [image_entry(data) for data in task.images] + [image_entry(data) for _, data in (run.saved if run else ())]
    return make_row(
        SOURCE,
        "vqa",
        prompt(task) + [message("assistant", *parts)],
        images,
        think_mode=mode,
        task_types=[task.task_type],
        lang=task.lang,
        extra=task_extra(task, mode, checks, **agentic_extra(task, run)),
    )


def rl_row(task: Task, mode: str) -> dict:
    """An rl row: the prompt only, the answer as ground truth (extra says how to match it)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; modes: {MODES}")
    return make_row(
        SOURCE,
        "rl",
        prompt(task),
        [image_entry(data) for data in task.images],
        answer=task.answer,
        think_mode=mode,
        task_types=[task.task_type],
        lang=task.lang,
        extra=task_extra(task, mode),
    )
