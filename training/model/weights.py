"""Building Keye from parts: a SigLIP vision checkpoint + a Qwen3 causal-LM checkpoint.

The ViT tensors copy name for name (`vision_model.X` -> `visual.vision_model.X`), the LLM tensors
keep their names (`model.X`, `lm_head.weight`; a tied Qwen3 gets its embedding copied into the
untied `lm_head`). Newly initialised: the projector `mlp_AR.*` and the ViT's (unused)
`packing_position_embedding`. Anything else the checkpoints lack is an error.

Checkpoints are read with safetensors only (single file or sharded with an index); no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from .configuration import KeyeConfig, KeyeVisionConfig
from .modeling import KeyeForConditionalGeneration

# Initialised when the parts do not provide them (the pooling head exists only if the SigLIP
# checkpoint was saved with vision_use_head; Keye keeps it but never runs it).
NEWLY_INITIALISED = (
    "mlp_AR.",
    "visual.vision_model.embeddings.packing_position_embedding.",
    "visual.vision_model.head.",
)


# first names of a SigLIP vision tower's tensors when saved without the `vision_model.` prefix
VISION_PARTS = ("embeddings.", "encoder.", "post_layernorm.", "head.")


def read_safetensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder (model.safetensors or a sharded index)."""
    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (folder / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"no model.safetensors (or sharded index) in {folder}: weights are missing")
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(folder / name), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {folder}")
    return json.loads(path.read_text())


def default_mrope_section(head_dim: int) -> list[int]:
    """[16, 24, 24] for head_dim 128: a quarter of the frequencies for time, the rest split h/w."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def config_from_parts(siglip_dir: str | Path, qwen3_dir: str | Path, **overrides: Any) -> KeyeConfig:
    """A KeyeConfig whose ViT is the SigLIP checkpoint's and whose LLM is the Qwen3 checkpoint's."""
    vision = _read_config(Path(siglip_dir))
    vision = vision.get("vision_config", vision)  # a full SiglipModel keeps it nested
    text = _read_config(Path(qwen3_dir))
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    fields = dict(
        vocab_size=text["vocab_size"],
        hidden_size=text["hidden_size"],
        intermediate_size=text["intermediate_size"],
        num_hidden_layers=text["num_hidden_layers"],
        num_attention_heads=text["num_attention_heads"],
        num_key_value_heads=text.get("num_key_value_heads", text["num_attention_heads"]),
        head_dim=head_dim,
        hidden_act=text.get("hidden_act", "silu"),
        max_position_embeddings=text.get("max_position_embeddings", 40960),
        rms_norm_eps=text.get("rms_norm_eps", 1e-6),
        rope_theta=text.get("rope_theta") or (text.get("rope_parameters") or {}).get("rope_theta", 1e6),
        rope_scaling={"type": "mrope", "mrope_section": default_mrope_section(head_dim)},
        attention_bias=text.get("attention_bias", False),
        tie_word_embeddings=False,  # Keye's lm_head is its own tensor
        vision_config=KeyeVisionConfig(
            **{
                k: vision[k]
                for k in (
                    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps",
                )
                if k in vision
            }
        ),
    )
    fields.update(overrides)
    return KeyeConfig(**fields)


@torch.no_grad()
def build_from_parts(
    siglip_dir: str | Path, qwen3_dir: str | Path, *, seed: int = 0, **overrides: Any
) -> tuple[KeyeForConditionalGeneration, dict[str, list[str]]]:
    """A fresh Keye model: ViT from SigLIP, LLM from Qwen3, projector newly initialised.

    Returns the model and a report {"copied": [...], "initialised": [...]} of target names.
    """
    config = config_from_parts(siglip_dir, qwen3_dir, **overrides)
    torch.manual_seed(seed)
    model = KeyeForConditionalGeneration(config)
    vision = read_safetensors(siglip_dir)
    text = read_safetensors(qwen3_dir)

    sources: dict[str, torch.Tensor] = {}
    for key, tensor in vision.items():
        if key.endswith(".position_ids"):  # a buffer some older files carry
            continue
        if key.startswith(VISION_PARTS):  # SiglipVisionModel as transformers 5 saves it (flat)
            key = "vision_model." + key
        # a full SiglipModel (the hub's so400m) also carries text_model.*, logit_*: not ours
        if key.startswith("vision_model."):
            sources["visual." + key] = tensor
    for key, tensor in text.items():
        if key.startswith(("model.", "lm_head.")):
            sources[key] = tensor
    if "lm_head.weight" not in sources and "model.embed_tokens.weight" in sources:
        sources["lm_head.weight"] = sources["model.embed_tokens.weight"]  # tied Qwen3

    report: dict[str, list[str]] = {"copied": [], "initialised": []}
    missing = []
    for name, param in model.state_dict().items():
        if name in sources:
            source = sources[name]
            if tuple(source.shape) != tuple(param.shape):
                raise ValueError(f"{name}: checkpoint shape {tuple(source.shape)} != model shape {tuple(param.shape)}")
            param.copy_(source.to(param.dtype))
            report["copied"].append(name)
        elif name.startswith(NEWLY_INITIALISED):
            report["initialised"].append(name)
        else:
            missing.append(name)
    if missing:
        raise ValueError(f"the SigLIP + Qwen3 checkpoints lack {len(missing)} tensors, e.g. {missing[:5]}")
    unused = sorted(k for k in set(sources) - set(report["copied"]) if k != "lm_head.weight")
    if unused:
        raise ValueError(f"checkpoint tensors with no place in Keye: {unused[:5]}")
    return model, report
