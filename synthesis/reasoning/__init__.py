"""Verifiable synthetic reasoning tasks, the reasoning-mode formats, and post-training rows.

The embedded default teacher: generators draw an image and know its answer, in English and
Chinese, with step-by-step reasoning computed from their own state; every answer can be confirmed
by an independent check that reads only the pixels (and what the question asks)::

    from synthesis.reasoning import TASK_KINDS, MODES, ModeTemplates, make_task, check_task, mode_row

    templates = ModeTemplates.load()                   # configs/reasoning_modes.yaml
    task = make_task("count_shapes", seed=7, lang="zh")  # same (kind, seed, lang): same bytes
    ok, how = check_task(task)                         # connected components, OCR, bar heights
    row = mode_row(task, "think", templates)           # a contract row, kind "vqa"
    row = mode_row(task, "agentic", templates, sandbox_run=synthesis.sandbox.run_python)
    pair = preference_row(task, "think", templates, "wrong_step")   # kind "preference"
    prompt = rl_row(task, "think")                     # kind "rl": prompt + answer

Task kinds (``TASK_KINDS``): count_shapes, bar_chart_compare, arithmetic, rotated_text,
low_contrast_text, small_text_zoom. Modes (``MODES``): think, no_think, auto_think, agentic; their
formats are in replies.py and the templates in configs/reasoning_modes.yaml.

Switches: rows carry ``think_mode`` and the question WITHOUT the switch (" /think", ...): the
trainer's processor appends it from think_mode (training/processor.py). A prompt for a model (the
teacher path) gets it from ``ModeTemplates.prompt_text(question, mode)``. no_think replies are the
answer alone; the processor adds the empty think block the chat template expects.

Agentic rows run the task's code in the sandbox (the job passes synthesis.sandbox.run_python); the
code sees the input images as image_<i>.<ext>. A failed run raises ``SandboxFailed`` with
``reason`` "sandbox_failed", "sandbox_timeout" or "sandbox_mismatch" (the output lacks the result
the reasoning then uses): the job records the row in _rejects/ with that reason.

Answers: ``extract_answer(reply, mode)`` reads the answer out of a reply in a mode's format (None
when the format is broken); ``answers_match(predicted, reference, answer_kind)`` compares numbers
by value (math-verify for LaTeX forms) and choices and texts by normalised text.
"""

from __future__ import annotations

from synthesis.reasoning.agentic import SandboxFailed
from synthesis.reasoning.answers import answers_match, extract_answer, format_ok
from synthesis.reasoning.checks import check_task
from synthesis.reasoning.generators import GENERATORS
from synthesis.reasoning.preference import CORRUPTIONS, corruptions_for, preference_row
from synthesis.reasoning.rows import SOURCE, mode_row, rl_row
from synthesis.reasoning.task import LANGS, Task, input_files
from synthesis.reasoning.templates import MODES, ModeTemplates

TASK_KINDS: tuple[str, ...] = tuple(GENERATORS)


def make_task(kind: str, seed: int, lang: str) -> Task:
    """The task `kind` number `seed` in `lang` ("en" or "zh"); deterministic."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown task kind {kind!r}; kinds: {TASK_KINDS}")
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; languages: {LANGS}")
    return GENERATORS[kind](int(seed), lang)


__all__ = [
    "CORRUPTIONS",
    "LANGS",
    "MODES",
    "SOURCE",
    "TASK_KINDS",
    "ModeTemplates",
    "SandboxFailed",
    "Task",
    "answers_match",
    "check_task",
    "corruptions_for",
    "extract_answer",
    "format_ok",
    "input_files",
    "make_task",
    "mode_row",
    "preference_row",
    "rl_row",
]
