"""Training tasks behind one registry: `task:` in a stage config names one (see base.py).

    task = build_task("preference")
    model = task.build_model(cfg); pipeline = task.build_pipeline(cfg, tokenizer, rank, world)
"""

from __future__ import annotations

from .base import MicroLoss, Task
from .contrastive import ContrastiveTask
from .lm import LMTask
from .preference import PreferenceTask
from .rl import RlTask

TASKS: dict[str, type[Task]] = {"lm": LMTask, "contrastive": ContrastiveTask, "preference": PreferenceTask,
                                "rl": RlTask}


def build_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]()


__all__ = ["TASKS", "MicroLoss", "Task", "build_task"]
