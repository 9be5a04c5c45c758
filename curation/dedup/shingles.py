"""What a row's text is made of, for near-duplicate detection: its tokens and shingles.

Space-delimited text becomes word tokens; CJK text (no spaces between words) becomes character
tokens. The choice is made per document from its script, so a mixed corpus is handled row by row.
Text is NFKC-normalised and lower-cased first, so full-width and half-width forms, and case, do not
make two copies of a document look different. A shingle is n consecutive tokens joined by one
space (words or characters alike), so a shingle's tokens are always `shingle.split(" ")`.

`token_spans` finds the same tokens for a whole batch of documents at once, as byte spans of one
buffer, without a Python object per token: the fast path of the MinHash step.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

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


@dataclass(frozen=True)
class TokenSpans:
    """The tokens of a batch of documents: byte spans of one buffer, in document order.

    `data[starts[i]:ends[i]]` is the UTF-8 of token i (normalised and lower-cased, as `tokens`
    gives it); document d owns `counts[d]` consecutive tokens and is shingled with n = `ngram[d]`.
    """

    data: np.ndarray  # uint8
    starts: np.ndarray  # int64
    ends: np.ndarray  # int64
    counts: np.ndarray  # int64, tokens per document
    ngram: np.ndarray  # int64, n-gram size per document

    def token_bytes(self, i: int) -> bytes:
        return self.data[self.starts[i] : self.ends[i]].tobytes()


def token_spans(
    texts: Sequence[str | None],
    word_ngram: int = 5,
    char_ngram: int = 5,
    script: Script = "auto",
    cjk_ratio: float = 0.3,
) -> TokenSpans:
    """The tokens of every document, equal to `tokens(text)` for each, found by a compiled scan.

    ASCII documents (most of a web corpus) are never turned into Python token lists: their bytes
    are classified by `kernels.scan_spans`. Other documents go through `tokens` (NFKC, script
    choice) and are re-joined with spaces, which the same byte scan splits back into the same
    tokens.
    """
    pieces: list[bytes] = []
    ngram = np.empty(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        text = text or ""
        if script != "chars" and text.isascii():
            pieces.append(text.encode("ascii"))
            ngram[i] = word_ngram
        else:
            toks, is_chars = tokens(text, script, cjk_ratio)
            pieces.append(" ".join(toks).encode("utf-8"))
            ngram[i] = ngram_size(is_chars, word_ngram, char_ngram)
    # One newline between documents (a non-token byte): the buffer reads as the documents' text.
    # A bytearray, so that the scan lower-cases it in place (no second buffer).
    data = np.frombuffer(bytearray(b"\n").join(pieces), dtype=np.uint8)
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    doc_ends = np.cumsum(lengths + 1) - 1
    from curation.dedup import kernels  # numba, on first use (see minhash._kernels)

    starts, ends, counts = kernels.scan_spans(data, doc_ends - lengths, doc_ends)
    return TokenSpans(data, starts, ends, counts, ngram)


def shingles_per_doc(counts: np.ndarray, ngram: np.ndarray) -> np.ndarray:
    """Shingles of each document: c - n + 1 for c >= n tokens, 1 for 0 < c < n, 0 without tokens."""
    return np.where(counts > 0, np.maximum(counts - ngram, 0) + 1, 0)


def shingle_layout(counts: np.ndarray, ngram: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first token, width, shingles per document) of every shingle, in document order.

    A document of c >= n tokens has the c - n + 1 shingles of n tokens; one of 0 < c < n tokens has
    one shingle of all c (as `shingles`); one without tokens has none.
    """
    n_tokens = int(counts.sum())
    doc_first = np.cumsum(counts) - counts
    per_doc = shingles_per_doc(counts, ngram)
    # Position of each token inside its document, and the last position a shingle may start at.
    position = np.arange(n_tokens, dtype=np.int64) - np.repeat(doc_first, counts)
    first = np.flatnonzero(position <= np.repeat(per_doc - 1, counts))
    width = np.repeat(np.minimum(counts, ngram), per_doc)
    return first, width, per_doc
