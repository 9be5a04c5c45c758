"""Running a task's agentic code in the sandbox, as a model's code would run.

The code sees the task's images in its working directory as image_<index>.<extension of the
encoded format> (image_0.png, image_1.jpg, ...). What it prints becomes the <sandbox_output>
verbatim; images it saved (new image files, in name order) are appended to the row's images and
shown after the output. A run that fails, times out, saves an unreadable image, or prints output
without the result line the reasoning goes on to use raises ``SandboxFailed`` whose ``reason``
("sandbox_failed", "sandbox_timeout", "sandbox_mismatch") is what the job records in _rejects/.

``sandbox_run(code, files=...)`` is synthesis.sandbox.run_python (or a wrapper that sets its
limits) or anything with its interface: a result with ``stdout``, ``ok``, ``timed_out``, ``reason``,
``stderr`` and ``files`` (name -> bytes: what the code created or changed).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image

from synthesis.reasoning.task import Task, input_files

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


class SandboxFailed(RuntimeError):
    """The agentic code did not run as the row needs; `reason` is the _rejects/ reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class AgenticRun:
    stdout: str
    saved: list[tuple[str, bytes]]  # images the code saved, in name order


def default_runner() -> Callable:
    try:
        from synthesis.sandbox import run_python
    except ImportError as exc:  # the sandbox is a separate module; say what is missing
        raise SandboxFailed(
            "sandbox_failed", f"no sandbox given and synthesis.sandbox is not importable: {exc}"
        ) from exc
    return run_python


def run(task: Task, sandbox_run: Callable | None = None) -> AgenticRun:
    if task.agentic_code is None:
        raise ValueError(f"task {task.kind} seed {task.seed} has no agentic code")
    runner = sandbox_run or default_runner()
    inputs = input_files(task.images)
    result = runner(task.agentic_code, files=dict(inputs))  # limits are the runner's (the job's sandbox settings)
    if getattr(result, "timed_out", False):
        raise SandboxFailed("sandbox_timeout", f"{task.kind} seed {task.seed}: {getattr(result, 'reason', '')}")
    if not result.ok:
        detail = getattr(result, "reason", "") or (getattr(result, "stderr", "") or "")[-500:]
        raise SandboxFailed("sandbox_failed", f"{task.kind} seed {task.seed}: {detail}")
    if task.agentic_expect and task.agentic_expect not in result.stdout:
        raise SandboxFailed(
            "sandbox_mismatch",
            f"{task.kind} seed {task.seed}: output lacks {task.agentic_expect!r}: {result.stdout[-500:]!r}",
        )
    try:
        saved = saved_images(result.files, inputs)
    except SandboxFailed as exc:
        raise SandboxFailed(exc.reason, f"{task.kind} seed {task.seed}: {exc.detail}") from None
    return AgenticRun(result.stdout, saved)


def saved_images(files: dict[str, bytes] | None, inputs: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The images a run saved: new files (not its inputs) with an image suffix, in name order;
    SandboxFailed when one does not decode."""
    saved = []
    for name in sorted(files or {}):
        if name in inputs or PurePosixPath(name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(io.BytesIO(files[name])) as img:
                img.verify()
        except Exception as exc:  # noqa: BLE001 - any decoder error means the same: unusable
            raise SandboxFailed("sandbox_failed", f"saved {name} is not an image: {exc}") from None
        saved.append((name, files[name]))
    return saved
