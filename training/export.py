"""HF export: config.json + model.safetensors (save_pretrained) and the tokenizer, a folder that
`KeyeForConditionalGeneration.from_pretrained(folder)` loads strictly."""

from __future__ import annotations

from pathlib import Path


def export_hf(engine, folder: str | Path, tokenizer=None) -> Path | None:
    """Write the trained model of a DeepSpeed engine to `folder` (rank 0 writes; every rank must
    call it under ZeRO-3, where the weights are gathered first). Returns the folder on rank 0."""
    import torch.distributed as dist

    state_dict = None
    if engine.zero_optimization_stage() == 3:  # partitioned weights: gather a full copy on rank 0
        state_dict = engine._zero3_consolidated_16bit_state_dict()
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank != 0:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    engine.module.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder
