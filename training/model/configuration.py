"""KeyeConfig / KeyeVisionConfig: the field names of the released Keye-VL-8B-Preview `config.json`.

The released config is flat: the Qwen3 text fields live at the top level, the SigLIP fields under
`vision_config`, and multimodal RoPE is `rope_scaling: {type: mrope, mrope_section: [16, 24, 24]}`.
We keep exactly that layout so the released file loads as is and our saved files look like it.

transformers 5 turned `rope_scaling` into an alias of `rope_parameters`; Keye's `rope_scaling` is
not a scaling recipe but the M-RoPE section split, so KeyeConfig stores it as a plain field.
The text decoder is built from transformers' Qwen3 layers, which want a `Qwen3Config`;
`KeyeConfig.qwen3_config()` derives one (never serialised).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import yaml
from transformers import PretrainedConfig, Qwen3Config

# Keys the released files carry for remote code (`auto_map`) that we do not ship: dropping them
# means a saved keyeforge checkpoint never asks anyone for trust_remote_code.
_REMOTE_CODE_KEYS = ("auto_map",)


class KeyeVisionConfig(PretrainedConfig):
    """The SigLIP-so400m-patch14-384 vision tower, plus Keye's merge and time fields."""

    model_type = "siglip_vision_model"  # as in the released vision_config

    def __init__(
        self,
        hidden_size: int = 1152,
        intermediate_size: int = 4304,
        num_hidden_layers: int = 27,
        num_attention_heads: int = 16,
        num_channels: int = 3,
        image_size: int = 384,
        patch_size: int = 14,
        hidden_act: str = "gelu_pytorch_tanh",
        layer_norm_eps: float = 1e-6,
        attention_dropout: float = 0.0,
        spatial_merge_size: int = 2,
        tokens_per_second: int = 2,
        temporal_patch_size: int = 2,
        **kwargs: Any,
    ):
        for key in _REMOTE_CODE_KEYS:
            kwargs.pop(key, None)
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_channels = num_channels
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_act = hidden_act
        self.layer_norm_eps = layer_norm_eps
        self.attention_dropout = attention_dropout
        self.spatial_merge_size = spatial_merge_size
        self.tokens_per_second = tokens_per_second
        # The released config says 2, the released preprocessor uses 1: every frame is its own
        # temporal grid step (grid_t = number of frames); we follow the preprocessor.
        self.temporal_patch_size = temporal_patch_size
        super().__init__(**kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class KeyeConfig(PretrainedConfig):
    """Qwen3 text fields at the top level + `vision_config` + M-RoPE and vision token ids."""

    model_type = "Keye"
    sub_configs = {"vision_config": KeyeVisionConfig}
    keys_to_ignore_at_inference = ["past_key_values"]

    # A plain field, not transformers' rope_parameters alias (see the module docstring).
    rope_scaling = property(
        lambda self: self.__dict__.get("rope_scaling"),
        lambda self, value: self.__dict__.__setitem__("rope_scaling", value),
    )

    def __init__(
        self,
        vocab_size: int = 151936,
        hidden_size: int = 4096,
        intermediate_size: int = 12288,
        num_hidden_layers: int = 36,
        num_attention_heads: int = 32,
        num_key_value_heads: int = 8,
        head_dim: int = 128,
        hidden_act: str = "silu",
        max_position_embeddings: int = 40960,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        tie_word_embeddings: bool = False,
        rope_theta: float = 1000000.0,
        rope_scaling: dict | None = None,
        attention_bias: bool = False,
        attention_dropout: float = 0.0,
        use_sliding_window: bool = False,
        sliding_window: int | None = None,
        max_window_layers: int = 36,
        vision_config: dict | KeyeVisionConfig | None = None,
        image_token_id: int = 151655,
        video_token_id: int = 151656,
        vision_token_id: int = 151654,
        vision_start_token_id: int = 151652,
        vision_end_token_id: int = 151653,
        bos_token_id: int | None = 151643,
        eos_token_id: int | None = 151645,
        **kwargs: Any,
    ):
        for key in _REMOTE_CODE_KEYS:
            kwargs.pop(key, None)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.tie_word_embeddings = tie_word_embeddings
        self.rope_theta = rope_theta
        self.rope_scaling = dict(rope_scaling or {"type": "mrope", "mrope_section": [16, 24, 24]})
        self.attention_bias = attention_bias
        self.attention_dropout = attention_dropout
        self.use_sliding_window = use_sliding_window
        self.sliding_window = sliding_window
        self.max_window_layers = max_window_layers
        if isinstance(vision_config, dict):
            vision_config = KeyeVisionConfig(**vision_config)
        self.vision_config = vision_config if vision_config is not None else KeyeVisionConfig()
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.vision_token_id = vision_token_id
        self.vision_start_token_id = vision_start_token_id
        self.vision_end_token_id = vision_end_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        super().__init__(**kwargs)
        self._check()

    def _check(self) -> None:
        section = list(self.mrope_section)
        if sum(section) * 2 != self.head_dim or len(section) != 3:
            raise ValueError(
                f"rope_scaling.mrope_section {section} must have 3 parts summing to head_dim/2 = {self.head_dim // 2}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.vision_config.head_dim % 4:
            raise ValueError("vision head_dim must be divisible by 4 (2D RoPE splits half of it into rows and columns)")

    @property
    def mrope_section(self) -> list[int]:
        return list(self.rope_scaling["mrope_section"])

    @property
    def spatial_merge_size(self) -> int:
        return self.vision_config.spatial_merge_size

    @property
    def tokens_per_second(self) -> int:
        return self.vision_config.tokens_per_second

    def qwen3_config(self, attn_implementation: str = "keye_varlen") -> Qwen3Config:
        """The Qwen3Config that transformers' Qwen3 decoder layers read (derived, not saved)."""
        cfg = Qwen3Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            hidden_act=self.hidden_act,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            attention_bias=self.attention_bias,
            attention_dropout=self.attention_dropout,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            use_sliding_window=False,
            tie_word_embeddings=self.tie_word_embeddings,
        )
        cfg._attn_implementation = attn_implementation
        return cfg


# Generic keys a config.json carries besides the model fields (the released one has several).
_GENERIC_KEYS = {
    "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version", "_commit_hash",
    "initializer_factor", "_attn_implementation_autoset", "_name_or_path", "use_return_dict", "return_dict",
    "add_cross_attention", "is_decoder", "is_encoder_decoder", "tie_encoder_decoder", "id2label", "label2id",
    "problem_type", "chunk_size_feed_forward", "output_hidden_states", "output_attentions", "pruned_heads",
    "tokenizer_class", "prefix", "pad_token_id", "sep_token_id", "decoder_start_token_id", "finetuning_task",
    "task_specific_params", "torchscript", "use_bfloat16", "tf_legacy_loss", "cross_attention_hidden_size",
}


def _unknown_keys(cls: type, data: dict) -> list[str]:
    known = set(inspect.signature(cls.__init__).parameters) | _GENERIC_KEYS | set(PretrainedConfig().to_dict())
    return sorted(k for k in data if k not in known)


def load_model_config(path: str | Path, **overrides: Any) -> KeyeConfig:
    """A KeyeConfig from a YAML file (configs/models/*.yaml) or a released-style config.json.

    Top-level keys are KeyeConfig fields; `vision_config` is a nested mapping. `overrides` replace
    top-level keys (e.g. `num_hidden_layers=2`). A key that is no field (a typo) is an error, not
    a silently ignored attribute.
    """
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}  # YAML is a superset of JSON
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    data.update(overrides)
    unknown = _unknown_keys(KeyeConfig, data)
    unknown += [f"vision_config.{k}" for k in _unknown_keys(KeyeVisionConfig, dict(data.get("vision_config") or {}))]
    if unknown:
        raise ValueError(f"{path}: unknown model config keys {unknown}")
    return KeyeConfig(**data)
