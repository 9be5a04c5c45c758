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

Two options (tag.*):
- `image_weight` > 0: the row's first image is scored against every leaf by CLIP too (`tag.clip`,
  the CLIP step's loading). CLIP cosines live on another scale than the text model's, so per row
  the image scores are moved to the text scores' mean and spread, then mixed:
  (1 - w) * text + w * image. The threshold applies to the mixed score.
- `classify`: a model (the model client, `tag.classifier`) picks the type among the
  `candidates` nearest leaves (JSON schema); a name outside them, or a failed call, falls back to
  the nearest leaf and is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from curation.clip_model import ClipConfig
from synthesis.model_client.config import ClientConfig
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
    image_weight: float = 0.0  # > 0: mix in CLIP's image-to-type scores (see the module doc)
    clip: ClipConfig = field(default_factory=ClipConfig)
    classify: bool = False  # a model picks among the nearest `candidates` types
    classifier: ClientConfig = field(default_factory=ClientConfig)
    candidates: int = 8


class TypeIndex:
    def __init__(self, taxonomy: Taxonomy, embedder):
        self.leaves = taxonomy.leaves()
        self.paths = [t.path for t in self.leaves]
        self.embedder = embedder
        self.views = [embedder.encode([t.text() for t in self.leaves]),
                      embedder.encode([f"{t.name_en}: {t.description}" for t in self.leaves])]

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(rows, leaves) cosine of each text with each leaf (the better of the two views)."""
        questions = self.embedder.encode([t or "" for t in texts])
        return np.maximum.reduce([questions @ view.T for view in self.views])

    def tag(self, texts: Sequence[str], threshold: float = 0.25, top_k: int = 1,
            scores: np.ndarray | None = None) -> list[list[tuple[str, float]]]:
        """The nearest `top_k` paths above `threshold` per text, by `scores` when given (e.g. mixed
        with the image's), else by the texts' own."""
        if not texts:
            return []
        scores = self.scores(texts) if scores is None else scores
        out = []
        for row, text in zip(scores, texts):
            if not text:
                out.append([])
                continue
            order = np.argsort(-row, kind="stable")[:top_k]
            out.append([(self.paths[i], round(float(row[i]), 4)) for i in order if row[i] >= threshold])
        return out


def clip_type_texts(taxonomy: Taxonomy) -> list[str]:
    """What CLIP's text tower reads for each leaf: its names from the root down."""
    return [" ".join(t.path.split("~")) for t in taxonomy.leaves()]


def mix_image_scores(text: np.ndarray, image: np.ndarray, weight: float) -> np.ndarray:
    """(1 - w) * text + w * image, with each row of image scores first moved to the mean and
    spread of the same row of text scores (CLIP's cosines are on another scale). Rows without an
    image (NaN) keep their text scores."""
    if weight <= 0:
        return text
    mean_i, std_i = image.mean(axis=1, keepdims=True), image.std(axis=1, keepdims=True)
    mean_t, std_t = text.mean(axis=1, keepdims=True), text.std(axis=1, keepdims=True)
    rescaled = (image - mean_i) / np.where(std_i > 0, std_i, 1.0) * std_t + mean_t
    mixed = (1 - weight) * text + weight * rescaled
    return np.where(np.isnan(mixed), text, mixed)


def question_text(messages) -> str:
    """The text of the user turns (the question), or of every turn when there is no user turn
    (captions and documents)."""
    turns = [m for m in messages or () if m is not None]
    users = [m for m in turns if m.get("role") == "user"] or turns
    parts = [p.get("text") for m in users for p in (m.get("content") or ()) if p.get("type") == "text" and p.get("text")]
    return " ".join(" ".join(parts).split())
