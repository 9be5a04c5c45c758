"""Deduplication and decontamination steps (Spark, deterministic).

    near_text.near_dedup_text   MinHash-LSH text near-duplicates -> reason near_duplicate
    near_image.image_dedup      exact pixel + pHash image duplicates -> reason duplicate_image
    decontam.decontaminate      benchmark images (pHash) / CLIP image+text -> benchmark_overlap

Building blocks: shingles (text -> n-gram sets), minhash (datasketch-compatible signatures),
lsh (band choice and band keys), components (connected components on DataFrames, keep one per
component), image_hash (pixel hash, pHash), benchmarks (reading benchmark sets).
"""

from curation.dedup.decontam import DecontamConfig, decontaminate
from curation.dedup.near_image import ImageDedupConfig, image_dedup
from curation.dedup.near_text import NearTextDedupConfig, near_dedup_text

__all__ = [
    "DecontamConfig",
    "ImageDedupConfig",
    "NearTextDedupConfig",
    "decontaminate",
    "image_dedup",
    "near_dedup_text",
]
