"""A verifiable synthetic task: images the generator drew, the question, the answer it knows, and
reasoning computed from its own state (positions, values, angles), in English or Chinese.

Everything random comes from ``task_rng(kind, seed, lang)``, so the same (kind, seed, lang) gives
the same bytes on the same machine (fonts are the installed ones, chosen in sorted order).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

Lang = Literal["en", "zh"]
AnswerKind = Literal["number", "choice", "text"]
LANGS: tuple[str, ...] = ("en", "zh")


@dataclass
class Task:
    kind: str
    seed: int
    lang: str
    images: list[bytes]  # encoded PNG or JPEG; the sandbox sees them as image_0.png, image_1.jpg, ...
    question: str  # without a mode switch: the trainer's processor appends it from think_mode
    answer: str  # short canonical answer
    answer_kind: str  # number, choice or text
    steps: list[str]  # step-by-step reasoning from the generator's state, ending at the answer
    agentic_code: str | None  # numpy + PIL only; reads image_<i>.<ext>, prints what agentic_after uses
    task_type: str  # TaskGalaxy path
    agentic_before: list[str] = field(default_factory=list)  # reasoning before the code
    agentic_after: list[str] = field(default_factory=list)  # reasoning after its output, ending at the answer
    agentic_expect: str | None = None  # a line the sandbox output must contain (else the run disagrees)
    distractor: str = ""  # a plausible wrong answer (the one a typical mistake gives)
    wrong_steps: list[str] = field(default_factory=list)  # the reasoning with one wrong step, ending at distractor
    simple: bool = False  # auto_think answers directly when true
    analysis: str = ""  # why it is simple or not: a clause in the task's language for <analysis>
    choices: list[str] | None = None  # the options of a choice question
    meta: dict = field(default_factory=dict)  # "ask": what the question asks (all that checks read), fonts, ...
    check: tuple[bool, str] | None = None  # set by check_task: (ok, how it was checked)


def task_rng(kind: str, seed: int, lang: str) -> random.Random:
    return random.Random(f"keyeforge.reasoning:{kind}:{lang}:{seed}")


def encode_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    # fixed settings: the same pixels always give the same bytes
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def decode_rgb(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of encoded image bytes."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def image_extension(data: bytes) -> str:
    """File extension of encoded image bytes, from their signature."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    raise ValueError("not a PNG, JPEG, WebP or GIF image")


def input_file_names(images: list[bytes]) -> list[str]:
    """What the sandbox calls the row's input images: image_<index>.<extension of its format>."""
    return [f"image_{i}.{image_extension(data)}" for i, data in enumerate(images)]


def input_files(images: list[bytes]) -> dict[str, bytes]:
    return dict(zip(input_file_names(images), images))
