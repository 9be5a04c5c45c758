"""Text near-duplicates: MinHash signatures, LSH candidate pairs, connected components.

    signatures and shingle-hash sets (mapInArrow, numpy over whole batches)  ->  (band, key) per row
    ->  rows sharing a band key  ->  candidate pairs  ->  confirmed where the exact Jaccard of
        their shingle-hash sets (default; or the signature agreement) reaches the threshold
    ->  connected components (Spark rounds; opt-in union-find in the driver for small graphs)
    ->  one row kept per component, the others rejected with reason `near_duplicate` and the kept
        row's id as detail

The text of a row is every text part of its messages (captions, documents, questions and
answers), in order. Rows without text, and rows already rejected, are not compared.
"""

from __future__ import annotations

import itertools
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
    connected_components,
    reject_duplicates,
)
from curation.dedup.shingles import token_spans
from curation.spark import checkpoint, small_side
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
    # Keye-VL confirms bucket mates; the signature frame then also holds every row's shingle
    # hashes, 4 bytes each, ~0.7x the text of word-shingled rows), "signature" (estimated from the
    # MinHash values) or "none".
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
    """mapInArrow function: (id, text) batches -> (id, keys[, sig | shingles]) of the rows with text.

    Arrow in and out (no pandas), and one numpy pass per ~0.5 MB of text. For exact confirmation
    the row's shingle hashes come along (computed here anyway; unsorted, sorting every row's would
    cost more than the signature), so confirming candidates never reads and shingles texts again.
    """

    def __init__(self, cfg: NearTextDedupConfig):
        self.cfg = cfg
        self.bands, self.rows = cfg.band_shape()

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        perms = minhash.permutations(self.cfg.num_perm, self.cfg.seed, self.cfg.scheme)  # type: ignore[arg-type]
        for batch in batches:
            has_text, sigs, sets = [], [], []
            for chunk in _chunks(batch):
                hashes, per_doc = shingle_hashes(chunk.column("text").to_pylist(), self.cfg)
                has_text.append(per_doc > 0)
                sigs.append(minhash.flat_signatures(hashes, per_doc[per_doc > 0], perms))
                if self.cfg.verify == "exact":
                    sets.append((hashes.astype("<u4", copy=False), per_doc[per_doc > 0]))
            keep = np.concatenate(has_text) if has_text else np.zeros(0, dtype=bool)
            sig = np.concatenate(sigs) if sigs else np.zeros((0, perms.num_perm), dtype=np.uint32)
            columns = {"id": batch.column("id").filter(pa.array(keep))}
            if self.cfg.verify == "signature":
                columns["sig"] = _binary(sig.astype("<u4").ravel(), np.full(len(sig), 4 * sig.shape[1]))
            elif self.cfg.verify == "exact":
                values = [v for v, _ in sets] or [np.zeros(0, "<u4")]
                counts = [c for _, c in sets] or [np.zeros(0, np.int64)]
                columns["shingles"] = _binary(np.concatenate(values), 4 * np.concatenate(counts))
            columns["keys"] = _long_lists(lsh.band_keys(sig, self.bands, self.rows))
            yield pa.RecordBatch.from_pydict(columns)


def signature_schema(cfg: NearTextDedupConfig) -> str:
    """The signature frame's columns: besides the band keys, what candidates are confirmed by."""
    extra = {"signature": "sig binary, ", "exact": "shingles binary, "}.get(cfg.verify, "")
    return f"id string, {extra}keys array<long>"


def kept_texts(df: DataFrame) -> DataFrame:
    """(id, text) of the rows still kept."""
    return with_reject_column(df).where(is_kept()).select("id", row_text().alias("text"))


def text_signatures(df: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """Per kept row with text: id, keys (one long per band), and what confirms candidates
    (`cfg.verify`): shingles (every shingle hash of the row in text order, repeats included,
    little-endian uint32) for "exact", sig (num_perm little-endian uint32) for "signature"."""
    return kept_texts(df).mapInArrow(_SignatureBatches(cfg), signature_schema(cfg))


def candidate_pairs(signatures: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """(src, dst) pairs of rows that share a band key, confirmed by their Jaccard similarity."""
    return confirm_pairs(checkpoint(band_pairs(signatures, cfg)), signatures, cfg)


def band_pairs(signatures: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """(src, dst) pairs of rows that share a band key (unconfirmed), src < dst, each pair once.

    One shuffle brings each (band, key) bucket into one partition, where numpy sorts the keys
    and pairs the members of the few shared buckets (`bucket_pairs`' rule); a second, small one
    removes pairs found in several bands.
    """
    keyed = signatures.select("id", F.posexplode("keys").alias("band", "key"))
    buckets = keyed.repartition("band", "key")
    pairs = buckets.mapInArrow(_BucketPairs(cfg.all_pairs_bucket), "src string, dst string")
    return pairs.distinct()


class _BucketPairs:
    """mapInArrow function over whole (band, key) buckets: the pairs `bucket_pairs` would give.

    A task holds its partition's (id, band, key) rows at once (~60 bytes each: documents x bands /
    spark.sql.shuffle.partitions rows), so large corpora want enough shuffle partitions.
    """

    def __init__(self, all_pairs_bucket: int):
        self.all_pairs_bucket = all_pairs_bucket

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)  # a bucket may span batches: the partition is read whole
        if not batches:
            return
        table = pa.Table.from_batches(batches)
        band = table.column("band").to_numpy()
        key = table.column("key").to_numpy()
        order = np.lexsort((key, band))
        band, key = band[order], key[order]
        same = (band[1:] == band[:-1]) & (key[1:] == key[:-1])  # sorted row i + 1 in row i's bucket
        shared = np.zeros(len(order), dtype=bool)  # in a bucket of two or more rows
        shared[1:] |= same
        shared[:-1] |= same
        run_start = np.flatnonzero(np.concatenate([[True], ~same])[shared])
        ids = table.column("id").take(pa.array(order[shared])).to_pylist()
        src: list[str] = []
        dst: list[str] = []
        for lo, hi in zip(run_start.tolist(), [*run_start[1:].tolist(), len(ids)]):
            for a, b in _pairs(sorted(set(ids[lo:hi])), self.all_pairs_bucket):
                src.append(a)
                dst.append(b)
        yield pa.RecordBatch.from_pydict({"src": pa.array(src, pa.string()), "dst": pa.array(dst, pa.string())})


def _pairs(ids: list[str], all_pairs_bucket: int):
    """`bucket_pairs` for one bucket of sorted unique ids."""
    if len(ids) <= all_pairs_bucket:
        return ((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    first = ids[0]
    return itertools.chain(((first, b) for b in ids[1:]), itertools.pairwise(ids))


def confirm_pairs(pairs: DataFrame, signatures: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """The candidate pairs whose Jaccard similarity reaches the threshold (`cfg.verify`).

    `pairs` is read twice: pass a materialised (checkpointed) frame.
    """
    if cfg.verify == "none":
        return pairs
    if cfg.verify not in ("exact", "signature"):
        raise ValueError(f"near_dedup.verify must be exact, signature or none; got {cfg.verify!r}")
    value = "shingles" if cfg.verify == "exact" else "sig"
    members = pairs.select(F.col("src").alias("id")).unionByName(pairs.select(F.col("dst").alias("id"))).distinct()
    # Only the rows in some pair: the join then moves their sets, not every row's.
    sides = signatures.join(small_side(checkpoint(members)), "id", "left_semi").select("id", F.col(value).alias("v"))
    side_a = sides.select(F.col("id").alias("src"), F.col("v").alias("a"))
    side_b = sides.select(F.col("id").alias("dst"), F.col("v").alias("b"))
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
    """Jaccard of row i's sets in `a` and `b` (values one row after the other, with repeats, as
    `_values` gives them; values per row) for every row at once: (row, value) keys made unique
    per side, then a key of both sides appears twice among the sorted keys of the two."""
    keys_a, keys_b = _unique_row_keys(*a), _unique_row_keys(*b)
    rows = len(a[1])
    both = np.concatenate([keys_a, keys_b])
    both.sort()
    twice = both[1:][both[1:] == both[:-1]]
    inter = _per_row(twice, rows)
    union = _per_row(keys_a, rows) + _per_row(keys_b, rows) - inter
    return np.divide(inter, union, out=np.zeros(rows), where=union > 0)


def _unique_row_keys(values: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    """Sorted unique (row << 32 | value) keys."""
    row = np.repeat(np.arange(len(per_row), dtype=np.uint64), per_row)
    keys = (row << np.uint64(32)) | values.astype(np.uint64)
    # sort + mask, not np.unique: numpy 2.3's unique is ~100x slower than its (SIMD) sort here.
    keys.sort()
    first = np.ones(len(keys), dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    return keys[first]


def _per_row(keys: np.ndarray, rows: int) -> np.ndarray:
    """How many of the sorted (row << 32 | value) keys each row has (a search per row boundary is
    ~10x faster than np.bincount over every key)."""
    bounds = np.arange(rows + 1, dtype=np.uint64) << np.uint64(32)
    return np.diff(np.searchsorted(keys, bounds))


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
    confirmed = checkpoint(confirm_pairs(pairs, sigs, cfg))
    clock.note(f"confirmed pairs ({cfg.verify})")
    components = connected_components(confirmed, cfg.max_rounds, cfg.driver_components_max_edges)
    clock.note(f"connected components ({LAST_ROUNDS[0]} rounds; 0: solved in the driver)")
    marked = reject_duplicates(df, components, STEP, REASON, cfg.keep_by)
    clock.note("duplicates chosen")
    return marked
