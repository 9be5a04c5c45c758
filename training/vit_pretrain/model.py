"""The vit_pretrain model: Keye's ViT and a small SigLIP text tower under the sigmoid loss.

    model = build_vit_pretrain_model(cfg)          # cfg: a StageConfig with task=contrastive
    out = model(pixel_values, image_grid_thw, input_ids, attention_mask)
    out.loss, out.num_loss_tokens                  # mean SigLIP loss over the batch, pairs n

Parts (what `train` / `lr_mult` name): `visual` is `KeyeVisionModel`, the VLM's own class with the
VLM's parameter names, so `vlm.visual.load_state_dict(model.visual.state_dict())` moves the trained
ViT into KeyeForConditionalGeneration unchanged (the exported safetensors use the same
`visual.vision_model.*` keys). `text` is transformers' `SiglipTextModel`. `logit` holds SigLIP's
learnable log-temperature `scale` (init log 10) and `bias` (init -10).

Image embedding: the packed ViT forward (each image its own attention segment), then per image
the released SigLIP attention-pooling `head` (a probe attending over the image's patches). The VLM
never runs that head and freezes it; here it is the pooling, so it is made trainable. The shared
embedding width is the text tower's `projection_size` (its `head` maps text into it); it defaults
to the ViT width, and only when a text config asks for another width does an `image_projection`
(part `visual`) map the pooled image into it.

DeepSpeed ZeRO-3 notes: nothing is created in forward; every parameter is reached inside a forward
of a module that holds it (the logit parameters through `SigmoidLogit.forward`, which computes the
loss); `nn.MultiheadAttention` reading its `out_proj` weights without calling `out_proj` is caught
by ZeRO-3's external-parameter detection. The head runs once per image size in a forward, which
is fine for ZeRO-3's per-parameter gradient hooks (they fire once per backward); marking it a
ZeRO-3 "leaf module" would not be: a leaf's gradients are reduced in a module backward hook,
which fires once per call.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import yaml
from safetensors import safe_open
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, SiglipTextConfig, SiglipTextModel
from transformers.modeling_outputs import ModelOutput
from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

try:  # transformers 5: init functions that respect the "already loaded" flags
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init

from curation.config import ConfigError
from training.losses import siglip_logits, siglip_sigmoid_loss
from training.model import KeyeVisionConfig, load_model_config
from training.model.vision import KeyeVisionModel
from training.stages import REPO, StageConfig

SIGLIP_SCALE_INIT = math.log(10.0)  # t' (Zhai et al. 2023)
SIGLIP_BIAS_INIT = -10.0  # b: starts every pair near "no match", as most pairs are negatives


class ViTPretrainConfig(PretrainedConfig):
    """`vision_config`: the VLM's KeyeVisionConfig; `text_config`: a SiglipTextConfig."""

    model_type = "keye_vit_pretrain"
    sub_configs: ClassVar[dict] = {"vision_config": KeyeVisionConfig, "text_config": SiglipTextConfig}

    def __init__(
        self,
        vision_config: dict | KeyeVisionConfig | None = None,
        text_config: dict | SiglipTextConfig | None = None,
        logit_scale_init: float = SIGLIP_SCALE_INIT,
        logit_bias_init: float = SIGLIP_BIAS_INIT,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ):
        if isinstance(vision_config, dict):
            vision_config = KeyeVisionConfig(**vision_config)
        if isinstance(text_config, dict):
            text_config = SiglipTextConfig(**text_config)
        self.vision_config = vision_config if vision_config is not None else KeyeVisionConfig()
        # (SiglipTextConfig's own default token ids lie outside its default vocabulary: drop them)
        self.text_config = (
            text_config if text_config is not None else SiglipTextConfig(bos_token_id=None, eos_token_id=None)
        )
        self.logit_scale_init = logit_scale_init
        self.logit_bias_init = logit_bias_init
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

    @property
    def embed_dim(self) -> int:
        """Width of the space where images and captions meet (the text head's output)."""
        return self.text_config.projection_size


@dataclass
class ViTPretrainOutput(ModelOutput):
    loss: torch.Tensor | None = None  # mean over the batch's pairs: loss_sum / num_loss_tokens
    num_loss_tokens: torch.Tensor | None = None  # pairs n (the step's normaliser)
    loss_sum: torch.Tensor | None = None  # the sigmoid loss summed over the batch's rows (what training adds up)
    image_embeds: torch.Tensor | None = None  # (n, embed_dim), not normalised
    text_embeds: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (n, n) pair logits, with return_logits=True


class SigmoidLogit(nn.Module):
    """SigLIP's learnable log-temperature `scale` and `bias`. Its forward computes the loss, so
    under ZeRO-3 the two parameters are gathered by this module's own hooks."""

    def __init__(self, scale: float = SIGLIP_SCALE_INIT, bias: float = SIGLIP_BIAS_INIT):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(
        self, image_emb: torch.Tensor, text_emb: torch.Tensor, return_logits: bool = False
    ) -> tuple[torch.Tensor, int, torch.Tensor | None]:
        loss_sum, n = siglip_sigmoid_loss(image_emb, text_emb, self.scale, self.bias)
        logits = siglip_logits(image_emb, text_emb, self.scale, self.bias).detach() if return_logits else None
        return loss_sum, n, logits


class ViTPretrainModel(PreTrainedModel):
    config_class = ViTPretrainConfig
    config: ViTPretrainConfig
    base_model_prefix = ""
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ("KeyeVisionBlock", "SiglipEncoderLayer")
    _supports_sdpa = True

    def __init__(self, config: ViTPretrainConfig):
        super().__init__(config)
        vision_width = config.vision_config.hidden_size
        self.visual = KeyeVisionModel(config.vision_config)
        self.text = SiglipTextModel._from_config(config.text_config)
        self.image_projection = nn.Linear(vision_width, config.embed_dim) if vision_width != config.embed_dim else None
        self.logit = SigmoidLogit(config.logit_scale_init, config.logit_bias_init)
        head = self.visual.vision_model.head
        head.requires_grad_(True)  # KeyeVisionTransformer freezes it: the VLM never runs it, we do
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)  # the text tower is a PreTrainedModel: it inits itself
        if isinstance(module, SiglipMultiheadAttentionPoolingHead):  # as KeyePreTrainedModel does
            init.normal_(module.probe, std=self.config.initializer_range)
        elif isinstance(module, SigmoidLogit):
            init.constant_(module.scale, self.config.logit_scale_init)
            init.constant_(module.bias, self.config.logit_bias_init)

    def trainable_parts(self) -> dict[str, list[nn.Module]]:
        """The parts `cfg.train` and `lr_mult` name; every parameter is in exactly one."""
        visual = [self.visual] + ([self.image_projection] if self.image_projection is not None else [])
        return {"visual": visual, "text": [self.text], "logit": [self.logit]}

    def image_embeddings(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | Sequence) -> torch.Tensor:
        """(images, embed_dim): each image's patch features pooled by the attention head.

        Images with the same patch count go through the head together (no padding, so an image's
        embedding is the same alone or in any batch); the rows come back in the input order."""
        grids = [tuple(int(v) for v in g) for g in image_grid_thw]
        features = self.visual(pixel_values, grids)
        per_image = features.split([t * h * w for t, h, w in grids])
        by_size: dict[int, list[int]] = {}
        for i, patches in enumerate(per_image):
            by_size.setdefault(patches.shape[0], []).append(i)
        head = self.visual.vision_model.head
        pooled, order = [], []
        for indices in by_size.values():
            pooled.append(head(torch.stack([per_image[i] for i in indices])))
            order += indices
        pooled = torch.cat(pooled)[torch.tensor(order, device=features.device).argsort()]
        return self.image_projection(pooled) if self.image_projection is not None else pooled

    def text_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(captions, embed_dim): SiglipTextModel's pooled output, the last position through its
        head. The pipeline pads every caption to the same fixed length (see data.py), so the last
        position is the same slot whatever else is in the batch."""
        return self.text(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def forward(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        return_logits: bool = False,
        **ignored: Any,
    ) -> ViTPretrainOutput:
        image = self.image_embeddings(pixel_values, image_grid_thw)
        text = self.text_embeddings(input_ids, attention_mask)
        loss_sum, n, logits = self.logit(image, text, return_logits)
        return ViTPretrainOutput(
            loss=loss_sum / n,
            loss_sum=loss_sum,
            num_loss_tokens=torch.tensor(n),
            image_embeds=image,
            text_embeds=text,
            logits=logits,
        )


# --- building from a stage config ---------------------------------------------------------------------


def load_text_config(path: str | Path, projection_size: int) -> SiglipTextConfig:
    """A SiglipTextConfig from a YAML of its fields; `projection_size` (the shared embedding
    width) defaults to `projection_size`, the ViT width, when the file does not set it."""
    path = Path(path)
    path = path if path.is_file() else REPO / path
    if not path.is_file():
        raise ConfigError(f"text_model={path}: no such text tower YAML")
    data = yaml.safe_load(path.read_text()) or {}
    known = set(inspect.signature(SiglipTextConfig.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown SiglipTextConfig keys {unknown}")
    data.setdefault("projection_size", projection_size)
    return SiglipTextConfig(**data)


def _vlm_folder(cfg: StageConfig) -> Path | None:
    folder = Path(cfg.model)
    return folder if folder.is_dir() else None


def vision_config_of(cfg: StageConfig) -> KeyeVisionConfig:
    """The ViT config of the VLM that `cfg.model` names: tiny | keye_8b | a model YAML | an HF
    VLM folder (the names training.launch.resolve_model takes)."""
    folder = _vlm_folder(cfg)
    named = REPO / "configs" / "models" / f"{cfg.model}.yaml"
    path = folder / "config.json" if folder else named if named.is_file() else Path(cfg.model)
    if not path.is_file():
        raise ConfigError(f"model={cfg.model}: not tiny, keye_8b, a model YAML or an HF folder")
    return load_model_config(path).vision_config


def vlm_visual_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The `visual.*` tensors of an HF VLM folder (safetensors, single or sharded), without the
    prefix: what `model.visual.load_state_dict` takes. Only those tensors are read."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    tensors = {}
    for name in files:
        with safe_open(str(folder / name), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safetensors handle, no dict)
                if key.startswith("visual."):
                    tensors[key.removeprefix("visual.")] = f.get_tensor(key)
    return tensors


def build_vit_pretrain_model(cfg: StageConfig) -> ViTPretrainModel:
    """The model of a contrastive stage.

    init=FOLDER: an HF folder of this model (a previous vit_pretrain export), loaded whole.
    model=VLM_FOLDER: the ViT's config and weights from that KeyeForConditionalGeneration folder
    (e.g. one built from SigLIP by training.model.weights), text tower and logit fresh.
    model=tiny (or a tiny-like YAML): everything random, seeded by cfg.seed. A larger named model
    without weights is refused, as training.launch does for the VLM.
    """
    if cfg.init:
        source = Path(cfg.init)
        if not (source / "config.json").is_file():
            raise ConfigError(f"init={source} is no HF model folder (no config.json)")
        return ViTPretrainModel.from_pretrained(source, torch_dtype=torch.float32)
    vision = vision_config_of(cfg)
    text = load_text_config(cfg.text_model, vision.hidden_size)
    if text.max_position_embeddings < cfg.max_text_tokens:
        raise ConfigError(
            f"max_text_tokens={cfg.max_text_tokens} exceeds the text tower's max_position_embeddings "
            f"{text.max_position_embeddings} ({cfg.text_model})"
        )
    folder = _vlm_folder(cfg)
    if folder is None and cfg.model != "tiny":
        raise ConfigError(
            f"model={cfg.model} needs init=HF_FOLDER, or model=an HF VLM folder for the ViT's weights; "
            "only the tiny model starts from random weights"
        )
    torch.manual_seed(cfg.seed)
    model = ViTPretrainModel(ViTPretrainConfig(vision_config=vision, text_config=text))
    if folder is not None:
        model.visual.load_state_dict(vlm_visual_weights(folder), strict=True)
    return model
