"""Text near-duplicates: MinHash signatures, LSH candidate pairs, connected components.

    signatures and shingle-hash sets (mapInArrow, compiled loops over whole batches; the texts come
        through the DataFrame, or straight from the input shards when the job knows them)
    ->  (band, key) per row
    ->  rows sharing a band key  ->  candidate pairs  ->  confirmed where the exact Jaccard of
        their shingle-hash sets (default; or the signature agreement) reaches the threshold
    ->  connected components (per-partition contraction, then Spark rounds; opt-in union-find in the
        driver for small graphs)
    ->  one row kept per component, the others rejected with reason `near_duplicate` and the kept
        row's id as detail

The text of a row is every text part of its messages (captions, documents, questions and
answers), in order. Rows without text, and rows already rejected, are not compared.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from curation.dedup import lsh, minhash
from curation.dedup.components import PhaseClock, connected_components, reject_duplicates
from curation.dedup.shingles import token_spans
from curation.row_text import arrow_row_text, row_text
from curation.spark import checkpoint, small_side
from curation.steps import Step, StepContext, is_kept, with_reject_column

STEP = "near_dedup"
REASON = "near_duplicate"


@dataclass
class NearTextDedupConfig:
    enabled: bool = True
    threshold: float = 0.8  # Jaccard similarity at or above which two texts are duplicates
    num_perm: int = 128
    seed: int = 1
    scheme: Literal["affine32", "legacy"] = "affine32"  # datasketch >= 2.0 default; legacy: datasketch < 2.0
    # Shingle hash: "token" (fast; datasketch equal with hashfunc=minhash.shingle_hash32) or
    # "sha1" (datasketch's default hashfunc, ~5x slower).
    hash: Literal["token", "sha1"] = "token"
    word_ngram: int = 5
    char_ngram: int = 5
    script: Literal["auto", "words", "chars"] = "auto"  # auto: per row, CJK -> chars, else words
    cjk_ratio: float = 0.3  # share of CJK characters from which `auto` uses character n-grams
    bands: int = 0  # 0: chosen from the threshold (as datasketch); else given with rows
    rows: int = 0
    fp_weight: float = 0.5
    fn_weight: float = 0.5
    # Confirm candidates: "exact" Jaccard of the shingle-hash sets >= threshold (the default, as
    # Keye-VL confirms bucket mates; the signature frame then also holds every row's shingle
    # hashes, 4 bytes each, ~0.7x the text of word-shingled rows), "signature" (estimated from the
    # MinHash values) or "none".
    verify: Literal["exact", "signature", "none"] = "exact"
    all_pairs_bucket: int = 32  # buckets up to this size give all pairs, larger ones a star + chain
    # Tasks of the signature pass when it reads the shards itself (0: 4 per core; about one per
    # core would leave cores idle while the last large task runs).
    signature_tasks: int = 0
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
        self.perms = minhash.permutations(cfg.num_perm, cfg.seed, cfg.scheme)  # type: ignore[arg-type]

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            yield self.sign(batch)

    def sign(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The signature rows of one (id, text) batch."""
        perms = self.perms
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
        return pa.RecordBatch.from_pydict(columns)


class _FileSignatures(_SignatureBatches):
    """mapInArrow function over a frame of unit numbers: each unit is one row group of a Parquet
    shard, read here with pyarrow (id and messages only) and signed; the JVM never decodes a row."""

    BATCH_ROWS = 4096

    def __init__(self, cfg: NearTextDedupConfig, units: list[tuple[str, int]]):
        super().__init__(cfg)
        self.units = units

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for unit in batch.column(0).to_pylist():
                path, row_group = self.units[unit]
                rows = pq.ParquetFile(path).iter_batches(
                    self.BATCH_ROWS, row_groups=[row_group], columns=["id", "messages"], use_threads=False
                )
                for part in rows:  # a large row group is read in parts, never whole
                    text = arrow_row_text(part.column("messages"))
                    yield self.sign(pa.RecordBatch.from_arrays([part.column("id"), text], ["id", "text"]))


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


def file_signatures(spark: SparkSession, files: Sequence[str], cfg: NearTextDedupConfig) -> DataFrame:
    """`text_signatures` of every row of Parquet shards, read by the Python workers themselves.

    The JVM's part of the job is a range of row-group numbers: the rows' nested messages are not
    decoded into Spark rows and converted back to Arrow (~2x less work on the cores than reading
    the text through a DataFrame, and no cold start of the JVM's Parquet reader). Tasks get equal
    runs of row groups, in file order: `signature_tasks` tasks, else 4 a core (fewer would leave cores idle while the last ones run).
    """
    units = [(str(path), group) for path in files for group in range(pq.read_metadata(path).num_row_groups)]
    splits = cfg.signature_tasks or 4 * spark.sparkContext.defaultParallelism
    tasks = max(1, min(len(units), splits))
    numbers = spark.range(len(units), numPartitions=tasks)
    return numbers.mapInArrow(_FileSignatures(cfg, units), signature_schema(cfg))


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
            for a, b in pairs_of_bucket(sorted(set(ids[lo:hi])), self.all_pairs_bucket):
                src.append(a)
                dst.append(b)
        yield pa.RecordBatch.from_pydict({"src": pa.array(src, pa.string()), "dst": pa.array(dst, pa.string())})


def pairs_of_bucket(ids: list[str], all_pairs_bucket: int):
    """`bucket_pairs` for one bucket of sorted unique ids."""
    if len(ids) <= all_pairs_bucket:
        return ((a, b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    first = ids[0]
    return itertools.chain(((first, b) for b in ids[1:]), itertools.pairwise(ids))


def confirm_pairs(pairs: DataFrame, signatures: DataFrame, cfg: NearTextDedupConfig) -> DataFrame:
    """The candidate pairs whose Jaccard similarity reaches the threshold (`cfg.verify`).

    Each pair's two ends are joined to their rows' shingle hashes (or signatures): the pairs are
    few, so they are broadcast to the scan of the signature frame, which is never shuffled whole;
    then one shuffle by pair brings its two ends together. `pairs` (src < dst, each pair once) is
    read twice: pass a materialised (checkpointed) frame.
    """
    if cfg.verify == "none":
        return pairs
    if cfg.verify not in ("exact", "signature"):
        raise ValueError(f"near_dedup.verify must be exact, signature or none; got {cfg.verify!r}")
    value = "shingles" if cfg.verify == "exact" else "sig"
    ends = pairs.select("src", "dst", F.col("src").alias("id"), F.lit(0).alias("side")).unionByName(
        pairs.select("src", "dst", F.col("dst").alias("id"), F.lit(1).alias("side"))
    )
    joined = signatures.select("id", F.col(value).alias("v")).join(small_side(ends), "id")
    by_pair = joined.select("src", "dst", "side", "v").repartition("src", "dst")
    return by_pair.mapInArrow(_Confirm(cfg.verify, cfg.threshold), "src string, dst string")


class _Confirm:
    """mapInArrow function over whole pairs (both ends of a pair in one partition): keep the pairs
    whose Jaccard (exact on shingle hashes, or estimated from signatures) reaches the threshold;
    vectorised over the partition."""

    def __init__(self, how: str, threshold: float):
        self.how, self.threshold = how, threshold

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = list(batches)  # a pair's two ends may sit in different batches
        if not batches:
            return
        table = pa.Table.from_batches(batches).combine_chunks()
        table = table.take(pc.sort_indices(table, [("src", "ascending"), ("dst", "ascending"), ("side", "ascending")]))
        table = table.filter(_first_of_runs(table, ["src", "dst", "side"]))  # an id twice: rows of equal content
        side = table.column("side").to_numpy()
        if len(side) % 2 or side[0::2].any() or not side[1::2].all():
            raise RuntimeError("a candidate pair without both of its ends in the signature frame")
        src_end, dst_end = table.take(np.arange(0, len(side), 2)), table.take(np.arange(1, len(side), 2))
        a, b = _values(src_end.column("v").combine_chunks()), _values(dst_end.column("v").combine_chunks())
        sims = exact_jaccard(a, b) if self.how == "exact" else _signature_agreement(a, b)
        keep = pa.array(sims >= self.threshold - 1e-12)
        src, dst = src_end.column("src").filter(keep), src_end.column("dst").filter(keep)
        yield pa.RecordBatch.from_arrays([src.combine_chunks(), dst.combine_chunks()], ["src", "dst"])


def _first_of_runs(table: pa.Table, columns: list[str]) -> pa.Array:
    """True for each row of a sorted table whose `columns` differ from the previous row's."""
    first = np.ones(table.num_rows, dtype=bool)
    if table.num_rows > 1:
        same = np.ones(table.num_rows - 1, dtype=bool)
        for name in columns:
            column = table.column(name)
            same &= pc.equal(column.slice(1), column.slice(0, table.num_rows - 1)).to_numpy(zero_copy_only=False)
        first[1:] = ~same
    return pa.array(first)


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
    `_values` gives them; values per row) for every row at once (a compiled loop: per row a sort
    of a few hundred values, ~20x faster than sorting (row, value) keys of all rows together)."""
    from curation.dedup import kernels

    (va, na), (vb, nb) = a, b
    offsets_a, offsets_b = (np.concatenate([[0], np.cumsum(n, dtype=np.int64)]) for n in (na, nb))
    return kernels.pair_jaccard(
        np.ascontiguousarray(va, dtype=np.uint32), offsets_a, np.ascontiguousarray(vb, dtype=np.uint32), offsets_b
    )


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


class NearDedup(Step):
    """The step: rows whose text nearly duplicates a kept row's are rejected as `near_duplicate`.

    When the runner says the frame's rows sit unchanged in Parquet files (`context.base_files`),
    the signatures read the texts from those files in the Python workers (`file_signatures`)
    instead of through the JVM, and keep the rows whose id a kept row has: the same result with
    less work, since ids are content hashes and rows that share an id share their text.
    Runs Spark jobs now (signatures, candidates, components); the returned frame is lazy again.
    Stats: rows signed, candidate and confirmed pairs, components, their sizes, phase seconds.
    """

    name = STEP
    requires = ("numba",)

    def __call__(self, df: DataFrame) -> DataFrame:
        cfg, files = self.config, self.context.base_files
        df = with_reject_column(df)
        clock = PhaseClock(self.stats)
        if not files:
            sigs = checkpoint(text_signatures(df, cfg))
        else:  # rows a step before rejected are not compared
            kept_ids = checkpoint(df.where(is_kept()).select("id"))
            sigs = checkpoint(file_signatures(df.sparkSession, files, cfg).join(small_side(kept_ids, row_bytes=48), "id", "left_semi"))
        self.stats["signed_rows"] = sigs.count()
        clock.note("signatures")
        pairs = checkpoint(band_pairs(sigs, cfg))
        self.stats["candidate_pairs"] = pairs.count()
        clock.note("candidate pairs")
        confirmed = checkpoint(confirm_pairs(pairs, sigs, cfg))
        self.stats["confirmed_pairs"] = confirmed.count()
        clock.note(f"confirmed pairs ({cfg.verify})")
        components = connected_components(confirmed, cfg.max_rounds, cfg.driver_components_max_edges, self.stats)
        clock.note("connected components")
        marked = reject_duplicates(df, components, STEP, REASON, cfg.keep_by, self.stats)
        clock.note("duplicates chosen")
        return marked


def near_dedup_text(df: DataFrame, cfg: NearTextDedupConfig, source_files: Sequence[str] = ()) -> DataFrame:
    """The step as a function: `NearDedup(cfg)(df)`, reading texts from `source_files` when the
    frame's rows are those files' rows, unchanged (marks aside)."""
    step = NearDedup(cfg)
    if not step.enabled:
        return with_reject_column(df)
    step.context = StepContext(base_files=source_files)
    return step(df)
