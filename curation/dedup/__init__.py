"""Deduplication and decontamination steps (Spark, deterministic).

    near_text.near_dedup_text   MinHash-LSH text near-duplicates -> reason near_duplicate
    near_image.image_dedup      exact pixel + pHash image duplicates -> reason duplicate_image
    decontam.decontaminate      benchmark images (pHash) / CLIP image+text -> benchmark_overlap

Building blocks: shingles (text -> n-gram sets), minhash (datasketch-compatible signatures),
lsh (band choice and band keys), components (connected components on DataFrames, keep one per
component), image_hash (pixel hash, pHash), benchmarks (reading benchmark sets).
"""

import importlib

# Imported on first use: Spark's Python workers unpickle step functions from single modules
# (near_text, minhash), and should not pay for importing every step (pandas, image code) first.
_EXPORTS = {
    "DecontamConfig": "decontam",
    "decontaminate": "decontam",
    "ImageDedupConfig": "near_image",
    "image_dedup": "near_image",
    "NearTextDedupConfig": "near_text",
    "near_dedup_text": "near_text",
}

__all__ = ["DecontamConfig", "ImageDedupConfig", "NearTextDedupConfig", "decontaminate", "image_dedup", "near_dedup_text"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"curation.dedup.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'curation.dedup' has no attribute {name!r}")
