"""Text near-duplicates: MinHash signatures, LSH candidate pairs, connected components.

    signatures (mapInArrow, numpy over whole batches)  ->  (band, key) per row
    ->  rows sharing a band key  ->  candidate pairs  ->  confirmed where the exact Jaccard of
        their shingle-hash sets (default; or the signature agreement) reaches the threshold
    ->  connected components (Spark rounds; opt-in union-find in the driver for small graphs)
    ->  one row kept per component, the others rejected with reason `near_duplicate` and the kept
        row's id as detail

The text of a row is every text part of its messages (captions, documents, questions and
answers), in order. Rows without text, and rows already rejected, are not compared.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
from curation.dedup.shingles import token_spans
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
    # > 0: a duplicate graph of at most this many edges is solved by union-find in the driver
    # (faster on small corpora, costs driver memory); 0: always the distributed rounds
    driver_components_max_edges: int = 0

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


def shingle_hashes(texts: Sequence[str | None], cfg: NearTextDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(every shingle hash of the documents, in document order; shingles per document)."""
    spans = token_spans(texts, cfg.word_ngram, cfg.char_ngram, cfg.script, cfg.cjk_ratio)  # type: ignore[arg-type]
    return minhash.batch_shingle_hashes(spans, cfg.hash)


CHUNK_TEXT_BYTES = 512 << 10  # text per numpy pass: its temporaries (~10x the text) stay in cache


def _chunks(batch: pa.RecordBatch, max_bytes: int = CHUNK_TEXT_BYTES) -> Iterator[pa.RecordBatch]:
    """Zero-copy slices of an Arrow batch holding about `max_bytes` of text each."""
    sizes = pc.fill_null(pc.binary_length(batch.column("text")), 0).to_numpy(zero_copy_only=False)
    ends = np.cumsum(sizes)
    start = 0
    while start < batch.num_rows:
        done = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, done + max_bytes, side="right")))
        yield batch.slice(start, stop - start)
        start = stop


def _binary(values: np.ndarray, lengths: np.ndarray) -> pa.Array:
    """An Arrow binary array from concatenated bytes and per-row lengths (no Python per row)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), len(lengths), [None, pa.py_buffer(offsets), pa.py_buffer(values)])


def _long_lists(values: np.ndarray) -> pa.Array:
    """Rows of a 2-D int64 array as an Arrow list<int64> column."""
    rows, width = values.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.ravel()))


class _SignatureBatches:
    """mapInArrow function: (id, text) batches -> (id, keys[, sig]) of the rows with text.

    Arrow in and out (no pandas), and one numpy pass per ~0.5 MB of text.
    """

    def __init__(self, cfg: NearTextDedupConfig):
        self.cfg = cfg
        self.bands, self.rows = cfg.band_shape()
        self.with_sig = cfg.verify == "signature"

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        perms = minhash.permutations(self.cfg.num_perm, self.cfg.seed, self.cfg.scheme)  # type: ignore[arg-type]
        for batch in batches:
            has_text, sigs = [], []
            for chunk in _chunks(batch):
                hashes, per_doc = shingle_hashes(chunk.column("text").to_pylist(), self.cfg)
                has_text.append(per_doc > 0)
                sigs.append(minhash.flat_signatures(hashes, per_doc[per_doc > 0], perms))
            keep = np.concatenate(has_text) if has_text else np.zeros(0, dtype=bool)
            sig = np.concatenate(sigs) if sigs else np.zeros((0, perms.num_perm), dtype=np.uint32)
            columns = {"id": batch.column("id").filter(pa.array(keep))}
            if self.with_sig:
                columns["sig"] = _binary(sig.astype("<u4").ravel(), np.full(len(sig), 4 * sig.shape[1]))
            columns["keys"] = _long_lists(lsh.band_keys(sig, self.bands, self.rows))
            yield pa.RecordBatch.from_pydict(columns)


class _ShingleSets:
    """mapInArrow function: (id, text) -> (id, sorted unique shingle hashes as little-endian bytes)."""

    def __init__(self, cfg: NearTextDedupConfig):
        self.cfg = cfg

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            values, counts = [], []
            for chunk in _chunks(batch):
                hashes, per_doc = shingle_hashes(chunk.column("text").to_pylist(), self.cfg)
                # One sort for the whole chunk: (document, hash) keys, unique, split by document.
                doc = np.repeat(np.arange(len(per_doc), dtype=np.uint64), per_doc)
                keys = np.unique((doc << np.uint64(32)) | hashes.astype(np.uint64))
                counts.append(np.bincount((keys >> np.uint64(32)).astype(np.int64), minlength=len(per_doc)))
                values.append((keys & np.uint64(0xFFFFFFFF)).astype("<u4"))
            sets = _binary(
                np.concatenate(values or [np.zeros(0, "<u4")]), 4 * np.concatenate(counts or [np.zeros(0, np.int64)])
            )
            yield pa.RecordBatch.from_pydict({"id": batch.column("id"), "shingles": sets})


def signature_schema(cfg: NearTextDedupConfig) -> str:
    """The signature frame's columns; the full signature only when candidates are confirmed by it."""
    return "id string, sig binary, keys array<long>" if cfg.verify == "signature" else "id string, keys array<long>"


def kept_texts(df: DataFrame) -> DataFrame:
    """(id, text) of the rows still kept."""
    return with_reject_column(df).where(is_kept()).select("id", row_text().alias("text"))


def text_signatures(df: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """Per kept row with text: id, keys (one long per band), and sig (num_perm little-endian
    uint32) when `cfg.verify` is "signature"."""
    return kept_texts(df).mapInArrow(_SignatureBatches(cfg), signature_schema(cfg))


def candidate_pairs(signatures: DataFrame, cfg: NearTextDedupConfig, rows: DataFrame | None = None) -> DataFrame:
    """(src, dst) pairs of rows that share a band key, confirmed by their Jaccard similarity."""
    return confirm_pairs(band_pairs(signatures, cfg), signatures, cfg, rows)


def band_pairs(signatures: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """(src, dst) pairs of rows that share a band key (unconfirmed), src < dst, each pair once."""
    keyed = signatures.select("id", F.posexplode("keys").alias("band", "key"))
    # Nearly every band key is unique: find the shared ones from (band, key) alone and broadcast
    # them, so that only their rows' ids are collected (2-3x faster than grouping every row's id).
    shared = checkpoint(keyed.groupBy("band", "key").count().where(F.col("count") > 1).drop("count"))
    buckets = checkpoint(  # read three times by bucket_pairs
        keyed.join(small_side(shared), ["band", "key"], "left_semi")
        .groupBy("band", "key")
        .agg(F.array_sort(F.collect_set("id")).alias("ids"))
        .where(F.size("ids") > 1)
    )
    return bucket_pairs(buckets, cfg.all_pairs_bucket).distinct()


def confirm_pairs(
    pairs: DataFrame, signatures: DataFrame, cfg: NearTextDedupConfig, rows: DataFrame | None = None
) -> DataFrame:
    """The candidate pairs whose Jaccard similarity reaches the threshold (`cfg.verify`).

    Exact confirmation re-shingles only the rows that are in some candidate pair (from `rows`,
    the frame the signatures came from), so full shingle sets are never stored.
    """
    if cfg.verify == "none":
        return pairs
    if cfg.verify == "signature":
        sides = signatures.select("id", F.col("sig").alias("value"))
    elif cfg.verify == "exact":
        if rows is None:
            raise ValueError("exact confirmation needs the rows the signatures came from")
        pairs = checkpoint(pairs)
        members = pairs.select(F.col("src").alias("id")).unionByName(pairs.select(F.col("dst").alias("id"))).distinct()
        # Rows first, texts of the members only: Spark does not push the semi join below the text
        # expression (lambdas), which would otherwise be evaluated for every row.
        # Materialised once: both ends of the pairs read it (else the texts are scanned twice).
        sides = checkpoint(
            kept_texts(rows.join(small_side(checkpoint(members)), "id", "left_semi"))
            .mapInArrow(_ShingleSets(cfg), "id string, shingles binary")
            .select("id", F.col("shingles").alias("value"))
        )
    else:
        raise ValueError(f"near_dedup.verify must be exact, signature or none; got {cfg.verify!r}")
    side_a = sides.select(F.col("id").alias("src"), F.col("value").alias("a"))
    side_b = sides.select(F.col("id").alias("dst"), F.col("value").alias("b"))
    joined = pairs.join(side_a, "src").join(side_b, "dst").select("src", "dst", "a", "b")
    return joined.mapInArrow(_Confirm(cfg.verify, cfg.threshold), "src string, dst string")


class _Confirm:
    """mapInArrow function: keep the pairs whose Jaccard (exact on shingle hashes, or estimated
    from signatures) reaches the threshold; vectorised over the batch."""

    def __init__(self, how: str, threshold: float):
        self.how, self.threshold = how, threshold

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            a, b = (_values(batch.column(c)) for c in ("a", "b"))
            sims = exact_jaccard(a, b) if self.how == "exact" else _signature_agreement(a, b)
            keep = sims >= self.threshold - 1e-12
            yield pa.RecordBatch.from_pydict(
                {"src": batch.column("src").filter(keep), "dst": batch.column("dst").filter(keep)}
            )


def _values(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(all uint32 values of a binary column of little-endian uint32 lists, values per row)."""
    offsets_type = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offsets_type)[column.offset : column.offset + len(column) + 1]
    data = (
        np.frombuffer(buffers[2], dtype="<u4", count=int(offsets[-1]) // 4)
        if buffers[2] is not None
        else np.zeros(0, "<u4")
    )
    return data[offsets[0] // 4 : offsets[-1] // 4].astype(np.uint32), np.diff(offsets) // 4


def exact_jaccard(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Jaccard of row i's sets in `a` and `b` (sorted unique values, as `_values` gives them) for
    every row at once: a value of both sides appears twice among the sorted (row, value) keys."""
    (va, na), (vb, nb) = a, b
    rows = np.arange(len(na), dtype=np.uint64)
    keys = np.concatenate(
        [
            (np.repeat(rows, na) << np.uint64(32)) | va.astype(np.uint64),
            (np.repeat(rows, nb) << np.uint64(32)) | vb.astype(np.uint64),
        ]
    )
    keys.sort()
    twice = keys[1:][keys[1:] == keys[:-1]]
    inter = np.bincount((twice >> np.uint64(32)).astype(np.int64), minlength=len(na))
    union = na + nb - inter
    return np.divide(inter, union, out=np.zeros(len(na)), where=union > 0)


def _signature_agreement(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    (va, na), (vb, _) = a, b
    if not len(na):
        return np.zeros(0)
    return minhash.estimated_jaccard(va.reshape(len(na), -1), vb.reshape(len(na), -1))


def bucket_pairs(buckets: DataFrame, all_pairs_bucket: int) -> DataFrame:
    """Pairs from buckets of sorted ids: every pair in small buckets; in large ones the first id
    with each other and each id with the next, which connects the same rows in linear size."""
    small = buckets.where(F.size("ids") <= all_pairs_bucket)
    all_pairs = small.select("ids", F.posexplode("ids").alias("i", "src")).select(
        "src", F.explode(F.slice("ids", F.col("i") + 2, F.lit(all_pairs_bucket))).alias("dst")
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
    sigs = checkpoint(texts.mapInArrow(_SignatureBatches(cfg), signature_schema(cfg)))
    clock.note("signatures")
    pairs = checkpoint(band_pairs(sigs, cfg))
    clock.note("candidate pairs")
    confirmed = checkpoint(confirm_pairs(pairs, sigs, cfg, df))
    clock.note(f"confirmed pairs ({cfg.verify})")
    components = connected_components(confirmed, cfg.max_rounds, cfg.driver_components_max_edges)
    clock.note(f"connected components ({LAST_ROUNDS[0]} rounds; 0: solved in the driver)")
    marked = reject_duplicates(df, components, STEP, REASON, cfg.keep_by)
    clock.note("duplicates chosen")
    return marked
