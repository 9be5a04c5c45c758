"""Image duplicates: exact (same decoded pixels) and near (64-bit pHash within a Hamming distance).

    images of kept rows (mapInPandas: decode, pixel hash, pHash, LSH band values)
    ->  rows sharing a pixel hash, and rows with pHashes that share a band and are at most
        `max_hamming` bits apart  ->  connected components over rows  ->  one row kept per
        component, the others rejected with reason `duplicate_image` and the kept row's id

A multi-image row is linked to every row that has any of its images, so it is dropped when any of
its images duplicates another kept row's (Keye-VL's rule). Unreadable images are not compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curation.dedup import image_hash
from curation.dedup.components import (
    LAST_ROUNDS,
    Progress,
    connected_components,
    reject_duplicates,
)
from curation.dedup.near_text import bucket_pairs
from curation.spark import checkpoint
from curation.steps import is_kept, with_reject_column

if TYPE_CHECKING:
    import pandas as pd

STEP = "image_dedup"
REASON = "duplicate_image"


@dataclass
class ImageDedupConfig:
    enabled: bool = True
    exact: bool = True  # same decoded pixels (any encoding)
    near: bool = True  # pHash within max_hamming bits
    max_hamming: int = 10  # of 64 bits; 2% crops measure 0-10, unrelated images 20+
    bands: int = 48  # LSH over the pHash bits: P(candidate | 10 bits apart) ~ 0.97
    bits_per_band: int = 14
    seed: int = 1
    all_pairs_bucket: int = 64
    keep_by: str | None = None  # quality column (higher is kept), then the smallest id
    max_rounds: int = 64
    # > 0: a duplicate graph of at most this many edges is solved by union-find in the driver
    # (faster on small corpora, costs driver memory); 0: always the distributed rounds
    driver_components_max_edges: int = 0


IMAGE_HASH_SCHEMA = "id string, pos int, pixel_hash string, phash long, bands array<long>"


class _HashBatches:
    """mapInPandas function: (id, pos, bytes) -> fingerprints of each readable image."""

    def __init__(self, bands: int, bits_per_band: int, seed: int):
        self.positions = image_hash.band_positions(bands, bits_per_band, seed)

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd  # in the workers only: a driver planning the steps does not load pandas

        for batch in batches:
            ids, poss, pixel_hashes, phashes = [], [], [], []
            for row_id, pos, data in zip(batch["id"], batch["pos"], batch["bytes"]):
                img = image_hash.decode(data) if data is not None else None
                if img is None:
                    continue
                ids.append(row_id)
                poss.append(int(pos))
                pixel_hashes.append(image_hash.pixel_hash(img))
                phashes.append(image_hash.phash(img))
            hashes = np.asarray(phashes, dtype=np.int64)
            values = image_hash.band_values(hashes, self.positions) if len(hashes) else np.zeros((0, 0), np.int64)
            yield pd.DataFrame(
                {"id": ids, "pos": np.asarray(poss, dtype=np.int32), "pixel_hash": pixel_hashes, "phash": hashes, "bands": list(values)}
            )


def image_hashes(df: DataFrame, cfg: ImageDedupConfig) -> DataFrame:
    """One row per readable image of each kept row: id, pos, pixel_hash, phash, band values."""
    images = (
        with_reject_column(df)
        .where(is_kept())
        .select("id", F.posexplode("images").alias("pos", "image"))
        .select("id", "pos", F.col("image.bytes").alias("bytes"))
    )
    return images.mapInPandas(_HashBatches(cfg.bands, cfg.bits_per_band, cfg.seed), IMAGE_HASH_SCHEMA)


def image_edges(hashes: DataFrame, cfg: ImageDedupConfig) -> DataFrame:
    """(src, dst) row pairs that share an identical or a near-identical image."""
    edges = []
    if cfg.exact:
        same_pixels = hashes.groupBy("pixel_hash").agg(F.array_sort(F.collect_set("id")).alias("ids"))
        # Every image in a bucket is the same picture: a star links them all.
        edges.append(bucket_pairs(same_pixels.where(F.size("ids") > 1), 0))
    if cfg.near:
        members = F.array_sort(F.collect_set(F.struct("id", "phash")))
        buckets = (
            hashes.select("id", "phash", F.posexplode("bands").alias("band", "value"))
            .groupBy("band", "value")
            .agg(members.alias("m"))
            .where(F.size("m") > 1)
        )
        pairs = bucket_pairs(buckets.select(F.col("m").alias("ids")), cfg.all_pairs_bucket)
        close = F.bit_count(F.col("src.phash").bitwiseXOR(F.col("dst.phash"))) <= cfg.max_hamming
        edges.append(pairs.where(close).select(F.col("src.id").alias("src"), F.col("dst.id").alias("dst")))
    if not edges:
        return hashes.sparkSession.createDataFrame([], "src string, dst string")
    out = edges[0]
    for more in edges[1:]:
        out = out.unionByName(more)
    return out.where(F.col("src") != F.col("dst")).distinct()


def image_dedup(df: DataFrame, cfg: ImageDedupConfig) -> DataFrame:
    """The step: rows showing an image that another kept row shows (exactly or nearly) are
    rejected as `duplicate_image`, one row per group kept."""
    df = with_reject_column(df)
    if not cfg.enabled or not (cfg.exact or cfg.near):
        return df
    clock = Progress(STEP)
    hashes = checkpoint(image_hashes(df, cfg))
    clock.note("image hashes")
    components = connected_components(image_edges(hashes, cfg), cfg.max_rounds, cfg.driver_components_max_edges)
    clock.note(f"candidate pairs and connected components ({LAST_ROUNDS[0]} rounds)")
    return reject_duplicates(df, components, STEP, REASON, cfg.keep_by)
