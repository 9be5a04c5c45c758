"""Request messages: checking them, and turning them into each backend's format.

Our messages are the sample contract's turns (curation.schema) with image parts pointing into the
request's `images`. The HTTP backend sends OpenAI content parts (images as base64 `data:` URIs);
the transformers backend builds the chat-template form of the HF processor. Both come from the
same checked messages, so a request that one backend accepts the other reads the same way.
"""

from __future__ import annotations

import base64
import hashlib

from synthesis.model_client.records import BAD_IMAGE, BAD_REQUEST

ROLES = ("system", "user", "assistant")

# Magic bytes of the image formats every OpenAI-compatible server decodes.
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


class RequestError(ValueError):
    """A request that cannot be sent as it is; `code` is the Completion reason code."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def image_mime(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    return None


def image_sha256s(images: list[bytes]) -> list[str]:
    return [hashlib.sha256(bytes(b)).hexdigest() for b in images]


def checked_messages(messages: list[dict], n_images: int) -> list[dict]:
    """The messages in one canonical shape ({"role", "content": [{"type": "text", "text"} |
    {"type": "image", "index"}]}), or RequestError(bad_request) naming the first problem.

    Canonical means the same request always gives the same cache key: None-valued keys that come
    out of Arrow structs (a text part's `index`, an image part's `text`) are dropped.
    """
    if not messages:
        raise RequestError(BAD_REQUEST, "no messages")
    out = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise RequestError(BAD_REQUEST, f"message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, str):  # a plain-string turn is one text part
            content = [{"type": "text", "text": content}]
        parts = []
        for j, part in enumerate(content if content is not None else []):
            kind = part.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text") or "")})
            elif kind == "image":
                index = part.get("index")
                if index is None or not 0 <= int(index) < n_images:
                    raise RequestError(
                        BAD_REQUEST, f"message {i} part {j}: image index {index!r} outside the {n_images} images"
                    )
                parts.append({"type": "image", "index": int(index)})
            else:
                raise RequestError(
                    BAD_REQUEST, f"message {i} part {j}: part type {kind!r} is not supported (text, image)"
                )
        out.append({"role": role, "content": parts})
    return out


def openai_messages(messages: list[dict], images: list[bytes]) -> list[dict]:
    """Checked messages -> OpenAI chat messages. A turn of text only is sent as one string (every
    server reads that, including templates that cannot take part lists for system turns)."""
    urls: dict[int, str] = {}
    out = []
    for message in messages:
        parts = message["content"]
        if all(p["type"] == "text" for p in parts):
            out.append({"role": message["role"], "content": "".join(p["text"] for p in parts)})
            continue
        converted = []
        for part in parts:
            if part["type"] == "text":
                converted.append({"type": "text", "text": part["text"]})
                continue
            index = part["index"]
            if index not in urls:
                data = bytes(images[index])
                mime = image_mime(data)
                if mime is None:
                    raise RequestError(
                        BAD_IMAGE, f"image {index}: not JPEG, PNG, WebP, GIF or BMP (first bytes {data[:8].hex()})"
                    )
                urls[index] = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
            converted.append({"type": "image_url", "image_url": {"url": urls[index]}})
        out.append({"role": message["role"], "content": converted})
    return out


def text_only_messages(messages: list[dict]) -> list[dict]:
    """Checked messages -> {"role", "content": str} for a text-only chat template."""
    return [{"role": m["role"], "content": "".join(p["text"] for p in m["content"])} for m in messages]


def has_images(messages: list[dict]) -> bool:
    return any(p["type"] == "image" for m in messages for p in m["content"])
