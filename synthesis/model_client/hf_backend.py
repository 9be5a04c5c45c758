"""The in-process transformers backend: a local Hugging Face folder, batched generate.

Two kinds of folder:
  * any chat model (AutoModelForCausalLM + its tokenizer's chat template; with a processor that
    has an image processor, AutoModelForImageTextToText and the processor's template with images);
  * a keyeforge Keye export (config.json model_type "Keye"): the trainer's own model class, chat
    format and image processing (synthesis.model_client.keye_runner), never remote code.

Calls with equal sampling parameters are batched (batch_size prompts, left-padded, n sequences
each). A seed seeds torch before each batch: a batch is reproducible, and a request's answer
depends on the batch it shared. Decoding is not constrained by the response schema here; replies
are validated and re-asked like any others. `extra_body` keys `chat_template_kwargs` (e.g.
{"enable_thinking": false}), `top_k`, `min_p` and `repetition_penalty` apply; others are for
servers only. A batch that raises is retried one request at a time, so one bad request fails
alone (generation_error), never its neighbours.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from synthesis.model_client.backend import Call, Choice, Reply
from synthesis.model_client.config import ClientConfig, ClientConfigError
from synthesis.model_client.content import has_images, text_only_messages
from synthesis.model_client.records import GENERATION_ERROR, IMAGES_UNSUPPORTED, PROMPT_TOO_LONG
from synthesis.model_client.retry import CallError

GENERATE_EXTRAS = ("top_k", "min_p", "repetition_penalty")


def pick_device(name: str) -> str:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ClientConfigError("model client: device=cuda but torch sees no CUDA device")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def pick_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, name)


class TransformersBackend:
    def __init__(self, cfg: ClientConfig):
        self.cfg = cfg
        device = pick_device(cfg.device)
        dtype = pick_dtype(cfg.dtype, device)
        model_type = json.loads((Path(cfg.model_path) / "config.json").read_text()).get("model_type")
        if model_type == "Keye":
            from synthesis.model_client.keye_runner import KeyeRunner

            self.runner = KeyeRunner(cfg.model_path, device, dtype)
        else:
            self.runner = ChatModelRunner(cfg, device, dtype)

    def run(self, calls: list[Call]) -> list[Reply | CallError]:
        results: list[Reply | CallError | None] = [None] * len(calls)
        groups: dict[str, list[int]] = {}
        for i, call in enumerate(calls):
            problem = self.runner.refuse(call)
            if problem is not None:
                results[i] = problem
                continue
            groups.setdefault(json.dumps(call.params, sort_keys=True, default=str), []).append(i)
        for members in groups.values():
            for start in range(0, len(members), self.cfg.batch_size):
                batch = members[start : start + self.cfg.batch_size]
                for i, reply in zip(batch, self._generate([calls[i] for i in batch])):
                    results[i] = reply
        return results  # type: ignore[return-value]

    def _generate(self, calls: list[Call]) -> list[Reply | CallError]:
        try:
            return self.runner.generate(calls)
        except Exception as exc:  # noqa: BLE001 - one request's failure must not end the job
            if len(calls) > 1:
                return [self._generate([call])[0] for call in calls]
            return [CallError(GENERATION_ERROR, f"{type(exc).__name__}: {exc}")]

    def close(self) -> None:
        pass


def generate_kwargs(params: dict[str, Any], pad_id: int, eos_ids: list[int]) -> dict[str, Any]:
    sample = params["temperature"] > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": params["max_tokens"],
        "do_sample": sample,
        "num_return_sequences": params["n"],
        "pad_token_id": pad_id,
        "eos_token_id": eos_ids,
        "return_dict_in_generate": True,
        "output_logits": bool(params["logprobs"]),
    }
    if sample:
        kwargs.update(temperature=params["temperature"], top_p=params["top_p"])
    else:  # greedy: unset the model's own sampling defaults so generate does not warn about them
        kwargs.update(temperature=None, top_p=None, top_k=None)
    extra = params.get("extra_body") or {}
    kwargs.update({k: extra[k] for k in GENERATE_EXTRAS if k in extra})
    return kwargs


def choices_from_tokens(
    tokenizer, new_tokens, eos_ids: list[int], logits=None, top_logprobs: int = 0
) -> tuple[list[Choice], int]:
    """Rows of generated ids (pad after eos) -> Choices, and the completion tokens used (eos included)."""
    import torch

    choices, used = [], 0
    for row, ids in enumerate(new_tokens.tolist()):
        end = next((k for k, t in enumerate(ids) if t in eos_ids), None)
        kept = ids if end is None else ids[:end]
        used += len(kept) + (0 if end is None else 1)
        logprobs = None
        if logits is not None:
            logprobs = []
            for step, token in enumerate(kept):
                scores = torch.log_softmax(logits[step][row].float(), dim=-1)
                entry = {"token": tokenizer.decode([token]), "logprob": float(scores[token]), "top_logprobs": []}
                if top_logprobs:
                    values, indices = scores.topk(top_logprobs)
                    entry["top_logprobs"] = [
                        {"token": tokenizer.decode([int(j)]), "logprob": float(v)} for v, j in zip(values, indices)
                    ]
                logprobs.append(entry)
        choices.append(
            Choice(
                text=tokenizer.decode(kept, skip_special_tokens=True),
                finish_reason="length" if end is None else "stop",
                logprobs=logprobs,
            )
        )
    return choices, used


def eos_token_ids(model, tokenizer) -> list[int]:
    found = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = [found] if isinstance(found, int) else list(found or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def open_image(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(bytes(data)))
    return image.convert("RGB")


class ChatModelRunner:
    """Any Hugging Face chat model: its chat template, its tokenizer (and image processor)."""

    def __init__(self, cfg: ClientConfig, device: str, dtype):
        from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        path, remote = cfg.model_path, cfg.trust_remote_code
        processor = None
        try:
            processor = AutoProcessor.from_pretrained(path, trust_remote_code=remote)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a text-only folder may have no processor at all
        self.vision = (
            processor is not None and hasattr(processor, "image_processor") and hasattr(processor, "tokenizer")
        )
        self.processor = processor if self.vision else None
        self.tokenizer = (
            processor.tokenizer if self.vision else AutoTokenizer.from_pretrained(path, trust_remote_code=remote)
        )
        self.tokenizer.padding_side = "left"  # generation continues every row at the same right edge
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not getattr(self.processor or self.tokenizer, "chat_template", None):
            raise ClientConfigError(
                f"model client: {path} has no chat template (tokenizer_config.json or chat_template.jinja)"
            )
        cls = AutoModelForImageTextToText if self.vision else AutoModelForCausalLM
        self.model = cls.from_pretrained(path, dtype=dtype, trust_remote_code=remote).to(device).eval()
        self.device = device
        self.eos_ids = eos_token_ids(self.model, self.tokenizer)
        text_config = getattr(self.model.config, "text_config", None) or self.model.config
        self.max_positions = getattr(text_config, "max_position_embeddings", None)

    def refuse(self, call: Call) -> CallError | None:
        if has_images(call.messages) and not self.vision:
            return CallError(
                IMAGES_UNSUPPORTED, f"{type(self.model).__name__} is a text-only model; the request has images"
            )
        if self.max_positions and not self.vision:
            length = len(self.tokenizer(self._prompt(call), add_special_tokens=False)["input_ids"])
            if length + call.params["max_tokens"] > self.max_positions:
                return CallError(
                    PROMPT_TOO_LONG,
                    f"{length} prompt tokens + max_tokens {call.params['max_tokens']} > {self.max_positions} positions",
                )
        return None

    def _prompt(self, call: Call) -> str:
        kwargs = (call.params.get("extra_body") or {}).get("chat_template_kwargs") or {}
        if not self.vision:
            return self.tokenizer.apply_chat_template(
                text_only_messages(call.messages), add_generation_prompt=True, tokenize=False, **kwargs
            )
        messages = [
            {
                "role": m["role"],
                "content": [
                    {"type": "image"} if p["type"] == "image" else {"type": "text", "text": p["text"]}
                    for p in m["content"]
                ],
            }
            for m in call.messages
        ]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)

    def generate(self, calls: list[Call]) -> list[Reply]:
        import torch

        params = calls[0].params
        prompts = [self._prompt(call) for call in calls]
        if self.vision:
            images = [
                open_image(call.images[p["index"]])
                for call in calls
                for m in call.messages
                for p in m["content"]
                if p["type"] == "image"
            ]
            inputs = self.processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        else:
            inputs = self.tokenizer(prompts, padding=True, add_special_tokens=False, return_tensors="pt")
        inputs = inputs.to(self.device)
        if params["seed"] is not None:
            torch.manual_seed(params["seed"])
        with torch.inference_mode():
            out = self.model.generate(**inputs, **generate_kwargs(params, self.tokenizer.pad_token_id, self.eos_ids))
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        n = params["n"]
        replies = []
        for i in range(len(calls)):
            rows = slice(i * n, (i + 1) * n)
            logits = [step[rows] for step in out.logits] if params["logprobs"] else None
            choices, used = choices_from_tokens(
                self.tokenizer, out.sequences[rows, prompt_len:], self.eos_ids, logits, params["top_logprobs"]
            )
            usage = {
                "prompt_tokens": int(prompt_tokens[i]),
                "completion_tokens": used,
                "total_tokens": int(prompt_tokens[i]) + used,
            }
            replies.append(Reply(choices, usage))
        return replies
