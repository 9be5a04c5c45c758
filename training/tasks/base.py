"""What a training task is: the one seam between the loop (training/engine.py) and a method.

A task builds its model and its data pipeline, names the model's trainable parts, costs a
sequence for the balancer and MFU, and computes its loss. The loop does the rest for every task
alike: DeepSpeed, the global step plan, gradient accumulation, checkpoints, metrics, the ledger.

The loss of an optimizer step is normalised over the whole step (every rank, every micro-step):

    totals = {name: sum over the step of task.counts(batch)[name]}      # e.g. loss tokens, pairs
    share  = task.loss(engine, batch, totals).share                     # per micro-step
    loss of the step = sum over ranks and micro-steps of share

so a task divides each of its sums by the step's count of what it averages over (tokens for the
LM, pairs for SigLIP and DPO; MPO has both). The engine back-propagates `share x world size`,
which DeepSpeed's rank average turns back into the gradient of the step's loss
(training/losses.py explains that arithmetic).

Metrics: `loss(...)` also returns `stats`, plain float sums over its batch (a task returns the same
keys every time); the loop adds them over micro-steps and ranks and hands the step's sums and
totals to `metrics(...)` for the metrics line and to `end_step(...)` for any running state the
task keeps (MPO's reward shift delta), which `state_dict()` puts into every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class MicroLoss:
    share: torch.Tensor  # this micro-step's share of the step's loss (its sums over the step's totals)
    stats: dict[str, float] = field(default_factory=dict)  # sums over the batch, for metrics


def to_device(inputs: dict, device) -> dict:
    """A batch's model inputs on the engine's device (None entries dropped)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items() if v is not None}


class Task:
    """Base of every task; see the module docstring. Subclasses set `name` and `parts`."""

    name: str = ""
    parts: tuple[str, ...] = ()  # what `train` and `lr_mult` may name

    def build_model(self, cfg) -> torch.nn.Module:
        raise NotImplementedError

    def model_parts(self, model: torch.nn.Module) -> dict[str, list[torch.nn.Module]]:
        """Every parameter of the model in exactly one named part."""
        raise NotImplementedError

    def build_pipeline(self, cfg, tokenizer, rank: int, world: int):
        """This rank's iterator of batches, resumable (state_dict / load_state_dict / rebuild)."""
        raise NotImplementedError

    def attach(self, engine, cfg) -> None:
        """Called once the DeepSpeed engine exists (cost model dimensions, a reference model)."""

    def cost(self, batch) -> float:
        """FLOPs of training on one batch: the balancer's cost and the MFU estimate's numerator."""
        raise NotImplementedError

    def rollout(self, engine, micro: list) -> list:
        """The step's batches as the loss takes them. On-policy tasks (rl) generate from the current
        weights here, for the whole step at once, before the step's counts are taken."""
        return micro

    def counts(self, batch) -> dict[str, int]:
        """What this batch adds to each of the step's normalisers."""
        raise NotImplementedError

    def loss(self, engine, batch, totals: dict[str, int]) -> MicroLoss:
        raise NotImplementedError

    def metrics(self, stats: dict[str, float], totals: dict[str, int]) -> dict[str, float]:
        """The task's own values for the step's metrics line, from the step's summed stats."""
        return {}

    def end_step(self, stats: dict[str, float], totals: dict[str, int]) -> None:
        """Update running state after a step (every rank sees the same sums)."""

    def state_dict(self) -> dict:
        """JSON-able running state, saved with every checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def report(self) -> list[str]:
        """Lines for the run's report.md."""
        return []
