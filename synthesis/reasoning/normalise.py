"""Text normalisation for comparing answers: what a reader may write differently without being
wrong (width and case, spaces, punctuation, the Unicode minus) is made equal."""

from __future__ import annotations

import re
import unicodedata

_DROP = re.compile(r"[\s\.,;:!?'\"`~\-_/\\|()\[\]{}<>，。、；：？！“”‘’（）《》【】·…—]+")
_MINUS = str.maketrans({"−": "-", "–": "-", "—": "-", "﹣": "-", "－": "-"})


def text_key(text: str) -> str:
    """NFKC, casefolded, without spaces and punctuation: 'Ships  river.' == 'shipsriver'."""
    return _DROP.sub("", unicodedata.normalize("NFKC", text).casefold())


def plain(text: str) -> str:
    """NFKC with ASCII minus signs and single spaces, stripped."""
    return " ".join(unicodedata.normalize("NFKC", text).translate(_MINUS).split())
