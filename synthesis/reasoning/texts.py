"""What the reading tasks ask to read: a few English words, a short Chinese phrase, or a code.

Words and phrases come from the OCR renderer's shipped corpora (synthesis/data). Codes use a
charset without the glyphs that look alike in many fonts (0/O, 1/I/l, 5/S, 2/Z, 8/B): an answer must
be decidable from the pixels, by a person and by the independent OCR check.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from synthesis.ocr_render import corpus

CODE_CHARSET = "ACDEFGHJKMNPQRTUVWXY34679"
_WORD = re.compile(r"[a-z]{3,9}")
_ZH_PUNCT = re.compile(r"[，。、；：？！“”‘’（）《》\s]+")


@lru_cache(maxsize=1)
def english_words() -> tuple[str, ...]:
    words = set()
    for line in corpus.read_lines(corpus.SHIPPED["en"]):
        words.update(_WORD.findall(line.lower()))
    # no capital letters anywhere, so a lowercase l is never an ambiguous I
    return tuple(sorted(words))


@lru_cache(maxsize=1)
def chinese_clauses() -> tuple[str, ...]:
    clauses = []
    for line in corpus.read_lines(corpus.SHIPPED["zh"]):
        clauses.extend(c for c in _ZH_PUNCT.split(line) if len(c) >= 4)
    return tuple(clauses)


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(english_words()) for _ in range(count))


def phrase(rng: random.Random, lo: int, hi: int) -> str:
    """lo..hi consecutive characters of a Chinese clause of the corpus."""
    clause = rng.choice(chinese_clauses())
    n = min(len(clause), rng.randint(lo, hi))
    start = rng.randint(0, len(clause) - n)
    return clause[start : start + n]


def code(rng: random.Random) -> str:
    return "-".join("".join(rng.choice(CODE_CHARSET) for _ in range(rng.randint(3, 4))) for _ in range(2))


def reading(rng: random.Random, lang: str, long: bool = False) -> str:
    """A text to read: English words (sometimes a code), or a Chinese phrase."""
    if lang == "zh":
        return phrase(rng, 4, 8 if long else 6)
    if rng.random() < 0.2:
        return code(rng)
    return words(rng, rng.randint(2, 3) if long else 2)


# Look-alike readings: what a hurried reader (or a weak model) mistakes a character for.
_LOOKALIKE = {
    "a": "o",
    "o": "a",
    "e": "c",
    "c": "e",
    "n": "h",
    "h": "n",
    "r": "n",
    "m": "n",
    "u": "v",
    "v": "u",
    "t": "f",
    "f": "t",
    "g": "q",
    "q": "g",
    "d": "b",
    "b": "d",
    "p": "q",
    "y": "v",
    "w": "v",
    "s": "z",
    "k": "x",
    "x": "k",
    "3": "8",
    "6": "5",
    "4": "9",
    "7": "1",
    "9": "4",
    "A": "R",
    "C": "G",
    "D": "P",
    "E": "F",
    "F": "E",
    "G": "C",
    "H": "N",
    "K": "X",
    "M": "N",
    "N": "M",
    "P": "R",
    "Q": "O",
    "R": "P",
    "T": "Y",
    "U": "V",
    "V": "U",
    "W": "V",
    "X": "K",
    "Y": "V",
    "人": "入",
    "大": "太",
    "日": "目",
    "土": "士",
    "己": "已",
    "未": "末",
    "天": "夫",
    "午": "牛",
    "力": "刀",
    "王": "玉",
    "木": "本",
    "田": "由",
    "贝": "见",
    "问": "间",
    "处": "外",
    "上": "土",
    "子": "于",
    "千": "干",
    "白": "百",
    "今": "令",
    "我": "找",
    "到": "倒",
    "的": "约",
    "在": "左",
    "是": "足",
    "有": "布",
    "时": "对",
}


def misread(rng: random.Random, text: str) -> str:
    """`text` with one character read as a look-alike (or, with none, one character skipped)."""
    spots = [i for i, ch in enumerate(text) if ch in _LOOKALIKE]
    if spots:
        i = rng.choice(spots)
        return text[:i] + _LOOKALIKE[text[i]] + text[i + 1 :]
    i = rng.choice([i for i, ch in enumerate(text) if not ch.isspace()])
    return text[:i] + text[i + 1 :]


def spelled(text: str, lang: str) -> str:
    """Character by character: 's-h-i-p-s r-i-v-e-r' / '清、晨、的'."""
    if lang == "zh":
        return "、".join(ch for ch in text if not ch.isspace())
    return " ".join("-".join(word) for word in text.split())
