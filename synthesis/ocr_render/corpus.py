"""Text to render: semantic lines from corpora, and non-semantic strings (characters, numbers,
dates, codes).

The repository ships a small Chinese and English sample (``synthesis/data/{zh,en}.txt``); a user
points ``corpora`` at their own UTF-8 text files (one sentence or paragraph a line), on a file
system the executors see; ``builtin:en.txt`` names a shipped sample. Every choice
takes a ``random.Random`` so that a sample's text follows from its seed alone.
"""

from __future__ import annotations

import datetime
import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

DATA = Path(__file__).resolve().parent.parent / "data"
BUILTIN = "builtin:"  # resolved where the text is read (the executor), not where the job starts
SHIPPED = {"en": f"{BUILTIN}en.txt", "zh": f"{BUILTIN}zh.txt"}

# Common characters for non-semantic text: frequent hanzi, Latin letters and digits.
ZH_CHARSET = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方"
    "后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开"
    "它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此"
    "变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老"
)
EN_CHARSET = string.ascii_letters + string.digits
CODE_CHARSET = string.ascii_uppercase + string.digits

KINDS = ("sentence", "chars", "number", "date", "code")


@dataclass
class CorpusConfig:
    """Where text comes from and in what mix."""

    corpora: dict[str, list[str]] = field(default_factory=lambda: {k: [v] for k, v in SHIPPED.items()})
    # Weights of the text kinds: corpus sentences vs non-semantic strings.
    mix: dict[Literal["sentence", "chars", "number", "date", "code"], float] = field(
        default_factory=lambda: {"sentence": 0.7, "chars": 0.1, "number": 0.07, "date": 0.06, "code": 0.07}
    )
    charset_zh: str = ZH_CHARSET
    charset_en: str = EN_CHARSET


@lru_cache(maxsize=64)
def read_lines(path: str) -> tuple[str, ...]:
    """Non-empty stripped lines of a UTF-8 text file (``builtin:NAME``: a shipped sample)."""
    file = DATA / path[len(BUILTIN) :] if path.startswith(BUILTIN) else Path(path)
    text = file.read_text(encoding="utf-8")
    lines = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not lines:
        raise ValueError(f"corpus {path} has no text")
    return lines


def corpus_lines(corpora: Mapping[str, Sequence[str]], lang: str) -> tuple[str, ...]:
    paths = corpora.get(lang)
    if not paths:
        raise ValueError(f"no corpus configured for language {lang!r}; configured: {sorted(corpora)}")
    out: list[str] = []
    for path in paths:
        out.extend(read_lines(path))
    return tuple(out)


def sentence(rng: random.Random, cfg: CorpusConfig, lang: str, max_chars: int) -> str:
    """One corpus line, cut at a word (en) or character (zh) boundary to at most max_chars."""
    line = rng.choice(corpus_lines(cfg.corpora, lang))
    return clip(line, max_chars, lang)


def clip(text: str, max_chars: int, lang: str) -> str:
    if len(text) <= max_chars:
        return text
    if lang == "zh":
        return text[:max_chars]
    cut = text[:max_chars].rsplit(" ", 1)[0]
    return cut or text[:max_chars]


def random_chars(rng: random.Random, charset: str, n: int) -> str:
    return "".join(rng.choice(charset) for _ in range(n))


def number(rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return str(rng.randrange(10, 10_000_000))
    if style == 1:
        return f"{rng.uniform(0, 100_000):,.2f}"
    if style == 2:
        return f"{rng.uniform(-100, 100):.1f}%"
    return f"+86 {rng.randrange(130, 190)} {rng.randrange(1000, 10000)} {rng.randrange(1000, 10000)}"


def date(rng: random.Random, lang: str) -> str:
    day = datetime.date(1990, 1, 1) + datetime.timedelta(days=rng.randrange(16_000))
    if lang == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    style = rng.randrange(3)
    if style == 0:
        return day.isoformat()
    if style == 1:
        return day.strftime("%d %b %Y")
    return f"{day.month}/{day.day}/{day.year}"


def code(rng: random.Random) -> str:
    groups = rng.randint(2, 4)
    return "-".join(random_chars(rng, CODE_CHARSET, rng.randint(3, 5)) for _ in range(groups))


def text(rng: random.Random, cfg: CorpusConfig, lang: str, max_chars: int = 40, kind: str | None = None) -> tuple[str, str]:
    """(text, kind): a string of the configured mix in `lang`, at most about max_chars long."""
    if kind is None:
        kinds = [k for k in KINDS if cfg.mix.get(k, 0) > 0]
        kind = rng.choices(kinds, weights=[cfg.mix[k] for k in kinds])[0]
    if kind == "sentence":
        return sentence(rng, cfg, lang, max_chars), kind
    if kind == "chars":
        charset = cfg.charset_zh if lang == "zh" else cfg.charset_en
        n = rng.randint(4, max(4, min(max_chars, 16 if lang == "zh" else 24)))
        return random_chars(rng, charset, n), kind
    if kind == "number":
        return number(rng), kind
    if kind == "date":
        return date(rng, lang), kind
    if kind == "code":
        return code(rng), kind
    raise ValueError(f"unknown text kind {kind!r}; known: {KINDS}")
