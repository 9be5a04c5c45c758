"""In-process generation with a keyeforge Keye export (training/export.py's folder).

The trainer's own pieces, so a prompt is tokenised and its images patched exactly as in training:
`KeyeProcessor` (chat format, smart_resize, patches, grid_thw; the default system prompt when the
conversation has none) and `KeyeForConditionalGeneration.generate` (KV cache, 3D positions,
left-padded batches). The folder's tokenizer is used when it has one, else the Qwen tokenizer the
trainer uses. That decoder returns token ids only, so logprobs are refused (bad_request).
"""

from __future__ import annotations

from pathlib import Path

from synthesis.model_client.backend import Call, Reply
from synthesis.model_client.hf_backend import choices_from_tokens
from synthesis.model_client.records import BAD_REQUEST
from synthesis.model_client.retry import CallError


class KeyeRunner:
    def __init__(self, path: str, device: str, dtype):
        from training.model import KeyeForConditionalGeneration
        from training.processor import KeyeProcessor, load_tokenizer

        own_tokenizer = (Path(path) / "tokenizer.json").is_file() or (Path(path) / "tokenizer_config.json").is_file()
        self.processor = KeyeProcessor(load_tokenizer(path if own_tokenizer else None))
        self.tokenizer = self.processor.tokenizer
        self.model = KeyeForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
        self.device = device
        self.eos_ids = [self.processor.im_end_id, self.processor.endoftext_id]

    def refuse(self, call: Call) -> CallError | None:
        if call.params["logprobs"]:
            return CallError(BAD_REQUEST, "logprobs are not available from the in-process Keye decoder")
        return None

    def generate(self, calls: list[Call]) -> list[Reply]:
        import torch

        params = calls[0].params
        n = params["n"]
        samples = [
            self.processor.process({"messages": c.messages, "images": list(c.images)}, add_generation_prompt=True)
            for c in calls
        ]
        width = max(len(s.input_ids) for s in samples)
        pad = self.processor.endoftext_id
        ids = torch.full((len(samples), width), pad, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for row, sample in enumerate(samples):  # left padding: every prompt ends at the same column
            ids[row, width - len(sample.input_ids) :] = sample.input_ids
            mask[row, width - len(sample.input_ids) :] = 1
        has_pixels = any(s.pixel_values is not None for s in samples)
        # n sequences per prompt: each sample repeated n times (rows i*n .. i*n+n-1), images too
        ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
        pixel_values = (
            torch.cat([s.pixel_values for s in samples for _ in range(n) if s.pixel_values is not None])
            if has_pixels
            else None
        )
        grids = torch.cat([s.image_grid_thw for s in samples for _ in range(n)]) if has_pixels else None
        generator = None
        if params["seed"] is not None:
            generator = torch.Generator(self.device).manual_seed(params["seed"])
        sequences = self.model.generate(
            ids.to(self.device),
            attention_mask=mask.to(self.device),
            pixel_values=pixel_values.to(self.device, self.model.dtype) if pixel_values is not None else None,
            image_grid_thw=grids.to(self.device) if grids is not None else None,
            max_new_tokens=params["max_tokens"],
            do_sample=params["temperature"] > 0,
            temperature=params["temperature"],
            top_p=params["top_p"],
            top_k=int((params.get("extra_body") or {}).get("top_k") or 0),
            eos_token_id=self.eos_ids,
            pad_token_id=pad,
            generator=generator,
        )
        replies = []
        for i, sample in enumerate(samples):
            rows = sequences[i * n : (i + 1) * n, width:]
            choices, used = choices_from_tokens(self.tokenizer, rows, self.eos_ids)
            prompt = len(sample.input_ids)
            replies.append(
                Reply(choices, {"prompt_tokens": prompt, "completion_tokens": used, "total_tokens": prompt + used})
            )
        return replies
