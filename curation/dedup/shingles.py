"""What a row's text is made of, for near-duplicate detection: its tokens and shingles.

Space-delimited text becomes word tokens; CJK text (no spaces between words) becomes character
tokens. The choice is made per document from its script, so a mixed corpus is handled row by row.
Text is NFKC-normalised and lower-cased first, so full-width and half-width forms, and case, do not
make two copies of a document look different. A shingle is n consecutive tokens joined by one
space (words or characters alike), so a shingle's tokens are always `shingle.split(" ")`.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")
# Han, kana, hangul: scripts written without spaces between words.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")

Script = Literal["auto", "words", "chars"]


def normalize(text: str) -> str:
    if text.isascii():  # NFKC leaves ASCII as it is; skipping it is a large share of the cost
        return text.lower()
    return unicodedata.normalize("NFKC", text).lower()


def is_cjk(text: str, min_ratio: float = 0.3) -> bool:
    """True when at least `min_ratio` of the non-space characters are CJK."""
    letters = len(text) - sum(len(m) for m in _SPACE.findall(text))
    return letters > 0 and len(_CJK.findall(text)) >= min_ratio * letters


def tokens(text: str, script: Script = "auto", cjk_ratio: float = 0.3) -> tuple[list[str], bool]:
    """(tokens, True if they are characters) of a normalised document."""
    text = normalize(text or "")
    use_chars = script == "chars" or (script == "auto" and not text.isascii() and is_cjk(text, cjk_ratio))
    if use_chars:
        # Spaces and punctuation carry no content in CJK text; dropping them makes re-spacing and
        # re-punctuation invisible.
        return [c for c in text if c.isalnum()], True
    return _WORD.findall(text), False


def ngram_size(is_chars: bool, word_ngram: int, char_ngram: int) -> int:
    return char_ngram if is_chars else word_ngram


def shingles(
    text: str,
    word_ngram: int = 5,
    char_ngram: int = 5,
    script: Script = "auto",
    cjk_ratio: float = 0.3,
) -> set[str]:
    """The set of shingles of a document (empty for text without tokens).

    A document shorter than one n-gram is a single shingle (all its tokens), so short texts can
    still match their exact copies.
    """
    toks, is_chars = tokens(text, script, cjk_ratio)
    n = ngram_size(is_chars, word_ngram, char_ngram)
    if len(toks) <= n:
        return {" ".join(toks)} if toks else set()
    # zip over n shifted views: the n-grams without a Python-level loop per position.
    return set(map(" ".join, zip(*(toks[k:] for k in range(n)))))


def jaccard(a: set, b: set) -> float:
    """Exact Jaccard similarity of two shingle sets (0 for two empty sets)."""
    if not a and not b:
        return 0.0
    return len(a & b) / len(a | b)
