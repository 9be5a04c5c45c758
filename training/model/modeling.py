"""KeyeForConditionalGeneration: ViT -> 2x2-merge projector -> Qwen3 decoder with M-RoPE.

Module tree (and so the state-dict names) is the released checkpoint's, registered in its order:
`mlp_AR` (projector), `visual.vision_model` (ViT), `model` (Qwen3 decoder: embed_tokens, layers,
norm), `lm_head`.

Inputs come in two shapes:

* padded batch: input_ids (B, L), optional attention_mask (B, L) with 0 on padding;
* packed row: input_ids (1, total) with `cu_seqlens` = [0, l0, l0+l1, ...]; attention stays inside
  each sample and the label shift never crosses a sample boundary.

Vision inputs are flat across the batch, in order of appearance: `pixel_values` (image patches,
(N, 3*14*14)) with `image_grid_thw` (num_images, 3), `pixel_values_videos` with `video_grid_thw`
(num_videos, 3) and `second_per_grid_ts` (num_videos,) seconds between sampled frames.
`position_ids` (3, B, L) may be given (the processor computes them) or are derived here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel

try:  # transformers 5: init functions that respect the "already loaded" flags
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init
from transformers.modeling_outputs import ModelOutput
from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3RMSNorm
from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

from training.losses import IGNORE_INDEX, token_cross_entropy, token_sum_cross_entropy

from . import attention as _attention  # noqa: F401  (registers the "keye_varlen" attention)
from .configuration import KeyeConfig
from .projector import KeyeProjector
from .rope import MultimodalRotaryEmbedding, get_rope_index
from .vision import KeyeVisionModel


def _mean_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean token loss, loss tokens): the LM loss of training.losses as a mean, which is what
    transformers' `loss` means. Training reads `token_logps` instead (the sums a task normalises)."""
    total, count = token_sum_cross_entropy(logits, targets)
    return total / count.clamp(min=1), count


@dataclass
class KeyeCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: Any = None
    rope_deltas: torch.Tensor | None = None
    num_loss_tokens: torch.Tensor | None = None
    # with labels and return_logits=False: log p(target) at every position that has a target, 0
    # elsewhere, (batch, length) in float32; training tasks sum it per sample (losses.segment_sums)
    token_logps: torch.Tensor | None = None


class KeyeTextModel(nn.Module):
    """The Qwen3 decoder (`model.*` in the checkpoint), built from transformers' Qwen3 layers."""

    def __init__(self, config: KeyeConfig):
        super().__init__()
        qwen3 = config.qwen3_config()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([Qwen3DecoderLayer(qwen3, i) for i in range(config.num_hidden_layers)])
        self.norm = Qwen3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MultimodalRotaryEmbedding(config.head_dim, config.rope_theta, config.mrope_section)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
    ) -> torch.Tensor:
        cos, sin = self.rotary_emb(position_ids, inputs_embeds.dtype)
        extra = {"cu_seqlens": cu_seqlens} if cu_seqlens is not None else {}
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=attention_mask,
                position_embeddings=(cos, sin),
                past_key_values=past_key_values,
                use_cache=past_key_values is not None,
                **extra,
            )
        return self.norm(hidden_states)


class KeyePreTrainedModel(PreTrainedModel):
    config_class = KeyeConfig
    config: KeyeConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen3DecoderLayer", "KeyeVisionBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, SiglipMultiheadAttentionPoolingHead):
            init.normal_(module.probe, std=self.config.initializer_range)


class KeyeForConditionalGeneration(KeyePreTrainedModel):
    def __init__(self, config: KeyeConfig):
        super().__init__(config)
        vision = config.vision_config
        self.mlp_AR = KeyeProjector(vision.hidden_size, config.hidden_size, vision.spatial_merge_size)
        self.visual = KeyeVisionModel(vision)
        self.model = KeyeTextModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    # --- transformers plumbing ----------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *args: Any, **kwargs: Any):
        """Load safetensors weights; any missing, unexpected or mis-shaped tensor is an error
        (never a silently half-random model)."""
        want_info = kwargs.pop("output_loading_info", False)
        kwargs.setdefault("use_safetensors", True)
        kwargs.pop("trust_remote_code", None)  # never: this class is the code
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
        problems = {k: sorted(map(str, v)) for k, v in info.items() if k in kinds and v}
        if problems:
            raise ValueError(f"checkpoint {pretrained_model_name_or_path} does not match Keye: {problems}")
        return (model, info) if want_info else model

    # --- forward pieces -------------------------------------------------------------------------

    def embed_vision(
        self,
        pixel_values: torch.Tensor | None,
        image_grid_thw: torch.Tensor | None,
        pixel_values_videos: torch.Tensor | None,
        video_grid_thw: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One ViT pass over all images and videos (packed), then the projector.
        Returns (image_embeds, video_embeds), each (merged tokens, hidden) or None."""
        parts, grids, counts = [], [], []
        for pixels, grid in ((pixel_values, image_grid_thw), (pixel_values_videos, video_grid_thw)):
            triples = [tuple(int(v) for v in g) for g in (grid.tolist() if grid is not None else [])]
            if pixels is not None and pixels.numel() and triples:
                parts.append(pixels)
                grids.extend(triples)
            else:
                triples = []
            m = self.config.spatial_merge_size
            counts.append(sum(t * (h // m) * (w // m) for t, h, w in triples))
        if not grids:
            return None, None
        features = self.visual(torch.cat(parts, dim=0), grids)
        merged = self.mlp_AR(features, grids)
        image_embeds, video_embeds = merged.split(counts)
        return (image_embeds if counts[0] else None), (video_embeds if counts[1] else None)

    def _untouched_vision_term(self) -> torch.Tensor | float:
        """0 x (ViT + projector on one blank 2x2-patch image) when training a text-only batch.

        Data-parallel ZeRO-2/3 reduce gradients inside each backward pass, bucket by bucket, for the
        parameters that received one; a rank whose micro-batch has no image would skip the ViT's
        and projector's buckets while a rank with an image reduces them, and the ranks' collectives
        no longer match (gloo: "Received data size doesn't match"). Through this term every trained
        parameter gets a gradient (of zero) on every rank; the loss and the gradients' values do
        not change. Nothing is added at inference or when the vision side is frozen."""
        vision_params = [*self.visual.parameters(), *self.mlp_AR.parameters()]
        if not (self.training and torch.is_grad_enabled() and any(p.requires_grad for p in vision_params)):
            return 0.0
        v = self.config.vision_config
        m = self.config.spatial_merge_size
        blank = torch.zeros(m * m, v.num_channels * v.patch_size**2, device=self.lm_head.weight.device,
                            dtype=self.visual.vision_model.embeddings.patch_embedding.weight.dtype)
        grid = [(1, m, m)]
        return 0.0 * self.mlp_AR(self.visual(blank, grid), grid).sum()

    @staticmethod
    def _scatter(
        embeds: torch.Tensor, input_ids: torch.Tensor, token_id: int, values: torch.Tensor | None, what: str
    ) -> torch.Tensor:
        """Vision embeddings replace the pad tokens, in order; counts must match exactly."""
        mask = input_ids == token_id
        found = int(mask.sum())
        given = 0 if values is None else values.shape[0]
        if found != given:
            raise ValueError(f"{found} {what} pad tokens in input_ids but {given} {what} embeddings from the grids")
        if not found:
            return embeds
        return embeds.masked_scatter(mask.unsqueeze(-1), values.to(embeds.dtype))

    def rope_index(
        self,
        input_ids: torch.Tensor,
        image_grid_thw=None,
        video_grid_thw=None,
        second_per_grid_ts=None,
        attention_mask: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return get_rope_index(
            input_ids.cpu(),
            image_grid_thw,
            video_grid_thw,
            second_per_grid_ts,
            image_token_id=self.config.image_token_id,
            video_token_id=self.config.video_token_id,
            spatial_merge_size=self.config.spatial_merge_size,
            tokens_per_second=self.config.tokens_per_second,
            attention_mask=attention_mask.cpu() if attention_mask is not None else None,
            cu_seqlens=cu_seqlens.cpu() if cu_seqlens is not None else None,
        )

    @staticmethod
    def _attention_mask(
        attention_mask: torch.Tensor | None, query_len: int, past_len: int, device: torch.device
    ) -> torch.Tensor | None:
        """Boolean (B, 1, Lq, Lk) mask, True = may attend; None when plain causal is enough."""
        if attention_mask is None and (query_len == 1 or past_len == 0):
            return None
        key_len = past_len + query_len
        q_pos = torch.arange(past_len, key_len, device=device).view(-1, 1)
        k_pos = torch.arange(key_len, device=device).view(1, -1)
        mask = (k_pos <= q_pos).view(1, 1, query_len, key_len)
        if attention_mask is not None:
            keys = attention_mask[:, :key_len].bool().to(device).view(-1, 1, 1, key_len)
            mask = mask & keys
            # a padding query would see nothing (NaN in SDPA): let it see itself; its output is ignored
            mask = mask | (k_pos == q_pos).view(1, 1, query_len, key_len)
        return mask

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
        use_cache: bool = False,
        rope_deltas: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        return_logits: bool = True,
    ) -> KeyeCausalLMOutput:
        """`return_logits=False` with labels projects only the positions that carry a label through
        lm_head (training: saves the (tokens x vocab) logits of prompts and vision tokens)."""
        batch, length = input_ids.shape
        if cu_seqlens is not None and (batch != 1 or past_key_values is not None or attention_mask is not None):
            raise ValueError("packed input (cu_seqlens) is one row (1, total), without cache or attention_mask")
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache()
        past_len = past_key_values.get_seq_length() if past_key_values is not None else 0

        embeds = self.model.embed_tokens(input_ids)
        image_embeds, video_embeds = self.embed_vision(
            pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw
        )
        if image_embeds is None and video_embeds is None:
            embeds = embeds + self._untouched_vision_term()
        embeds = self._scatter(embeds, input_ids, self.config.image_token_id, image_embeds, "image")
        embeds = self._scatter(embeds, input_ids, self.config.video_token_id, video_embeds, "video")

        if position_ids is None:
            if past_len == 0:
                position_ids, rope_deltas = self.rope_index(
                    input_ids, image_grid_thw, video_grid_thw, second_per_grid_ts, attention_mask, cu_seqlens
                )
            else:  # decoding after a prompt: id = token index + the prompt's rope delta
                if rope_deltas is None:
                    raise ValueError("decoding with a KV cache needs the rope_deltas returned by the prefill")
                steps = torch.arange(past_len, past_len + length, device=input_ids.device).view(1, -1)
                position_ids = (steps + rope_deltas.to(input_ids.device).view(-1, 1)).unsqueeze(0).expand(3, -1, -1)
        position_ids = position_ids.to(input_ids.device)

        mask = None
        if cu_seqlens is None:
            mask = self._attention_mask(attention_mask, length, past_len, input_ids.device)
        hidden = self.model(
            embeds,
            position_ids,
            attention_mask=mask,
            cu_seqlens=cu_seqlens,
            past_key_values=past_key_values,
        )
        loss = num_loss_tokens = logits = token_logps = None
        if labels is not None and not return_logits:
            targets = self.shift_labels(labels, cu_seqlens)
            keep = targets != IGNORE_INDEX
            nll = token_cross_entropy(self.lm_head(hidden[keep]), targets[keep])
            token_logps = torch.zeros(targets.shape, dtype=nll.dtype, device=nll.device).masked_scatter(keep, -nll)
            num_loss_tokens = keep.sum()
            loss = nll.sum() / num_loss_tokens.clamp(min=1)
        else:
            logits = self.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
            if labels is not None:
                loss, num_loss_tokens = self.lm_loss(logits, labels, cu_seqlens)
        return KeyeCausalLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=past_key_values if use_cache else None,
            rope_deltas=rope_deltas,
            num_loss_tokens=num_loss_tokens,
            token_logps=token_logps,
        )

    @staticmethod
    def shift_labels(labels: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """targets[i] = labels[i + 1]; the last token of every sample (packed or not) predicts nothing."""
        targets = torch.full_like(labels, IGNORE_INDEX)
        targets[:, :-1] = labels[:, 1:]
        if cu_seqlens is not None:
            ends = cu_seqlens[1:].to(labels.device).long() - 1
            targets[0, ends] = IGNORE_INDEX
        return targets

    def lm_loss(self, logits: torch.Tensor, labels: torch.Tensor, cu_seqlens: torch.Tensor | None = None):
        """Mean next-token cross-entropy over the tokens with a label (fp32 logits)."""
        targets = self.shift_labels(labels, cu_seqlens)
        return _mean_cross_entropy(logits, targets)

    # --- generation -----------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Greedy or sampled decoding with a KV cache; see `training.model.generation.generate`."""
        from .generation import generate

        return generate(self, input_ids, **kwargs)
