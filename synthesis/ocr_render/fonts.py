"""Fonts: discovery in configured folders and the system, and glyph-coverage checks (no tofu).

A font is used for a text only when its character map covers every character of that text, so a
Latin-only font never draws boxes for Chinese. Discovery order: the configured folders (searched
recursively), then system fonts (``fc-list`` where present, else the standard font folders). Each
face of a collection (.ttc/.otc) is its own ``Face``. The face list is sorted, so the same folders
give the same choices on every run.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import ImageFont

FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
SYSTEM_DIRS = (
    "/usr/share/fonts",
    "/usr/local/share/fonts",
    "~/.fonts",
    "~/.local/share/fonts",
    "/Library/Fonts",
    "/System/Library/Fonts",
    "C:/Windows/Fonts",
)
IGNORED = frozenset("\n\r\t")
COVERAGE_CACHE = Path(os.environ.get("KEYEFORGE_CACHE", Path.home() / ".cache" / "keyeforge")) / "font_coverage"


class NoFontError(LookupError):
    """No discovered font covers every character of a text."""


@dataclass(frozen=True, order=True)
class Face:
    path: str
    index: int = 0

    @property
    def name(self) -> str:
        base = os.path.basename(self.path)
        return f"{base}#{self.index}" if self.path.lower().endswith((".ttc", ".otc")) else base


def discover(folders: Sequence[str] = (), use_system: bool = True) -> list[Face]:
    """Every usable face in `folders` (then the system's when use_system), sorted, no duplicates."""
    files: list[str] = []
    for folder in folders:
        root = Path(folder).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"font folder {folder} does not exist")
        files.extend(str(p) for p in sorted(root.rglob("*")) if p.suffix.lower() in FONT_SUFFIXES)
    if use_system:
        files.extend(system_font_files())
    faces: list[Face] = []
    seen: set[str] = set()
    for path in files:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        faces.extend(f for f in expand(real) if usable(f))
    return sorted(set(faces))


def system_font_files() -> list[str]:
    """Font files the system knows: fc-list when installed, else the standard folders."""
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, timeout=30)
            files = [line.strip() for line in out.stdout.splitlines() if line.strip().lower().endswith(FONT_SUFFIXES)]
            if files:
                return sorted(set(files))
        except (OSError, subprocess.SubprocessError):
            pass
    files = []
    for folder in SYSTEM_DIRS:
        root = Path(folder).expanduser()
        if root.is_dir():
            files.extend(str(p) for p in root.rglob("*") if p.suffix.lower() in FONT_SUFFIXES)
    return sorted(set(files))


def expand(path: str) -> list[Face]:
    """The faces of a font file: one, or one per member of a collection."""
    if path.lower().endswith((".ttc", ".otc")):
        from fontTools.ttLib import TTCollection

        try:
            with TTCollection(path, lazy=True) as coll:
                return [Face(path, i) for i in range(len(coll.fonts))]
        except Exception:  # unreadable collection: skipped, like any unusable font
            return []
    return [Face(path, 0)]


def usable(face: Face) -> bool:
    """PIL can load the face at a normal size and it maps at least some characters."""
    try:
        load(face, 24)
    except (OSError, ValueError):
        return False
    return bool(codepoints(face))


@lru_cache(maxsize=None)
def codepoints(face: Face) -> frozenset[int]:
    """The code points the face's character map covers (empty if it cannot be read).

    Reading a large CJK character map takes a tenth of a second, so the result is also kept on
    disk (a .npy of uint32, keyed by path, face, size and mtime) for the next process.
    """
    cached = _coverage_file(face)
    if cached is not None and cached.exists():
        try:
            return frozenset(np.load(cached, allow_pickle=False).tolist())
        except (OSError, ValueError):
            pass
    from fontTools.ttLib import TTFont

    try:
        with TTFont(face.path, fontNumber=face.index, lazy=True) as font:
            cmap = font.getBestCmap() or {}
    except Exception:  # a broken file covers nothing, so it is never chosen
        return frozenset()
    points = frozenset(cmap)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, np.array(sorted(points), dtype=np.uint32), allow_pickle=False)
            os.replace(tmp, cached)
        except OSError:  # a read-only home: no cache, same answer
            pass
    return points


def _coverage_file(face: Face) -> Path | None:
    try:
        st = os.stat(face.path)
    except OSError:
        return None
    key = hashlib.sha256(f"{face.path}\0{face.index}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:24]
    return COVERAGE_CACHE / f"{key}.npy"


def covers(face: Face, text: str) -> bool:
    """True when every character of `text` (line breaks aside) has a glyph in the face."""
    cps = codepoints(face)
    return all(ord(ch) in cps for ch in set(text) if ch not in IGNORED)


def missing(face: Face, text: str) -> str:
    cps = codepoints(face)
    return "".join(sorted({ch for ch in text if ch not in IGNORED and ord(ch) not in cps}))


@lru_cache(maxsize=1024)
def load(face: Face, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(face.path, size, index=face.index, layout_engine=ImageFont.Layout.BASIC)


class FontPool:
    """Chooses, for a text, one of the faces that cover it."""

    def __init__(self, faces: Iterable[Face]):
        self.faces = sorted(set(faces))
        self._by_chars: dict[frozenset[str], tuple[Face, ...]] = {}

    def candidates(self, text: str) -> tuple[Face, ...]:
        chars = frozenset(ch for ch in text if ch not in IGNORED)
        found = self._by_chars.get(chars)
        if found is None:
            found = tuple(f for f in self.faces if covers(f, text))
            if len(self._by_chars) > 4096:
                self._by_chars.clear()
            self._by_chars[chars] = found
        return found

    def pick(self, rng: random.Random, text: str) -> Face:
        found = self.candidates(text)
        if not found:
            raise NoFontError(f"no font among {len(self.faces)} covers {text[:30]!r}")
        return rng.choice(found)

    def __len__(self) -> int:
        return len(self.faces)
