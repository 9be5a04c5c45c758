"""Task `preference` (mpo, iterative_alignment): MPO on chosen/rejected pairs.

Per pair, in one packed forward (the pipeline's pair mode keeps a pair in one sequence):

    logratio = log pi(response) - log pi_ref(response)     summed over the response's tokens
    loss     = 0.8 mean DPO + 0.2 mean BCO(delta) + 1.0 token-mean NLL of the chosen responses

(training/losses.py: dpo_sigmoid_loss, bco_pair_loss, mpo_loss), the means over all pairs of the
step and the NLL over all chosen tokens of the step (every rank, every micro-step).

Reference log-probs: `mpo.reference=live` runs a frozen copy of the starting weights beside the
policy (under ZeRO-3 as its own DeepSpeed inference engine, partitioned like the policy);
`precomputed` reads them from the rows (`extra.ref_logps`, written by
`python -m training.precompute_ref`), and no reference model is ever built or loaded.

delta, BCO's reward shift: for optimizer step t, the mean of beta x logratio over the chosen and
the rejected response of every pair of steps 1..t-1, all ranks (0 at step 1). Every micro-step of
a step uses the same value, and it is part of the checkpoint, so a resumed run goes on with it.
"""

from __future__ import annotations

import torch

from curation.config import ConfigError
from training.losses import mpo_loss, segment_sums
from training.stages import PARTS, StageConfig

from .base import MicroLoss, to_device
from .lm import LMTask, forward_flops
from .reference import frozen_reference


def reference_name(cfg: StageConfig) -> str:
    """What the reference log-probs are of: the starting weights (an HF folder, or a named random
    model and its seed)."""
    return str(cfg.init) if cfg.init else f"{cfg.model}@seed{cfg.seed}"


class PreferenceTask(LMTask):
    name = "preference"
    parts = PARTS

    def __init__(self):
        super().__init__()
        self.reference = None  # the frozen starting weights (live mode only)
        self.reference_name = ""
        self.live = True
        self.beta, self.weights = 0.1, (0.8, 0.2, 1.0)
        self.delta_sum, self.delta_count = 0.0, 0

    # --- setup ------------------------------------------------------------------------------------

    def build_pipeline(self, cfg: StageConfig, tokenizer, rank: int, world: int, pairs: bool = True):
        return super().build_pipeline(cfg, tokenizer, rank, world, pairs=True)

    def attach(self, engine, cfg: StageConfig) -> None:
        super().attach(engine, cfg)
        self.beta, self.weights = cfg.mpo.beta, tuple(cfg.mpo.weights)
        self.live = cfg.mpo.reference == "live"
        self.reference_name = reference_name(cfg)
        if self.live:
            self.reference = self.build_reference(engine, cfg)

    def build_reference(self, engine, cfg: StageConfig):
        """The starting weights again, frozen (training/tasks/reference.py)."""
        return frozen_reference(self.build_model, engine, cfg)

    # --- the loss ---------------------------------------------------------------------------------

    @property
    def delta(self) -> float:
        return self.delta_sum / self.delta_count if self.delta_count else 0.0

    def cost(self, batch) -> float:
        """Policy forward + backward, plus the reference's forward when it runs live."""
        return (3 + self.live) * forward_flops(batch, self.dims) if self.dims else super().cost(batch)

    def counts(self, batch) -> dict[str, int]:
        return {"pairs": len(batch.sample_ids), "chosen_tokens": sum(batch.sample_loss_tokens[0::2])}

    def reference_logps(self, batch, inputs: dict) -> torch.Tensor:
        """Summed reference log-probs per packed sample (chosen, rejected, chosen, ...)."""
        if self.reference is not None:
            with torch.no_grad():
                out = self.reference(**inputs, return_logits=False)
            return segment_sums(out.token_logps, inputs["cu_seqlens"]).float()
        if batch.ref_logps is None:
            raise ConfigError(
                f"rows {batch.sample_ids[:3]} carry no precomputed reference log-probs (extra.ref_logps): run "
                "`python -m training.precompute_ref` on the data first, or set mpo.reference=live")
        stale = sorted({m for m in batch.ref_models if m != self.reference_name})
        if stale:
            raise ConfigError(f"reference log-probs of rows {batch.sample_ids[:3]} were computed with {stale}, "
                              f"but this run starts from {self.reference_name}: precompute them again")
        return torch.tensor(batch.ref_logps, dtype=torch.float32, device=inputs["input_ids"].device)

    def loss(self, engine, batch, totals: dict[str, int]) -> MicroLoss:
        inputs = to_device(batch.inputs, engine.device)
        out = engine(**inputs, return_logits=False)
        logps = segment_sums(out.token_logps, inputs["cu_seqlens"])
        ratios = logps - self.reference_logps(batch, inputs)
        chosen, rejected = ratios[0::2], ratios[1::2]
        share, parts = mpo_loss(chosen, rejected, -logps[0::2].sum(), totals["chosen_tokens"], self.beta,
                                self.delta, self.weights, num_pairs=totals["pairs"])
        c, r = self.beta * chosen.detach().double(), self.beta * rejected.detach().double()
        stats = {
            "reward_chosen": float(c.sum()), "reward_rejected": float(r.sum()),
            "correct": float((c > r).sum()),
            "logps_chosen": float(logps[0::2].detach().double().sum()),
            "logps_rejected": float(logps[1::2].detach().double().sum()),
            **{f"loss_{name}": float(value.detach()) for name, value in parts.items()},
        }
        return MicroLoss(share, stats)

    # --- metrics and running state ----------------------------------------------------------------

    def metrics(self, stats: dict[str, float], totals: dict[str, int]) -> dict[str, float]:
        pairs = totals["pairs"]
        return {
            "rewards/chosen": stats["reward_chosen"] / pairs,
            "rewards/rejected": stats["reward_rejected"] / pairs,
            "rewards/margin": (stats["reward_chosen"] - stats["reward_rejected"]) / pairs,
            "rewards/accuracy": stats["correct"] / pairs,
            "logps/chosen": stats["logps_chosen"] / pairs,
            "logps/rejected": stats["logps_rejected"] / pairs,
            "mpo/delta": self.delta,  # the value this step used
            **{f"loss/{name}": stats[f"loss_{name}"] for name in ("dpo", "bco", "sft")},
        }

    def end_step(self, stats: dict[str, float], totals: dict[str, int]) -> None:
        self.delta_sum += stats["reward_chosen"] + stats["reward_rejected"]
        self.delta_count += 2 * totals["pairs"]

    def state_dict(self) -> dict:
        return {"delta_sum": self.delta_sum, "delta_count": self.delta_count}

    def load_state_dict(self, state: dict) -> None:
        self.delta_sum, self.delta_count = float(state.get("delta_sum", 0.0)), int(state.get("delta_count", 0))

    def report(self) -> list[str]:
        source = "live (frozen copy of the starting weights)" if self.live else "precomputed into the rows"
        return [f"- reference log-probs: {source}, of {self.reference_name}; beta {self.beta}, "
                f"weights dpo/bco/sft {self.weights}; delta after the run {self.delta:.6g}"]
