"""Task `rl`: mix-mode GRPO on `rl` rows (a prompt and the answer it is scored against).

Per optimizer step, on each rank, for the prompt batches the step plan gives it:

1. Rollout (`rollout`, once for the whole step, weights as they are): each prompt gets a thinking
   mode drawn by `rl.modes` shares, is rendered in that mode, and is sampled `group_size` times
   in one batched generate with the KV cache. Under ZeRO-3 the weights are gathered once for the
   phase, not per token. Randomness (mode, sampling) is a function of (seed, step, row id): a
   resumed run rolls out the same responses, whichever rank a prompt lands on.
2. Rewards: the weighted sum of named rewards (training/rewards.py: correctness, format,
   repetition, length, a model judge), group-relative advantages (losses.grpo_advantages).
   Groups whose rewards are all equal are counted, and left out with `rl.skip_equal_groups`.
3. Train: every rollout (prompt + response) packed into one sequence per prompt batch, one forward
   for the responses' log-probs; the loss is losses.grpo_loss normalised over the whole step
   (response tokens or rollouts of every rank and micro-step). One update per rollout, so the old
   log-probs are the same forward's values, detached (ratio 1, clip fraction 0 by construction);
   reference log-probs from the frozen start when rl.beta > 0.

Metrics: reward/<name> and reward/total means, reward/pass_rate (correctness 1), response length
per mode, clip fraction, KL (k3, when beta > 0), entropy (estimated as the mean -log p of the
sampled tokens), equal-reward groups, rollout and train tokens/s.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from curation.config import ConfigError
from training.data.cost import SampleShape, sequence_flops
from training.losses import IGNORE_INDEX, grpo_advantages, grpo_loss
from training.rewards import RewardSettings, score_replies
from training.stages import PARTS, StageConfig

from .base import MicroLoss, to_device
from .lm import LMTask
from .reference import frozen_reference

MODES = ("think", "no_think", "auto_think")


@dataclass
class RolloutBatch:
    """One prompt batch after its rollout: packed prompt+response sequences ready for the loss."""

    inputs: dict  # packed model inputs of every rollout
    positions: torch.Tensor  # (rollouts, max_new_tokens) index of each response token's logp in the row
    mask: torch.Tensor  # (rollouts, max_new_tokens) 1 on response tokens that count
    advantages: torch.Tensor  # (rollouts,)
    sample_ids: list[str]
    stats: dict[str, float] = field(default_factory=dict)  # rollout-phase sums (first batch of a step only)


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


class RlTask(LMTask):
    name = "rl"
    parts = PARTS

    def __init__(self):
        super().__init__()
        self.cfg = None
        self.processor = None
        self.reference = None
        self.judge = None
        self.judge_failures: Counter = Counter()
        self.rollout_steps = 0  # steps rolled out so far: part of every rollout's seed; checkpointed
        self._train_started = 0.0

    # --- setup ------------------------------------------------------------------------------------

    def build_pipeline(self, cfg: StageConfig, tokenizer, rank: int, world: int, pairs: bool = False):
        from training.data import ShardReader
        from training.data.prompts import PromptPipeline

        weights = cfg.data_weights or [1.0] * len(cfg.data)
        reader = ShardReader(list(zip(cfg.data, weights)), seed=cfg.seed, rank=rank, world_size=world,
                             buffer_size=cfg.shuffle_buffer, epochs=cfg.epochs)
        return PromptPipeline(reader, cfg.rl.prompts, cfg.rl.group_size * cfg.rl.max_new_tokens)

    def attach(self, engine, cfg: StageConfig) -> None:
        super().attach(engine, cfg)
        self.setup_sampling(cfg)
        if cfg.rl.beta > 0:
            self.reference = frozen_reference(self.build_model, engine, cfg)

    def setup_sampling(self, cfg: StageConfig) -> None:
        """What sampling and scoring need (also without an engine: iterative alignment's sampler)."""
        from training.processor import KeyeProcessor, load_tokenizer

        self.cfg = cfg
        self.processor = KeyeProcessor(load_tokenizer())
        shares = cfg.rl.modes
        if min(shares.think, shares.no_think, shares.auto_think) < 0 or not (
                shares.think + shares.no_think + shares.auto_think > 0):
            raise ConfigError(f"rl.modes: shares must be >= 0 and not all 0, got {shares}")
        if cfg.rl.rewards.judge:
            from synthesis.model_client.client import client_for

            self.judge = client_for(cfg.rl.judge)

    def score(self, replies: list[str], rows: list[dict], modes: list[str]) -> dict[str, list[float]]:
        rl = self.cfg.rl
        weights = {k: v for k, v in vars(rl.rewards).items() if v}
        settings = RewardSettings(rl.repetition_ngram, rl.length_target)
        return score_replies(replies, rows, modes, weights, settings, self.judge, self.judge_failures)

    def cost(self, batch) -> float:
        """Generation (about one forward per token) + forward and backward of every rollout."""
        g, new = self.cfg.rl.group_size, self.cfg.rl.max_new_tokens
        shapes = [SampleShape(s.text_tokens + new, s.grids) for s in batch.shapes for _ in range(g)]
        return (4 + (self.reference is not None)) * sequence_flops(shapes, self.dims)

    # --- rollout ----------------------------------------------------------------------------------

    def mode_for(self, row_id: str, *seed_parts) -> str:
        """The thinking mode of a prompt's group, drawn by the configured shares."""
        shares = self.cfg.rl.modes
        weights = [shares.think, shares.no_think, shares.auto_think]
        parts = seed_parts or (self.rollout_steps,)
        return random.Random(_seed(self.cfg.seed, *parts, row_id, "mode")).choices(MODES, weights)[0]

    def rollout(self, engine, micro: list) -> list[RolloutBatch]:
        started = time.perf_counter()
        model = engine.module
        gathered = nullcontext()
        if engine.zero_optimization_stage() == 3 and self.cfg.rl.gather_once:  # once for the phase, not per token
            import deepspeed

            gathered = deepspeed.zero.GatheredParameters(list(model.parameters()))
        with gathered:
            batches = [self._roll_out_prompts(model, batch, engine.device) for batch in micro]
        self.rollout_steps += 1
        generated = sum(b.stats.pop("generated_tokens") for b in batches)
        batches[0].stats.update(rollout_tokens=float(generated), rollout_seconds=time.perf_counter() - started,
                                ranks=1.0)
        self._train_started = time.perf_counter()
        return batches

    def _roll_out_prompts(self, model, batch, device) -> RolloutBatch:
        from training.data.packer import packed_inputs

        rl, g = self.cfg.rl, self.cfg.rl.group_size
        samples, prompt_lengths, replies, rows, modes, groups_equal, generated = [], [], [], [], [], 0, 0
        batch_modes = [self.mode_for(row["id"]) for row in batch.rows]
        sampled = self.sample(model, batch.rows, batch_modes, g, device, self.rollout_steps)
        for row, mode, (prompt, responses) in zip(batch.rows, batch_modes, sampled):
            for response, reply in responses:
                generated += len(response)
                samples.append(self.processor_response(prompt, response))
                prompt_lengths.append(len(prompt.input_ids))
                replies.append(reply)
                rows.append(row)
                modes.append(mode)
        scores = self.score(replies, rows, modes)
        totals = torch.tensor(scores["total"], dtype=torch.float64)
        advantages = grpo_advantages(totals, g, scale=rl.scale)
        keep = torch.ones(len(samples))
        for i in range(0, len(samples), g):
            if torch.all(totals[i : i + g] == totals[i]):
                groups_equal += 1
                if rl.skip_equal_groups:
                    keep[i : i + g] = 0
        inputs = packed_inputs(samples)
        starts = inputs["cu_seqlens"][:-1].long()
        positions = torch.zeros(len(samples), rl.max_new_tokens, dtype=torch.long)
        mask = torch.zeros(len(samples), rl.max_new_tokens)
        for i, (sample, prompt_len, start) in enumerate(zip(samples, prompt_lengths, starts.tolist())):
            count = len(sample.input_ids) - prompt_len
            # the logp of response token k sits at the position that predicts it: one before it
            positions[i, :count] = torch.arange(start + prompt_len - 1, start + prompt_len - 1 + count)
            mask[i, :count] = keep[i]
        stats = {"generated_tokens": generated, "groups": len(batch.rows), "groups_equal_reward": groups_equal,
                 "rollouts": len(samples)}
        for name, values in scores.items():
            stats[f"reward_{name}"] = sum(values)
        if "correctness" in scores:
            stats["passed"] = sum(v == 1.0 for v in scores["correctness"])
        for mode_name in MODES:
            lengths = [len(s.input_ids) - n for s, n, m in zip(samples, prompt_lengths, modes) if m == mode_name]
            stats[f"length_{mode_name}"] = float(sum(lengths))
            stats[f"count_{mode_name}"] = float(len(lengths))
        return RolloutBatch(inputs, positions, mask, advantages.float(), list(batch.sample_ids),
                            {k: float(v) for k, v in stats.items()})

    def sample(self, model, rows: list[dict], modes: list[str], count: int, device, *seed_parts):
        """`count` responses to each row's prompt rendered in its mode, all in ONE generate with the
        KV cache (prompts left-padded to the longest; their images and videos in row order), seeded
        by (seed, *seed_parts, the rows' ids). Per row: (the prompt's Sample, [(response token ids,
        ending in <|im_end|> when it was produced, reply text)])."""
        from training.model.generation import generate

        rl, eos, pad = self.cfg.rl, self.processor.im_end_id, self.processor.endoftext_id
        prompts = [self.processor({**row, "think_mode": mode}, add_generation_prompt=True)
                   for row, mode in zip(rows, modes)]
        longest = max(len(p.input_ids) for p in prompts)
        ids, mask, vision = [], [], {k: [] for k in ("pixel_values", "image_grid_thw", "pixel_values_videos",
                                                      "video_grid_thw", "second_per_grid_ts")}
        for prompt in prompts:
            n = len(prompt.input_ids)
            padded = torch.cat([torch.full((longest - n,), pad, dtype=torch.long), prompt.input_ids])
            ones = torch.cat([torch.zeros(longest - n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
            for _ in range(count):
                ids.append(padded)
                mask.append(ones)
                for key, values in vision.items():
                    value = getattr(prompt, key)
                    if value is not None and value.numel():
                        values.append(value)
        inputs = {k: torch.cat(v).to(device) for k, v in vision.items() if v}
        generator = torch.Generator(device=device).manual_seed(
            _seed(self.cfg.seed, *seed_parts, *(row["id"] for row in rows)))
        sequences = generate(model, torch.stack(ids).to(device), torch.stack(mask).to(device), **inputs,
                             max_new_tokens=rl.max_new_tokens, do_sample=True, temperature=rl.temperature,
                             top_p=rl.top_p, top_k=rl.top_k, eos_token_id=eos, pad_token_id=eos, generator=generator)
        out = []
        for i, prompt in enumerate(prompts):
            responses = []
            for new in sequences[i * count : (i + 1) * count, longest:].cpu():
                ends = (new == eos).nonzero()
                response = new[: int(ends[0]) + 1] if len(ends) else new
                responses.append((response, self.processor.tokenizer.decode(response[response != eos])))
            out.append((prompt, responses))
        return out

    def processor_response(self, prompt, response: torch.Tensor):
        """The prompt's sample with the response appended: labels on the response, text positions
        continuing after the prompt's (position of token n = n + the prompt's rope delta)."""
        import dataclasses

        n = prompt.input_ids.shape[0]
        steps = torch.arange(n, n + len(response)) + prompt.rope_delta
        return dataclasses.replace(
            prompt,
            input_ids=torch.cat([prompt.input_ids, response]),
            labels=torch.cat([torch.full((n,), IGNORE_INDEX, dtype=torch.long), response]),
            position_ids=torch.cat([prompt.position_ids, steps.expand(3, -1)], dim=1),
        )

    # --- the loss ---------------------------------------------------------------------------------

    def counts(self, batch: RolloutBatch) -> dict[str, int]:
        kept = batch.mask.sum(dim=1) > 0
        return {"response_tokens": int(batch.mask.sum()), "rollouts": int(kept.sum())}

    def loss(self, engine, batch: RolloutBatch, totals: dict[str, int]) -> MicroLoss:
        rl = self.cfg.rl
        inputs = to_device(batch.inputs, engine.device)
        out = engine(**inputs, return_logits=False)
        positions, mask = batch.positions.to(engine.device), batch.mask.to(engine.device)
        logps = out.token_logps[0][positions] * mask
        ref_logps = None
        if self.reference is not None:
            with torch.no_grad():
                ref_logps = self.reference(**inputs, return_logits=False).token_logps[0][positions].float() * mask
        normaliser = {"token_mean": totals["response_tokens"], "seq_mean_token_mean": totals["rollouts"],
                      "seq_mean_token_sum_norm": totals["rollouts"] * rl.max_new_tokens}[rl.aggregation]
        share = grpo_loss(logps, logps.detach(), batch.advantages.to(engine.device), mask, rl.epsilon,
                          rl.epsilon_high, ref_logps, rl.beta, rl.aggregation, normaliser=max(normaliser, 1))
        with torch.no_grad():
            stats = dict.fromkeys(self._rollout_keys(), 0.0)
            stats.update(batch.stats)
            ratio = torch.exp(logps - logps.detach())
            high = rl.epsilon if rl.epsilon_high is None else rl.epsilon_high
            clipped = ((ratio < 1 - rl.epsilon) | (ratio > 1 + high)) & (mask > 0)
            stats["clipped"] = float(clipped.sum())
            stats["neg_logp"] = float(-(logps.double() * mask).sum())
            stats["train_tokens"] = float(inputs["input_ids"].shape[1])
            if ref_logps is not None:
                diff = (ref_logps - logps).double()
                stats["kl"] = float(((diff.exp() - diff - 1) * mask).sum())
        return MicroLoss(share, stats)

    def _rollout_keys(self) -> list[str]:
        names = [*(k for k, v in vars(self.cfg.rl.rewards).items() if v), "total"]
        keys = ["rollout_tokens", "rollout_seconds", "ranks", "groups", "groups_equal_reward", "rollouts",
                "clipped", "neg_logp", "train_tokens", "kl", *(f"reward_{n}" for n in names)]
        if self.cfg.rl.rewards.correctness:
            keys.append("passed")
        keys += [f"{kind}_{m}" for m in MODES for kind in ("length", "count")]
        return keys

    # --- metrics and state ------------------------------------------------------------------------

    def metrics(self, stats: dict[str, float], totals: dict[str, int]) -> dict[str, float]:
        rollouts = max(stats["rollouts"], 1.0)
        tokens = max(totals["response_tokens"], 1)
        values = {f"reward/{k[len('reward_'):]}": v / rollouts for k, v in stats.items() if k.startswith("reward_")}
        if "passed" in stats:
            values["reward/pass_rate"] = stats["passed"] / rollouts
        for mode in MODES:
            if stats[f"count_{mode}"]:
                values[f"response_length/{mode}"] = stats[f"length_{mode}"] / stats[f"count_{mode}"]
        train_seconds = time.perf_counter() - self._train_started
        values.update({
            "groups_equal_reward": stats["groups_equal_reward"],
            "groups_equal_reward_fraction": stats["groups_equal_reward"] / max(stats["groups"], 1.0),
            "clip_fraction": stats["clipped"] / tokens,
            "kl": stats["kl"] / tokens,
            "entropy": stats["neg_logp"] / tokens,
            # all ranks' tokens over one rank's (the mean) seconds: the job's rate
            "rollout_tokens_per_s": stats["rollout_tokens"] / (stats["rollout_seconds"] / max(stats["ranks"], 1.0)),
            "train_tokens_per_s": stats["train_tokens"] / train_seconds if train_seconds > 0 else 0.0,
        })
        if self.judge is not None:
            values["judge_failures"] = float(sum(self.judge_failures.values()))
        return values

    def state_dict(self) -> dict:
        return {"rollout_steps": self.rollout_steps}

    def load_state_dict(self, state: dict) -> None:
        self.rollout_steps = int(state.get("rollout_steps", 0))

    def report(self) -> list[str]:
        rl = self.cfg.rl
        weights = {k: v for k, v in vars(rl.rewards).items() if v}
        return [f"- GRPO: group {rl.group_size}, modes {vars(rl.modes)}, rewards {weights}, beta {rl.beta}, "
                f"{rl.aggregation}; rollout steps {self.rollout_steps}"
                + (f"; judge failures {dict(self.judge_failures)}" if self.judge_failures else "")]
