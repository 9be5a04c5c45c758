"""One optimizer step's numbers, assembled once, then checked and logged.

    record = StepMetrics.gather(plan, step_loss, lr, grad_norm, seconds, peak, world, mixture, task)
    if not record.finite: stop                  # before anything is logged or saved
    metrics.log(step, record.values())          # metrics.jsonl, TensorBoard, the progress line

Rates and fractions are over all ranks: each rank's counts (real tokens, token slots, samples,
padding, its loss-token sum) are all-gathered as plain numbers, so every rank holds the same
record, and a non-finite loss is seen by every rank at the same step (they stop together instead
of one rank waiting for the others in the next collective).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from training.data.balance import all_gather_lists


class Mixture:
    """The data mixture on this rank since this process started, logged when there are several
    folders: `mix/NAME`, the fractions of rows the reader drew from each folder (what the stage's
    weights control: its low-discrepancy mix keeps any stretch of draws close to them), and
    `trained_mix/NAME`, the fractions of rows trained so far (`rows_drawn`: how many were drawn). The two differ early in a run: the
    shuffle buffer and the packer's look-ahead hold rows back (the packer places long samples
    first), and they converge as the run goes on."""

    def __init__(self, names: Sequence[str], drawn: Counter):
        self.names, self.drawn, self.rows = list(names), drawn, Counter()

    def add(self, sequences: Sequence) -> None:
        self.rows.update(coord.source for batch in sequences for coord in batch.coords)

    def fractions(self) -> dict[str, float]:
        if len(self.names) < 2:
            return {}
        out = {"rows_drawn": sum(self.drawn.values())}
        for prefix, counts in (("mix", self.drawn), ("trained_mix", self.rows)):
            total = sum(counts.values())
            out.update({f"{prefix}/{self.names[s]}": n / total for s, n in sorted(counts.items())} if total else {})
        return out


@dataclass
class StepMetrics:
    loss: float  # the step's loss: every rank's share added (training/tasks/base.py)
    lr: float  # the largest group's learning rate after the schedule
    grad_norm: float | None  # DeepSpeed's global norm (-1 or inf where it was not finite); None: not computed
    totals: dict[str, int]  # the task's normalisers over the step (loss_tokens; pairs ...)
    tokens_per_s: float
    samples_per_s: float
    step_seconds: float
    padding_fraction: float  # token slots holding no sample, over all slots of the step
    rank_imbalance: float  # max / mean rank cost as run (global_step.py)
    rank_imbalance_unbalanced: float  # the same without the balancer
    mfu: float | None  # estimated train FLOPs / (device peak x ranks); None without a peak
    dropped_sequences: int = 0  # read but not run at the very end of a finite run
    dropped_samples: int = 0
    mix: dict[str, float] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)  # the task's sums over the step, all ranks
    task_values: dict[str, float] = field(default_factory=dict)  # the task's own metrics

    @classmethod
    def gather(cls, plan, step, lr: float, grad_norm: float | None, seconds: float, peak_flops: float | None,
               world: int, mixture: Mixture, task=None) -> StepMetrics:
        """The step's record from this rank's plan (global_step.StepPlan) and its engine.StepLoss;
        a collective: every rank calls it at every step."""
        mine = plan.mine
        names = sorted(step.stats)
        local = [sum(b.real_tokens for b in mine), sum(b.max_tokens for b in mine),
                 sum(len(b.sample_ids) for b in mine), sum(b.padding_tokens for b in mine), step.loss,
                 *(step.stats[n] for n in names)]
        real, slots, samples, padding, loss, *sums = (sum(column) for column in zip(*all_gather_lists(local)))
        stats = dict(zip(names, sums))
        return cls(
            loss=loss,
            lr=lr,
            grad_norm=grad_norm,
            totals=dict(step.totals),
            tokens_per_s=real / seconds,
            samples_per_s=samples / seconds,
            step_seconds=seconds,
            padding_fraction=padding / slots,
            rank_imbalance=plan.imbalance,
            rank_imbalance_unbalanced=plan.imbalance_unbalanced,
            mfu=sum(plan.loads) / seconds / (peak_flops * world) if peak_flops else None,
            dropped_sequences=plan.dropped_sequences,
            dropped_samples=plan.dropped_samples,
            mix=mixture.fractions(),
            stats=stats,
            task_values=task.metrics(stats, step.totals) if task is not None else {},
        )

    @property
    def finite(self) -> bool:
        """Loss and gradient norm are finite numbers. DeepSpeed reports a NaN/inf norm as -1 (its
        sentinel) or inf (a step it skipped), so a negative norm counts as not finite."""
        norm_ok = self.grad_norm is None or (math.isfinite(self.grad_norm) and self.grad_norm >= 0)
        return math.isfinite(self.loss) and norm_ok

    def values(self) -> dict:
        """What a metrics.jsonl line holds (after "step"): the drop counts only where something was
        dropped, the mixture only with several folders."""
        values = {
            "loss": self.loss,
            "lr": self.lr,
            "grad_norm": self.grad_norm,
            **self.totals,
            "tokens_per_s": self.tokens_per_s,
            "samples_per_s": self.samples_per_s,
            "step_seconds": self.step_seconds,
            "padding_fraction": self.padding_fraction,
            "rank_imbalance": self.rank_imbalance,
            "rank_imbalance_unbalanced": self.rank_imbalance_unbalanced,
            "mfu": self.mfu,
        }
        if self.dropped_sequences:
            values.update(dropped_sequences=self.dropped_sequences, dropped_samples=self.dropped_samples)
        return {**values, **self.task_values, **self.mix}
