"""Synthetic reasoning rows as a source plan: sample numbers in, contract rows (and refusals) out.

Sample `i` of a folder is task kind `kinds[i % len(kinds)]`, in a language drawn from `languages`
by a hash of (seed, folder, i), from a task seed that hashes the same: the same settings give the
same rows, however Spark splits the numbers. Each task's answer is confirmed by its independent
check (`synthesis.reasoning.check_task`: counting components, OCR, pixel measurements) before it
becomes a row; a task that fails it, or whose agentic code fails in the sandbox, becomes a refused
row with its reason (step `synthesize`), so the funnel accounts for every sample.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from curation import schema
from curation.sources.common import ROW_SCHEMA, SourcePlan, units_frame
from curation.steps import REJECT
from synthesis.sandbox import SandboxConfig

STEP = "synthesize"
FOLDERS = ("think", "no_think", "auto_think", "agentic", "preference", "rl")


@dataclass
class SyntheticConfig:
    count: int = 24  # samples per output folder (the demo's; set count for real data)
    seed: int = 0
    kinds: list[str] = field(default_factory=list)  # empty: every kind synthesis.reasoning has
    languages: dict[Literal["en", "zh"], float] = field(default_factory=lambda: {"en": 0.5, "zh": 0.5})
    # preference and rl rows: the mode their replies / prompts are in, cycled over samples
    post_training_modes: list[Literal["think", "no_think", "auto_think"]] = field(default_factory=lambda: ["think", "no_think"])
    templates: str = "configs/reasoning_modes.yaml"
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    partitions: int = 0  # tasks per folder (0: twice the cores)


def sample_choice(seed: int, folder: str, index: int, what: str) -> float:
    """A number in [0, 1) for (seed, folder, sample, what): the same wherever it is computed."""
    digest = hashlib.sha256(f"keyeforge.cot:{seed}:{folder}:{index}:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def synthetic_plan(spark, folder: str, cfg: SyntheticConfig) -> SourcePlan:
    """The rows of one output folder (`FOLDERS`) as a source plan."""
    if folder not in FOLDERS:
        raise ValueError(f"unknown folder {folder!r}; one of {FOLDERS}")
    tasks = cfg.partitions or 2 * spark.sparkContext.defaultParallelism
    units = units_frame(spark, [(i,) for i in range(cfg.count)], "sample long", tasks)
    return SourcePlan(units, _Synthesize(folder, cfg))


class _Synthesize:
    """Runs in the Python workers: sample numbers -> rows (ROW_SCHEMA)."""

    def __init__(self, folder: str, cfg: SyntheticConfig):
        self.folder, self.cfg = folder, cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from synthesis.reasoning import TASK_KINDS, ModeTemplates

        kinds = list(self.cfg.kinds) or list(TASK_KINDS)
        templates = ModeTemplates.load(self.cfg.templates)
        for batch in batches:
            rows = [self.row(int(i), kinds, templates) for i in batch.column("sample").to_pylist()]
            yield pa.RecordBatch.from_pylist(rows, schema=ROW_SCHEMA)

    def row(self, index: int, kinds: list[str], templates) -> dict:
        from synthesis.reasoning import SandboxFailed, check_task, corruptions_for, make_task, mode_row, preference_row, rl_row
        from synthesis.sandbox import run_python

        cfg, folder = self.cfg, self.folder
        kind = kinds[index % len(kinds)]
        lang = _weighted(cfg.languages, sample_choice(cfg.seed, folder, index, "lang"))
        task_seed = int(sample_choice(cfg.seed, folder, index, "seed") * 2**31)
        origin = f"{folder}#{index}:{kind}:{lang}:{task_seed}"
        try:
            task = make_task(kind, task_seed, lang)
        except Exception as exc:  # a generator bug must not sink the job: a refused sample
            return refused(origin, "generator_error", f"{type(exc).__name__}: {exc}")
        ok, how = check_task(task)
        if not ok:
            return refused(origin, "answer_check_failed", how)
        post_mode = cfg.post_training_modes[index % len(cfg.post_training_modes)]
        try:
            if folder == "preference":
                kinds_of_wrong = corruptions_for(task, post_mode)  # no wrong step in a direct answer
                row = preference_row(task, post_mode, templates, kinds_of_wrong[(index // len(kinds)) % len(kinds_of_wrong)])
            elif folder == "rl":
                row = rl_row(task, post_mode)
            else:
                sandbox = dataclasses.asdict(cfg.sandbox)

                def run(code: str, files: dict[str, bytes]):
                    return run_python(code, files=files, **sandbox)

                row = mode_row(task, folder, templates, sandbox_run=run if folder == "agentic" else None)
        except SandboxFailed as exc:  # the code failed, timed out, or did not print what is used
            return refused(origin, exc.reason, str(exc))
        except Exception as exc:  # formatting trouble of one sample: refused with its reason
            return refused(origin, "format_error", f"{type(exc).__name__}: {exc}"[:300])
        extra = json.loads(row["extra"] or "{}")
        extra.setdefault("origin", origin)
        row["extra"] = json.dumps(extra, ensure_ascii=False, sort_keys=True)
        row[REJECT] = None
        return row


def _weighted(weights: dict, u: float) -> str:
    names = sorted(k for k, v in weights.items() if v > 0)
    if not names:
        raise ValueError(f"no positive weight among {weights}")
    total = sum(weights[n] for n in names)
    acc = 0.0
    for name in names:
        acc += weights[name] / total
        if u < acc:
            return name
    return names[-1]


def refused(origin: str, reason: str, detail: str) -> dict:
    """A sample that did not become a row: its origin, the step and the reason."""
    row = schema.make_row("synthetic_reasoning", "vqa", [], id=schema.raw_id(STEP, origin), extra={"origin": origin})
    row[REJECT] = {"step": STEP, "reason": reason, "detail": detail[:300]}
    return row
