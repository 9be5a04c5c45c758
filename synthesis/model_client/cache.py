"""Disk cache of successful completions, keyed by everything that decides the answer.

The key is the sha256 of a canonical JSON (sorted keys, no whitespace) of: the cache format
version, backend, model, the checked messages (images as their index), the images' sha256s, the
effective sampling parameters, the response schema and how it is sent, and the caller's
prompt_version. Endpoints, the API key, timeouts and retry settings are not in it: they change
how an answer is fetched, not what it is. A changed prompt, image or parameter is a new key, so a
stale answer is never served; a caller that changes its parser bumps prompt_version.

Entries are one JSON file each (`<dir>/<key[:2]>/<key>.json`), written to a temporary file and
renamed into place, so Spark workers sharing the folder never read half an entry. Failures are
never cached: a rerun tries them again. An unreadable entry is a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# Bump when what the client stores or how it parses replies changes: older entries become misses.
CACHE_FORMAT = 1
STORED = ("texts", "logprobs", "usage", "parsed", "finish_reasons", "reasoning")


def cache_key(
    *,
    backend: str,
    model: str,
    messages: list[dict],
    image_sha256s: list[str],
    params: dict[str, Any],
    response_schema: dict | None,
    structured_outputs: str,
    prompt_version: str,
) -> str:
    payload = {
        "format": CACHE_FORMAT,
        "backend": backend,
        "model": model,
        "messages": messages,
        "images": image_sha256s,
        "params": params,
        "schema": response_schema,
        "structured_outputs": structured_outputs if response_schema is not None else None,
        "prompt_version": prompt_version,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class DiskCache:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not entry.get("texts"):
            return None
        return {name: entry.get(name) for name in STORED}

    def put(self, key: str, values: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, **{name: values.get(name) for name in STORED}}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
