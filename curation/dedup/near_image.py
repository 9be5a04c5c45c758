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
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curation.dedup import image_hash
from curation.dedup.components import PhaseClock, connected_components, reject_duplicates
from curation.dedup.near_text import bucket_pairs, pairs_of_bucket
from curation.spark import checkpoint, small_side
from curation.workdir import PHASHES
from curation.steps import Step, is_kept, with_reject_column

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
    """mapInPandas function: (id, pos, bytes) -> fingerprints of each readable image (the pixel
    hash only when asked: wherever pHashes are compared, identical pixels are caught by them)."""

    def __init__(self, bands: int, bits_per_band: int, seed: int, pixel_hash: bool = True):
        self.positions = image_hash.band_positions(bands, bits_per_band, seed)
        self.pixel_hash = pixel_hash

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd  # in the workers only: a driver planning the steps does not load pandas

        for batch in batches:
            ids, poss, pixel_hashes, phashes = [], [], [], []
            for row_id, pos, data in zip(batch["id"], batch["pos"], batch["bytes"]):
                img = image_hash.decode(data) if data is not None else None
                if img is None:
                    continue
                with img:
                    ids.append(row_id)
                    poss.append(int(pos))
                    pixel_hashes.append(image_hash.pixel_hash(img) if self.pixel_hash else None)
                    phashes.append(image_hash.phash(img))
            hashes = np.asarray(phashes, dtype=np.int64)
            values = image_hash.band_values(hashes, self.positions) if len(hashes) else np.zeros((0, 0), np.int64)
            yield pd.DataFrame(
                {"id": ids, "pos": np.asarray(poss, dtype=np.int32), "pixel_hash": pd.Series(pixel_hashes, dtype=object),
                 "phash": hashes, "bands": list(values)}
            )


class _BandBatches:
    """mapInPandas function: (id, pos, phash) of images hashed before -> the same fingerprint rows."""

    def __init__(self, bands: int, bits_per_band: int, seed: int):
        self.positions = image_hash.band_positions(bands, bits_per_band, seed)

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        for batch in batches:
            hashes = batch["phash"].to_numpy(dtype=np.int64)
            values = image_hash.band_values(hashes, self.positions) if len(hashes) else np.zeros((0, 0), np.int64)
            yield pd.DataFrame(
                {"id": batch["id"], "pos": batch["pos"].astype(np.int32), "pixel_hash": pd.Series([None] * len(hashes), dtype=object),
                 "phash": hashes, "bands": list(values)}
            )


def image_hashes(df: DataFrame, cfg: ImageDedupConfig, known: DataFrame | None = None, known_rows: int = 0) -> DataFrame:
    """One row per readable image of each kept row: id, pos, pixel_hash, phash, band values.

    `known`: (sha256, phash) of images hashed before (`known_rows` of them): those images are not
    decoded again, only the others are. Unused when exact copies alone are asked for (`exact`
    without `near`), which needs every image's pixel hash.
    """
    images = (
        with_reject_column(df)
        .where(is_kept())
        .select("id", F.posexplode("images").alias("pos", "image"))
        .select("id", "pos", F.col("image.sha256").alias("sha256"), F.col("image.bytes").alias("bytes"))
    )
    exact_only = cfg.exact and not cfg.near
    decode = _HashBatches(cfg.bands, cfg.bits_per_band, cfg.seed, pixel_hash=exact_only)
    if known is None or exact_only:
        return images.select("id", "pos", "bytes").mapInPandas(decode, IMAGE_HASH_SCHEMA)
    known = small_side(known, known_rows, row_bytes=80)
    found = images.select("id", "pos", "sha256").join(known, "sha256").select("id", "pos", "phash")
    hashed = found.mapInPandas(_BandBatches(cfg.bands, cfg.bits_per_band, cfg.seed), IMAGE_HASH_SCHEMA)
    # Images nobody hashed yet (rows that did not pass validation's decoding): few or none. Their
    # keys are found narrowly, and only their bytes are read again.
    missing = checkpoint(images.select("id", "pos", "sha256").join(known.select("sha256"), "sha256", "left_anti").select("id", "pos"))
    n_missing = missing.count()
    if not n_missing:
        return hashed
    again = images.join(small_side(missing, n_missing, row_bytes=48), ["id", "pos"], "left_semi").select("id", "pos", "bytes")
    return hashed.unionByName(again.mapInPandas(decode, IMAGE_HASH_SCHEMA))


def image_edges(hashes: DataFrame, cfg: ImageDedupConfig) -> DataFrame:
    """(src, dst) row pairs that share an identical or a near-identical image."""
    edges = []
    if cfg.exact and not cfg.near:  # with near on, identical pixels are pHash-identical: found there
        same_pixels = hashes.groupBy("pixel_hash").agg(F.array_sort(F.collect_set("id")).alias("ids"))
        # Every image in a bucket is the same picture: a star links them all.
        edges.append(bucket_pairs(same_pixels.where(F.size("ids") > 1), 0))
    if cfg.near:
        banded = hashes.select("id", "phash", F.posexplode("bands").alias("band", "value"))
        # one shuffle of (id, pHash, band, value), each partition sorted by bucket (Spark's sort
        # spills): the pairing streams over it holding one batch and one bucket, not the partition
        buckets = banded.repartition("band", "value").sortWithinPartitions("band", "value")
        edges.append(buckets.mapInArrow(_CloseBucketPairs(cfg.all_pairs_bucket, cfg.max_hamming), "src string, dst string"))
    if not edges:
        return hashes.sparkSession.createDataFrame([], "src string, dst string")
    out = edges[0]
    for more in edges[1:]:
        out = out.unionByName(more)
    return out.where(F.col("src") != F.col("dst")).distinct()


class _CloseBucketPairs:
    """mapInArrow function over (band, value) buckets of (id, pHash) members, the partition sorted
    by bucket: the pairs `bucket_pairs` gives for each bucket's sorted distinct members (all pairs
    up to `all_pairs_bucket`, a star and a chain above), kept where the two pHashes are at most
    `max_hamming` bits apart, as (src id, dst id). Batches stream: the last bucket of a batch may
    go on in the next, so it is held back and joined to it; memory is a batch and a bucket, not
    the partition (which grows with the corpus: at 100k images a worker held 1 GiB reading it
    whole). Numpy finds the shared buckets; Python pairs only their members (the SQL formulation
    spent most of the step in shuffles of arrays)."""

    def __init__(self, all_pairs_bucket: int, max_hamming: int):
        self.all_pairs_bucket, self.max_hamming = all_pairs_bucket, max_hamming

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        held = None  # the rows of the last bucket seen, which the next batch may continue
        for batch in batches:
            if batch.num_rows == 0:
                continue
            table = pa.Table.from_batches([batch]) if held is None else pa.concat_tables([held, pa.Table.from_batches([batch])])
            band, value = table.column("band").to_numpy(), table.column("value").to_numpy()
            last = np.flatnonzero((band == band[-1]) & (value == value[-1]))[0]  # where the last bucket starts
            held = table.slice(last)
            if last:
                yield self.pairs(table.slice(0, last))
        if held is not None:
            yield self.pairs(held)

    def pairs(self, table: pa.Table) -> pa.RecordBatch:
        band, value = table.column("band").to_numpy(), table.column("value").to_numpy()
        order = np.lexsort((value, band))  # sorted already when Spark sorted the partition: cheap
        band, value = band[order], value[order]
        same = (band[1:] == band[:-1]) & (value[1:] == value[:-1])
        shared = np.zeros(len(order), dtype=bool)
        shared[1:] |= same
        shared[:-1] |= same
        starts = np.flatnonzero(np.concatenate([[True], ~same])[shared])
        picked = pa.array(order[shared])
        ids = table.column("id").take(picked).to_pylist()
        phashes = table.column("phash").take(picked).to_pylist()
        src: list[str] = []
        dst: list[str] = []
        for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), len(ids)]):
            members = sorted(set(zip(ids[lo:hi], phashes[lo:hi])))
            for (a, pa_), (b, pb) in pairs_of_bucket(members, self.all_pairs_bucket):
                if a != b and ((pa_ ^ pb) & 0xFFFFFFFFFFFFFFFF).bit_count() <= self.max_hamming:
                    src.append(a)
                    dst.append(b)
        return pa.RecordBatch.from_pydict({"src": pa.array(src, pa.string()), "dst": pa.array(dst, pa.string())})


class ImageDedup(Step):
    """The step: rows showing an image that another kept row shows (exactly or nearly) are
    rejected as `duplicate_image`, one row per group kept. Only ids and fingerprints are grouped.
    Stats: images hashed, duplicate pairs, components, their sizes, phase seconds."""

    name = STEP

    def __call__(self, df: DataFrame) -> DataFrame:
        cfg = self.config
        df = with_reject_column(df)
        if not (cfg.exact or cfg.near):
            return df
        clock = PhaseClock(self.stats)
        known, known_rows = known_phashes(self.context.work)
        hashes = checkpoint(image_hashes(df, cfg, known, known_rows))
        self.stats["images_hashed"] = hashes.count()
        clock.note("image hashes")
        edges = checkpoint(image_edges(hashes, cfg))
        self.stats["duplicate_pairs"] = edges.count()
        clock.note("duplicate pairs")
        components = connected_components(edges, cfg.max_rounds, cfg.driver_components_max_edges, self.stats)
        clock.note("connected components")
        marked = reject_duplicates(df, components, STEP, REASON, cfg.keep_by, self.stats)
        clock.note("duplicates chosen")
        return marked


def known_phashes(work) -> tuple[DataFrame | None, int]:
    """(sha256, phash) of the images a step of this job decoded before (validation), and their
    count; (None, 0) outside a job or when none did."""
    if work is None:
        return None, 0
    from pyspark.sql import SparkSession

    records = work.find_all(PHASHES)
    if not records:
        return None, 0
    spark = SparkSession.getActiveSession()
    frames = [work.read_frame(spark, r) for r in records]
    known = frames[0]
    for more in frames[1:]:
        known = known.unionByName(more)
    # Exact copies of an image were hashed (and recorded) once per row that shows them.
    known = checkpoint(known.dropDuplicates(["sha256"]))
    return known, known.count()


def image_dedup(df: DataFrame, cfg: ImageDedupConfig) -> DataFrame:
    """The step as a function (`ImageDedup(cfg)(df)`)."""
    return ImageDedup(cfg)(df) if cfg.enabled else with_reject_column(df)
