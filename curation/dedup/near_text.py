"""Text near-duplicates: MinHash signatures, LSH candidate pairs, connected components.

    signatures (mapInPandas, numpy)  ->  (band, key) per row  ->  rows sharing a band key
    ->  candidate pairs  ->  confirmed where the signatures agree on >= threshold of values
    ->  connected components (Spark)  ->  one row kept per component, the others rejected
        with reason `near_duplicate` and the kept row's id as detail

The text of a row is every text part of its messages (captions, documents, questions and
answers), in order. Rows without text, and rows already rejected, are not compared.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from curation.dedup import lsh, minhash
from curation.dedup.components import (
    LAST_ROUNDS,
    Progress,
    checkpoint,
    connected_components,
    reject_duplicates,
    small_side,
)
from curation.dedup.shingles import ngram_size, shingles, tokens
from curation.steps import is_kept, with_reject_column

STEP = "near_dedup"
REASON = "near_duplicate"


@dataclass
class NearTextDedupConfig:
    enabled: bool = True
    threshold: float = 0.8  # Jaccard similarity at or above which two texts are duplicates
    num_perm: int = 128
    seed: int = 1
    scheme: str = "affine32"  # datasketch >= 2.0 default; "legacy" for datasketch < 2.0 signatures
    # Shingle hash: "token" (fast; datasketch equal with hashfunc=minhash.shingle_hash32) or
    # "sha1" (datasketch's default hashfunc, ~5x slower).
    hash: str = "token"
    word_ngram: int = 5
    char_ngram: int = 5
    script: str = "auto"  # auto (per row: CJK -> chars, else words), words, chars
    cjk_ratio: float = 0.3  # share of CJK characters from which `auto` uses character n-grams
    bands: int = 0  # 0: chosen from the threshold (as datasketch); else given with rows
    rows: int = 0
    fp_weight: float = 0.5
    fn_weight: float = 0.5
    # Confirm candidates: "exact" Jaccard of the shingle-hash sets >= threshold (the default, as
    # Keye-VL confirms bucket mates), "signature" (estimated from the MinHash values) or "none".
    verify: str = "exact"
    all_pairs_bucket: int = 32  # buckets up to this size give all pairs, larger ones a star + chain
    keep_by: str | None = None  # quality column (higher is kept), then the smallest id
    max_rounds: int = 64

    def band_shape(self) -> tuple[int, int]:
        if self.bands and self.rows:
            return self.bands, self.rows
        if self.bands or self.rows:
            raise ValueError("give both near_text.bands and near_text.rows, or neither")
        return lsh.optimal_bands(self.threshold, self.num_perm, self.fp_weight, self.fn_weight)


def row_text() -> F.Column:
    """All text parts of a row's messages, joined by newlines (computed in the JVM)."""
    texts = F.flatten(
        F.transform(
            F.coalesce(F.col("messages"), F.array()),
            lambda m: F.transform(F.filter(m["content"], lambda p: p["type"] == "text"), lambda p: p["text"]),
        )
    )
    return F.array_join(texts, "\n")


class _SignatureBatches:
    """mapInPandas function: (id, text) batches -> (id, sig, keys) with numpy signatures."""

    def __init__(self, cfg: NearTextDedupConfig):
        self.cfg = cfg
        self.bands, self.rows = cfg.band_shape()

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        perms = minhash.permutations(self.cfg.num_perm, self.cfg.seed, self.cfg.scheme)
        for batch in batches:
            hash_sets = [_shingle_hashes(t, self.cfg) for t in batch["text"]]
            has_text = np.fromiter((len(h) > 0 for h in hash_sets), dtype=bool, count=len(hash_sets))
            sigs = minhash.signatures([h for h, ok in zip(hash_sets, has_text) if ok], perms)
            keys = lsh.band_keys(sigs, self.bands, self.rows)
            yield pd.DataFrame(
                {"id": batch["id"][has_text].to_numpy(), "sig": [s.astype("<u4").tobytes() for s in sigs], "keys": list(keys)}
            )


class _ShingleSets:
    """mapInPandas function: (id, text) -> (id, sorted unique shingle hashes as bytes)."""

    def __init__(self, cfg: NearTextDedupConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            sets = [np.unique(_shingle_hashes(t, self.cfg)).astype("<u4").tobytes() for t in batch["text"]]
            yield pd.DataFrame({"id": batch["id"].to_numpy(), "shingles": sets})


_HASHER = minhash.TokenHasher()  # one per Python worker: its token cache lives across batches


def _shingle_hashes(text: str, cfg: NearTextDedupConfig) -> np.ndarray:
    """Hashes of a document's shingles (duplicates possible; MinHash and sets ignore them)."""
    if cfg.hash == "token":
        toks, is_chars = tokens(text, cfg.script, cfg.cjk_ratio)
        return _HASHER.shingle_hashes(toks, ngram_size(is_chars, cfg.word_ngram, cfg.char_ngram))
    if cfg.hash == "sha1":
        return minhash.shingle_hashes(shingles(text, cfg.word_ngram, cfg.char_ngram, cfg.script, cfg.cjk_ratio))
    raise ValueError(f"near_dedup.hash must be token or sha1; got {cfg.hash!r}")


SIGNATURE_SCHEMA = "id string, sig binary, keys array<long>"


def kept_texts(df: DataFrame) -> DataFrame:
    """(id, text) of the rows still kept."""
    return with_reject_column(df).where(is_kept()).select("id", row_text().alias("text"))


def text_signatures(df: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """Per kept row with text: id, sig (num_perm little-endian uint32), keys (one long per band)."""
    return kept_texts(df).mapInPandas(_SignatureBatches(cfg), SIGNATURE_SCHEMA)


def candidate_pairs(signatures: DataFrame, cfg: NearTextDedupConfig, texts: DataFrame | None = None) -> DataFrame:
    """(src, dst) pairs of rows that share a band key, confirmed by their Jaccard similarity.

    Exact confirmation re-shingles only the rows that are in some candidate pair (from `texts`,
    the (id, text) frame the signatures came from), so full shingle sets are never stored.
    """
    buckets = (
        signatures.select("id", F.posexplode("keys").alias("band", "key"))
        .groupBy("band", "key")
        .agg(F.array_sort(F.collect_set("id")).alias("ids"))
        .where(F.size("ids") > 1)
    )
    pairs = bucket_pairs(buckets, cfg.all_pairs_bucket).distinct()
    if cfg.verify == "none":
        return pairs
    if cfg.verify == "signature":
        sides = signatures.select("id", F.col("sig").alias("value"))
    elif cfg.verify == "exact":
        if texts is None:
            raise ValueError("exact confirmation needs the (id, text) frame of the signatures")
        pairs = checkpoint(pairs)
        members = pairs.select(F.col("src").alias("id")).unionByName(pairs.select(F.col("dst").alias("id"))).distinct()
        members = checkpoint(members)
        # Materialised once: both ends of the pairs read it (else the texts are scanned twice).
        sides = checkpoint(
            texts.join(small_side(members), "id")
            .mapInPandas(_ShingleSets(cfg), "id string, shingles binary")
            .select("id", F.col("shingles").alias("value"))
        )
    else:
        raise ValueError(f"near_dedup.verify must be exact, signature or none; got {cfg.verify!r}")
    side_a = sides.select(F.col("id").alias("src"), F.col("value").alias("a"))
    side_b = sides.select(F.col("id").alias("dst"), F.col("value").alias("b"))
    joined = pairs.join(side_a, "src").join(side_b, "dst").select("src", "dst", "a", "b")
    return joined.mapInPandas(_Confirm(cfg.verify, cfg.threshold), "src string, dst string")


class _Confirm:
    """mapInPandas function: keep the pairs whose Jaccard (exact on shingle hashes, or estimated
    from signatures) reaches the threshold."""

    def __init__(self, how: str, threshold: float):
        self.how, self.threshold = how, threshold

    def __call__(self, batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            if self.how == "exact":
                sims = [_exact_jaccard(a, b) for a, b in zip(batch["a"], batch["b"])]
            else:
                sims = [
                    float(np.mean(np.frombuffer(a, "<u4") == np.frombuffer(b, "<u4"))) for a, b in zip(batch["a"], batch["b"])
                ]
            keep = np.asarray(sims, dtype=float) >= self.threshold - 1e-12
            yield batch.loc[keep, ["src", "dst"]]


def _exact_jaccard(a: bytes, b: bytes) -> float:
    x, y = np.frombuffer(a, "<u4"), np.frombuffer(b, "<u4")
    inter = len(np.intersect1d(x, y, assume_unique=True))
    return inter / (len(x) + len(y) - inter)


def bucket_pairs(buckets: DataFrame, all_pairs_bucket: int) -> DataFrame:
    """Pairs from buckets of sorted ids: every pair in small buckets; in large ones the first id
    with each other and each id with the next, which connects the same rows in linear size."""
    small = buckets.where(F.size("ids") <= all_pairs_bucket)
    all_pairs = (
        small.select("ids", F.posexplode("ids").alias("i", "src"))
        .select("src", F.explode(F.slice("ids", F.col("i") + 2, F.lit(all_pairs_bucket))).alias("dst"))
    )
    large = buckets.where(F.size("ids") > all_pairs_bucket)
    star = large.select(F.col("ids")[0].alias("src"), F.explode(F.slice("ids", 2, 1 << 30)).alias("dst"))
    chain = large.select(
        F.explode(F.arrays_zip(F.slice("ids", 1, F.size("ids") - 1), F.slice("ids", 2, 1 << 30))).alias("p")
    ).select(F.col("p").getItem("0").alias("src"), F.col("p").getItem("1").alias("dst"))
    return all_pairs.unionByName(star).unionByName(chain)


def near_dedup_text(df: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """The step: rows whose text nearly duplicates a kept row's are rejected as `near_duplicate`.

    Runs Spark jobs now (signatures, candidates, components); the returned frame is lazy again.
    """
    df = with_reject_column(df)
    if not cfg.enabled:
        return df
    texts = kept_texts(df)
    clock = Progress(STEP)
    sigs = checkpoint(texts.mapInPandas(_SignatureBatches(cfg), SIGNATURE_SCHEMA))
    clock.note("signatures")
    # connected_components materialises the confirmed pairs first (its first checkpoint).
    components = connected_components(candidate_pairs(sigs, cfg, texts), cfg.max_rounds)
    clock.note(f"candidate pairs and connected components ({LAST_ROUNDS[0]} rounds)")
    return reject_duplicates(df, components, STEP, REASON, cfg.keep_by)
