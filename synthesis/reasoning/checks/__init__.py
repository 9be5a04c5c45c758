"""Independent checks: each confirms a task's answer from its image(s) alone, plus what the question
asks (``task.meta["ask"]``, the question's meaning in data) and what its words mean (a colour name's
pixel value). None reads the generator's positions, values or text. ``check_task`` dispatches by
kind, records the result on ``task.check`` and returns it."""

from __future__ import annotations

from synthesis.reasoning.checks import arithmetic, bars, low_contrast, rotated, shapes, zoom
from synthesis.reasoning.task import Task

CHECKS = {
    "count_shapes": shapes.check,
    "bar_chart_compare": bars.check,
    "arithmetic": arithmetic.check,
    "rotated_text": rotated.check,
    "low_contrast_text": low_contrast.check,
    "small_text_zoom": zoom.check,
}


def check_task(task: Task) -> tuple[bool, str]:
    """(ok, how it was checked). ok is False when the image does not confirm the answer."""
    if task.kind not in CHECKS:
        raise ValueError(f"no check for task kind {task.kind!r}; known: {sorted(CHECKS)}")
    task.check = CHECKS[task.kind](task)
    return task.check
