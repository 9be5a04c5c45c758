"""Preference rows: the same prompt answered well (messages) and badly (rejected), the bad reply
made from the task's own state by one corruption, recorded in extra:

    wrong_step     the reasoning with the generator's typical mistake (a missed shape, a dropped
                   carry, a misread bar or letter, the neighbouring note), ending at its answer;
                   in agentic replies the reasoning after the output ignores what the code printed
    wrong_answer   the correct reasoning, then a wrong final answer (the same plausible one)
    broken_format  a structural flaw of the mode (an unclosed tag, missing answer tags, a reasoning
                   block in no_think, no analysis in auto_think, an unclosed code block)
    repetition     a step (or the answer) repeated over and over, as a looping model does

wrong_step needs reasoning: it does not apply to no_think, nor to auto_think tasks answered
directly (``corruptions_for`` lists what applies).
"""

from __future__ import annotations

from collections.abc import Callable

from curation.schema import image_entry, make_row, message, text_part
from synthesis.reasoning import replies
from synthesis.reasoning.rows import SOURCE, agentic_extra, prompt, run_if_agentic, task_extra
from synthesis.reasoning.task import Task
from synthesis.reasoning.templates import ModeTemplates

CORRUPTIONS = ("wrong_step", "wrong_answer", "broken_format", "repetition")


def corruptions_for(task: Task, mode: str) -> tuple[str, ...]:
    direct = mode == "no_think" or (mode == "auto_think" and task.simple)
    return tuple(c for c in CORRUPTIONS if not (c == "wrong_step" and direct))


def looped(lines: list[str], rng) -> list[str]:
    """One line (not the last) repeated 5-8 times where it stands."""
    i = rng.randrange(max(1, len(lines) - 1))
    return lines[:i] + [lines[i]] * rng.randint(5, 8) + lines[i + 1 :]


def corrupted_plan(task: Task, mode: str, plan: replies.Plan, corruption: str, rng) -> tuple[replies.Plan, dict]:
    if corruption == "wrong_answer":
        plan.answer = task.distractor
        return plan, {"rejected_answer": task.distractor}
    if corruption == "wrong_step":
        if mode == "agentic":  # the code's output was right; the reasoning after it is not
            plan.after = [task.wrong_steps[-1]]
        else:
            plan.steps = list(task.wrong_steps)
        plan.answer = task.distractor
        return plan, {"rejected_answer": task.distractor}
    if corruption == "repetition":
        if plan.direct:
            plan.answer_times = rng.randint(5, 8)
        elif mode == "agentic":
            plan.after = looped(plan.after, rng)
        else:
            plan.steps = looped(plan.steps, rng)
        return plan, {}
    return plan, {}


def broken(parts: list[dict], task: Task, mode: str, templates: ModeTemplates, rng) -> tuple[list[dict], str]:
    """The reply's parts with one structural flaw of its mode; (parts, what was broken)."""
    t = templates.tags

    def edit(old: str, new: str) -> list[dict]:
        out, done = [], False
        for p in parts:
            if p["type"] == "text" and not done and old in p["text"]:
                p = {**p, "text": p["text"].replace(old, new, 1)}
                done = True
            out.append(p)
        return out

    if mode == "no_think":
        thought = f"{t.think.open}\n" + "\n".join(task.steps) + f"\n{t.think.close}\n\n"
        return [text_part(thought + parts[0]["text"])], "reasoning_in_no_think"
    if mode == "auto_think":
        text = parts[0]["text"]
        return [text_part(text[text.index(t.analysis.close) + len(t.analysis.close) :].lstrip())], "no_analysis"
    variants = ["unclosed_think", "answer_without_tags"] + (["unclosed_code"] if mode == "agentic" else [])
    variant = rng.choice(variants)
    if variant == "unclosed_think":
        return edit(f"\n{t.think.close}", ""), variant
    if variant == "answer_without_tags":

        def untagged(text: str) -> str:
            return text.replace(t.answer.open, "").replace(t.answer.close, "")

        return [{**p, "text": untagged(p["text"])} if p["type"] == "text" else p for p in parts], variant
    return edit(t.code.close, ""), variant


def preference_row(
    task: Task, mode: str, templates: ModeTemplates, corruption: str, sandbox_run: Callable | None = None
) -> dict:
    """messages: the prompt and the correct reply; rejected: the prompt and the corrupted one."""
    if corruption not in corruptions_for(task, mode):
        raise ValueError(
            f"corruption {corruption!r} does not apply to {mode} replies of {task.kind} seed "
            f"{task.seed}; applicable: {corruptions_for(task, mode)}"
        )
    run, checks = run_if_agentic(task, mode, sandbox_run)
    rng = replies.mode_rng(task, mode, corruption)
    chosen = replies.write(task, mode, templates, replies.plan_of(task, mode), run)
    detail: dict = {}
    if corruption == "broken_format":
        bad, detail["broken"] = broken(chosen, task, mode, templates, rng)
    else:
        plan, detail = corrupted_plan(task, mode, replies.plan_of(task, mode), corruption, rng)
        bad = replies.write(task, mode, templates, plan, run)
    if replies.text_of(bad) == replies.text_of(chosen):
        raise ValueError(f"{corruption} left the {mode} reply of {task.kind} seed {task.seed} unchanged")
    images = [image_entry(d) for d in task.images] + [image_entry(d) for _, d in (run.saved if run else ())]
    return make_row(
        SOURCE,
        "preference",
        prompt(task) + [message("assistant", *chosen)],
        images,
        rejected=prompt(task) + [message("assistant", *bad)],
        think_mode=mode,
        task_types=[task.task_type],
        lang=task.lang,
        extra=task_extra(task, mode, checks, corruption=corruption, **detail, **agentic_extra(task, run)),
    )
