"""The Keye-VL model: native-resolution SigLIP ViT with 2D RoPE -> 2x2-merge MLP -> Qwen3 with M-RoPE.

Same architecture and parameter names as the released Keye-VL-8B-Preview, so its checkpoint loads
with `KeyeForConditionalGeneration.from_pretrained(local_dir)` (safetensors, strict: any missing or
unexpected tensor is an error).

Layout
    configuration.py  KeyeConfig / KeyeVisionConfig (the released config.json field names)
    vision.py         ViT: conv patch embedding (14), learned 27x27 table bilinearly resized to each
                      grid, 2D RoPE on (row, col) over the head dim (theta 10000), pre-norm blocks
                      with GELU-tanh MLPs, post-layernorm; packed over many images (cu_seqlens)
    projector.py      `mlp_AR`: LayerNorm -> 2x2 merge -> Linear -> GELU -> Linear
    modeling.py       KeyeForConditionalGeneration: vision embeddings replace the pad tokens, the
                      Qwen3 decoder (transformers' Qwen3DecoderLayer) runs with M-RoPE cos/sin
    rope.py           3D position ids (get_rope_index rule), M-RoPE and 2D vision RoPE tables
    attention.py      packed attention: flash-attn varlen on CUDA when installed, else SDPA per segment
    generation.py     greedy / sampled decoding with a KV cache and the per-sample rope delta
    weights.py        build a fresh model from a SigLIP + a Qwen3 checkpoint

Inputs (the trainer's packed path): input_ids (1, total), position_ids (3, 1, total), cu_seqlens
[0, l0, l0+l1, ...] for the text samples, pixel_values (num_patches, 3*14*14) and
pixel_values_videos with image_grid_thw / video_grid_thw (in patches, t = frames), labels (1, total).
Attention never crosses a sample in the LLM, nor an image/video in the ViT. Training passes
`return_logits=False`: only labelled positions go through lm_head (the loss is the same).
`training.processor.KeyeProcessor` turns a sample-contract row into these inputs and
`collate_packed` packs several.

Video-frame attention rule in the ViT (as the released code): every entry of image_grid_thw /
video_grid_thw is one attention segment of t*h*w patches, so all sampled frames of ONE video attend
to each other (bidirectionally), different images and videos never do. Every frame gets the same
learned position table and the same (row, col) 2D RoPE ids: time enters only through the LLM's
temporal M-RoPE id, start + int(k * seconds_per_frame * tokens_per_second).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration import KeyeConfig, KeyeVisionConfig, load_model_config
from .modeling import KeyeCausalLMOutput, KeyeForConditionalGeneration
from .rope import get_rope_index

# So that AutoConfig / AutoModelForCausalLM open a Keye folder with this code (the released
# config.json's model_type is "Keye"), never with trust_remote_code.
AutoConfig.register(KeyeConfig.model_type, KeyeConfig, exist_ok=True)
AutoModel.register(KeyeConfig, KeyeForConditionalGeneration, exist_ok=True)
AutoModelForCausalLM.register(KeyeConfig, KeyeForConditionalGeneration, exist_ok=True)

__all__ = [
    "KeyeConfig",
    "KeyeVisionConfig",
    "KeyeForConditionalGeneration",
    "KeyeCausalLMOutput",
    "get_rope_index",
    "load_model_config",
]
