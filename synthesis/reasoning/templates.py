"""The mode templates (configs/reasoning_modes.yaml): switches, tags, the code fence, the boxed
answer, auto_think's decision sentences. Loaded into a typed dataclass tree with curation.config,
so a misspelt or missing key is an error that names the valid ones."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from curation.config import ConfigError, keys, merge

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = "configs/reasoning_modes.yaml"
MODES = ("think", "no_think", "auto_think", "agentic")


@dataclass
class Tag:
    open: str = ""
    close: str = ""

    def wrap(self, text: str) -> str:
        return f"{self.open}{text}{self.close}"


@dataclass
class Switches:
    think: str = ""
    no_think: str = ""
    auto_think: str = ""
    agentic: str = ""


@dataclass
class Tags:
    think: Tag = field(default_factory=Tag)
    answer: Tag = field(default_factory=Tag)
    analysis: Tag = field(default_factory=Tag)
    code: Tag = field(default_factory=Tag)
    sandbox_output: Tag = field(default_factory=Tag)


@dataclass
class Sentences:
    en: list[str] = field(default_factory=list)
    zh: list[str] = field(default_factory=list)

    def pick(self, rng: random.Random, lang: str) -> str:
        return rng.choice(getattr(self, lang))


@dataclass
class AutoThink:
    think: Sentences = field(default_factory=Sentences)
    direct: Sentences = field(default_factory=Sentences)


@dataclass
class ModeTemplates:
    switches: Switches = field(default_factory=Switches)
    tags: Tags = field(default_factory=Tags)
    code_fence: Tag = field(default_factory=Tag)
    boxed: str = ""
    boxed_kinds: list[str] = field(default_factory=list)
    auto_think: AutoThink = field(default_factory=AutoThink)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> ModeTemplates:
        """The templates of a YAML file (a relative path is tried from the working directory, then
        from the repository root). Every key must be present and non-empty."""
        file = Path(path)
        if not file.is_absolute() and not file.exists():
            file = ROOT / file
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        templates = merge(cls(), data, origin=str(file))
        empty = [key for key in keys(templates) if _get(templates, key) in ("", [], None)]
        if empty:
            raise ConfigError(f"{file}: these templates are missing or empty: {', '.join(empty)}")
        return templates

    def switch(self, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes: {MODES}")
        return getattr(self.switches, mode)

    def prompt_text(self, question: str, mode: str) -> str:
        """The question as a model is prompted in `mode`: with the switch (rows do not carry it)."""
        return question + self.switch(mode)

    def answer_body(self, answer: str, answer_kind: str) -> str:
        return self.boxed.format(answer=answer) if answer_kind in self.boxed_kinds else answer


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
