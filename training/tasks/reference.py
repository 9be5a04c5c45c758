"""The frozen reference model of preference and RL training: the starting weights again (the same
init folder, or the same named model and seed), never trained. Under ZeRO-3 it is a DeepSpeed
engine of its own, partitioned like the policy, so it is never whole on one rank; otherwise a
plain module on the policy's device in the policy's precision."""

from __future__ import annotations

import torch


def frozen_reference(build_model, engine, cfg):
    from training.engine import use_bf16

    model = build_model(cfg)
    model.requires_grad_(False)
    model.eval()
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3},
                  "bf16": {"enabled": use_bf16(cfg)}}
        reference, *_ = deepspeed.initialize(model=model, config=config)
        reference.eval()
        return reference
    return model.to(engine.device, dtype=torch.bfloat16 if use_bf16(cfg) else None)
