"""Tagging rows with task types: a row's question text against every leaf of the taxonomy by text
embedding (all-MiniLM-L6-v2, offline); the nearest paths above a threshold become its
`task_types`.

    index = TypeIndex(Taxonomy.load(), text_embedder())
    index.tag(["How many apples are there?"]) -> [[("counting~object counting~count objects of a class", 0.61)]]

A leaf is embedded two ways, and a question's score for it is the better of the two: its names
from the root down with its description ("counting > object counting > count people: count the
people in the image"), where the family's words help a short question, and its own name with its
description ("count people: count the people in the image"), where they would mislead. On the
test's 117 labelled questions the two views reach 0.923 top-1 accuracy at L1 (0.838 at L2) where
either alone reaches 0.897-0.923 (0.829-0.838); the variant was chosen on that set. Only the user
turns are read (the question, not the answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from taskgalaxy.taxonomy import Taxonomy


@dataclass
class TagConfig:
    enabled: bool = True
    taxonomy: str = ""  # a taxonomy file ("" = the shipped seed)
    model_path: str = ""  # a sentence-transformers folder ("" = all-MiniLM-L6-v2 from its wheel)
    threshold: float = 0.25  # cosine under which a row gets no type
    top_k: int = 1  # paths kept per row (nearest first)
    keep_existing: bool = True  # rows that already have task_types keep them
    batch_size: int = 256  # rows embedded at a time


class TypeIndex:
    def __init__(self, taxonomy: Taxonomy, embedder):
        self.leaves = taxonomy.leaves()
        self.paths = [t.path for t in self.leaves]
        self.embedder = embedder
        self.views = [embedder.encode([t.text() for t in self.leaves]),
                      embedder.encode([f"{t.name_en}: {t.description}" for t in self.leaves])]

    def tag(self, texts: Sequence[str], threshold: float = 0.25, top_k: int = 1) -> list[list[tuple[str, float]]]:
        if not texts:
            return []
        questions = self.embedder.encode([t or "" for t in texts])
        scores = np.maximum.reduce([questions @ view.T for view in self.views])
        out = []
        for row, text in zip(scores, texts):
            if not text:
                out.append([])
                continue
            order = np.argsort(-row, kind="stable")[:top_k]
            out.append([(self.paths[i], round(float(row[i]), 4)) for i in order if row[i] >= threshold])
        return out


def question_text(messages) -> str:
    """The text of the user turns (the question), or of every turn when there is no user turn
    (captions and documents)."""
    turns = [m for m in messages or () if m is not None]
    users = [m for m in turns if m.get("role") == "user"] or turns
    parts = [p.get("text") for m in users for p in (m.get("content") or ()) if p.get("type") == "text" and p.get("text")]
    return " ".join(" ".join(parts).split())
