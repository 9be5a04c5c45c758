"""Text near-duplicates: datasketch-compatible signatures, LSH bands, recall/precision against exact
Jaccard, connected components against union-find, determinism across partitionings."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param
from pyspark.sql import functions as F

from curation import schema
from curation.dedup import lsh, minhash
from curation.dedup.components import connected_components
from curation.dedup.near_text import (
    REASON,
    STEP,
    NearTextDedupConfig,
    band_pairs,
    confirm_pairs,
    exact_jaccard,
    file_signatures,
    near_dedup_text,
    shingle_hashes,
    text_signatures,
)
from curation.dedup.shingles import is_cjk, jaccard, shingles, token_spans, tokens
from curation.spark import checkpoint
from curation.workdir import with_row_key
from curation.steps import reject_where, with_reject_column
from tests.curation.dedup_fixtures import (
    UnionFind,
    encode,
    natural_image,
    planted_corpus,
    text_rows,
    write_rows,
)

THRESHOLD = 0.7


# --- no Spark -----------------------------------------------------------------------------------


EDGE_TEXTS = [
    "",
    None,
    "   \n\t ",
    "short text",
    "one",
    "a b c d e",  # exactly one n-gram
    "a b c d e f",
    "same same same same same same same same same",  # one shingle, many times
    "一二",
    "Mixed 中文 and English, with punctuation!",
    "THE  quick ＢＲＯＷＮ fox___ jumps over the lazy dog 42 times; x_y z9",
    "Ünïcödé wörds, Straße and ﬁne ligatures İstanbul",
    "日本語のテキストです。これはテストです。한국어 문장도 있습니다.",
    "x" * 3000 + " " + "y " * 10,  # a token longer than most
]


def _planted_texts():
    texts = planted_corpus(3, "en", n_bases=4, n_singles=4)[:8] + planted_corpus(4, "zh", n_bases=3, n_singles=3)[:6]
    return texts + EDGE_TEXTS


@pytest.mark.parametrize("hash_name", ["token", "sha1"])
@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("seed", [1, 42])
def test_signatures_equal_datasketch_hashvalues(hash_name, scheme, seed):
    texts = _planted_texts()
    cfg = NearTextDedupConfig(seed=seed, scheme=scheme, hash=hash_name)
    # The production path: the batch functions the Spark step calls, over the whole list at once.
    hashes, per_doc = shingle_hashes(texts, cfg)
    ours = minhash.flat_signatures(hashes, per_doc, minhash.permutations(128, seed, scheme))
    hashfunc = {"token": minhash.shingle_hash32, "sha1": None}[hash_name]
    for text, sig in zip(texts, ours):
        theirs = MinHash(num_perm=128, seed=seed, scheme=scheme, hashfunc=hashfunc)
        theirs.update_batch([x.encode("utf-8") for x in shingles(text)])
        assert np.array_equal(theirs.hashvalues.astype(np.uint64), sig.astype(np.uint64)), (text or "")[:30]


def test_batch_tokens_equal_per_document_tokens():
    rng = random.Random(7)
    alphabet = "abcXYZ09_ ,.;!?-\n\té中文ßİ\u0307ｆｕｌｌ한"
    texts = _planted_texts() + ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80))) for _ in range(300)]
    for script in ("auto", "words", "chars"):
        spans = token_spans(texts, word_ngram=5, char_ngram=3, script=script)
        ends = np.cumsum(spans.counts)
        for d, text in enumerate(texts):
            toks, is_chars = tokens(text, script)
            assert [spans.token_bytes(i).decode() for i in range(ends[d] - spans.counts[d], ends[d])] == toks, (
                script,
                text,
            )
            assert spans.ngram[d] == (3 if is_chars else 5)


def test_vectorised_token_hash_equals_the_scalar_definition():
    rng = np.random.default_rng(3)
    lengths = np.concatenate([rng.integers(1, 12, 5000), [1, 2, 255, 70_000, (1 << 20) + 7]])
    data = rng.integers(1, 256, int(lengths.sum() + len(lengths)), dtype=np.uint8)
    starts = np.cumsum(lengths + 1) - lengths - 1  # one separator byte between tokens
    hashes = minhash.token_hashes(data, starts, starts + lengths)
    for i in list(range(0, 5000, 37)) + list(range(5000, len(lengths))):
        assert hashes[i] == minhash.token_hash32(data[starts[i] : starts[i] + lengths[i]].tobytes())
    assert len(set(hashes[:5000].tolist())) > 4000  # distinct tokens get (mostly) distinct hashes


def test_token_hash_of_a_shingle_is_a_function_of_its_text_alone():
    text = "a b c d e f g"
    hashes, per_doc = shingle_hashes([text, "only two"], NearTextDedupConfig())
    toks = text.split()
    from_text = [minhash.shingle_hash32(" ".join(toks[i : i + 5]).encode()) for i in range(3)]
    assert per_doc.tolist() == [3, 1]
    assert hashes[:3].tolist() == from_text and len(set(from_text)) == 3
    assert hashes[3] == minhash.shingle_hash32(b"only two")


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_permutation_kernel_equals_datasketch_on_raw_hash_values(scheme):
    """Random 32-bit values, values at the ends of the range, repeats, one-value and empty
    documents in one batch (block boundaries inside a document: test_minhash_kernels)."""
    rng = np.random.default_rng(11)
    extremes = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1], dtype=np.uint32)
    docs = [rng.integers(0, 2**32, rng.integers(1, 400), dtype=np.uint32) for _ in range(60)]
    docs += [extremes, np.array([2**32 - 1], np.uint32), np.zeros(0, np.uint32), np.repeat(extremes[3:5], 50)]
    docs += [rng.integers(2**32 - 1000, 2**32, 300, dtype=np.uint64).astype(np.uint32)]
    perms = minhash.permutations(128, 5, scheme)
    flat, per_doc = np.concatenate(docs), np.array([len(d) for d in docs])
    ours = minhash.flat_signatures(flat, per_doc, perms)
    for values, sig in zip(docs, ours):
        theirs = MinHash(num_perm=128, seed=5, scheme=scheme, hashfunc=int)
        theirs.update_batch(values.tolist())
        assert np.array_equal(theirs.hashvalues.astype(np.uint64), sig.astype(np.uint64))


def test_batched_exact_jaccard_equals_set_jaccard():
    # Unsorted and with repeats, as a document's shingle hashes come (a repeated shingle counts once).
    rng = np.random.default_rng(2)
    sets = [rng.integers(0, 60, rng.integers(0, 40)).astype(np.uint32) for _ in range(200)]
    sets[0] = np.array([7, 7, 3, 7], dtype=np.uint32)
    sets[100] = np.array([3, 9, 9], dtype=np.uint32)  # {3, 7} vs {3, 9}: 1/3
    a, b = sets[:100], sets[100:]
    flat = [(np.concatenate(x), np.array([len(v) for v in x])) for x in (a, b)]
    expected = [jaccard(set(x.tolist()), set(y.tolist())) for x, y in zip(a, b)]
    assert expected[0] == pytest.approx(1 / 3)
    assert np.allclose(exact_jaccard(*flat), expected)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_optimal_bands_equal_datasketch_choice(threshold, num_perm):
    assert lsh.optimal_bands(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_band_keys_agree_exactly_where_band_values_agree():
    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=(200, 128), dtype=np.uint32)
    sigs[1, :13] = sigs[0, :13]  # rows 0 and 1 share band 0 only (13 rows per band)
    keys = lsh.band_keys(sigs, 9, 13)
    assert keys.shape == (200, 9) and keys.dtype == np.int64
    assert keys[0, 0] == keys[1, 0] and not np.any(keys[0, 1:] == keys[1, 1:])
    same = {(i, j) for b in range(9) for i, j in itertools.combinations(range(200), 2) if keys[i, b] == keys[j, b]}
    assert same == {(0, 1)}


def test_shingles_choose_words_or_characters_per_row():
    english = "The quick brown fox jumps over the lazy dog"
    assert not is_cjk(english)
    assert shingles(english, word_ngram=3) == {
        "the quick brown",
        "quick brown fox",
        "brown fox jumps",
        "fox jumps over",
        "jumps over the",
        "over the lazy",
        "the lazy dog",
    }
    chinese = "我们今天去公园散步，天气很好。"
    assert is_cjk(chinese)
    chars = "我们今天去公园散步天气很好"  # punctuation dropped
    assert shingles(chinese, char_ngram=3) == {" ".join(chars[i : i + 3]) for i in range(len(chars) - 2)}
    # Case, full-width forms and extra spaces do not make a different document.
    assert shingles("THE  quick ＢＲＯＷＮ fox jumps over the lazy dog", word_ngram=3) == shingles(
        english, word_ngram=3
    )
    assert shingles("") == set() and shingles("two words") == {"two words"}


# --- Spark --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # ~120 planted pairs per language: LSH misses single pairs at random (P(candidate | J = 0.8) is
    # 0.87 with 14 bands of 9 rows), so fewer pairs make the 0.95 recall bound a coin toss.
    texts = {"en": planted_corpus(11, "en", n_bases=100), "zh": planted_corpus(12, "zh", n_bases=100)}
    rows = {lang: text_rows(t) for lang, t in texts.items()}
    glob = write_rows(rows["en"] + rows["zh"], tmp_path_factory.mktemp("text_corpus"), n_files=3)
    return {"texts": texts, "rows": rows, "glob": glob}


@pytest.fixture(scope="module")
def truth(corpus):
    """Exact Jaccard of every pair within each language (pairs across languages share nothing)."""
    out = {}
    for lang in ("en", "zh"):
        ids = [r["id"] for r in corpus["rows"][lang]]
        sets = [shingles(t) for t in corpus["texts"][lang]]
        for i, j in itertools.combinations(range(len(ids)), 2):
            out[frozenset((ids[i], ids[j]))] = (lang, jaccard(sets[i], sets[j]))
    return out


@pytest.fixture(scope="module")
def pairs(spark, corpus):
    cfg = NearTextDedupConfig(threshold=THRESHOLD)
    df = spark.read.parquet(corpus["glob"])
    sigs = text_signatures(df, cfg).localCheckpoint()
    return {frozenset((r["src"], r["dst"])) for r in confirm_pairs(checkpoint(band_pairs(sigs, cfg)), sigs, cfg).collect()}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_recall_and_precision_against_exact_jaccard(pairs, truth, lang):
    similar = {p for p, (l, j) in truth.items() if l == lang and j >= THRESHOLD + 0.1}
    assert len(similar) >= 20, "the planted corpus must hold enough near-duplicates to measure"
    uf = UnionFind()
    for a, b in pairs:
        uf.union(*sorted((a, b)))
    found = sum(uf.find(min(p)) == uf.find(max(p)) for p in similar if all(x in uf.parent for x in p))
    assert found / len(similar) >= 0.95
    reported = [p for p in pairs if truth.get(p, ("?", 0.0))[0] == lang]
    assert reported
    precision = sum(truth[p][1] >= THRESHOLD for p in reported) / len(reported)
    assert precision >= 0.95


def test_kept_set_is_the_same_for_1_2_8_partitions_and_equals_union_find(spark, corpus, pairs):
    uf = UnionFind()
    all_ids = [r["id"] for rows in corpus["rows"].values() for r in rows]
    for i in all_ids:
        uf.find(i)
    for a, b in pairs:
        uf.union(a, b)
    expected_kept = {min(g) for g in uf.groups()}
    expected_detail = {i: min(g) for g in uf.groups() for i in g if i != min(g)}
    cfg = NearTextDedupConfig(threshold=THRESHOLD)
    previous = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        for n in (1, 2, 8):
            spark.conf.set("spark.sql.shuffle.partitions", str(n))
            df = spark.read.parquet(corpus["glob"]).repartition(n)
            out = near_dedup_text(df, cfg).select("id", "_reject").collect()
            kept = {r["id"] for r in out if r["_reject"] is None}
            rejected = {r["id"]: r["_reject"] for r in out if r["_reject"] is not None}
            assert len(out) == len(all_ids), "a step never drops rows"
            assert kept == expected_kept, f"{n} partitions"
            assert {i: v["detail"] for i, v in rejected.items()} == expected_detail
            assert {(v["step"], v["reason"]) for v in rejected.values()} == {(STEP, REASON)}
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", previous)


@pytest.mark.parametrize("verify", ["exact", "signature"])
def test_signatures_read_from_the_shards_equal_those_through_the_jvm(spark, tmp_path, verify):
    """`file_signatures` (pyarrow in the workers, row groups as tasks) gives the signature frame of
    `text_signatures` (text through a DataFrame): the same rows, keys and confirmation values."""
    texts = planted_corpus(41, "en", n_bases=8, n_singles=8) + planted_corpus(42, "zh", n_bases=4, n_singles=4)
    rows = text_rows(texts)
    picture = schema.image_entry(encode(natural_image(3)))
    rows += [
        schema.make_row(
            "t",
            "text",
            [
                schema.message("user", "a question, then", schema.image_part(0), "its end"),
                schema.message("assistant", texts[0]),
            ],
            [picture],
        ),
        schema.make_row("t", "caption", [schema.message("user", schema.image_part(0))], [picture]),  # no text
        schema.make_row("t", "text", [schema.message("user", "  ")]),  # text without a shingle
    ]
    table = schema.rows_to_table(rows)
    (tmp_path / "in").mkdir()
    files = []
    for i, part in enumerate((table.slice(0, 20), table.slice(20))):  # row groups of 7 rows: many units
        files.append(str(tmp_path / "in" / f"part-{i:05d}.parquet"))
        pq.write_table(part, files[-1], row_group_size=7)
    cfg = NearTextDedupConfig(threshold=THRESHOLD, verify=verify)
    value = "shingles" if verify == "exact" else "sig"

    def collected(frame):
        return sorted((r["id"], r["keys"], bytes(r[value])) for r in frame.collect())

    through_jvm = collected(text_signatures(spark.read.parquet(*files), cfg))
    assert len(through_jvm) == len(rows) - 2
    for tasks in (1, 5):
        split_cfg = NearTextDedupConfig(threshold=THRESHOLD, verify=verify, signature_tasks=tasks)
        assert collected(file_signatures(spark, files, split_cfg)) == through_jvm, tasks


def test_texts_from_the_shards_after_earlier_steps_give_the_same_marks(spark, tmp_path):
    """With rows marked by steps before (exact copies, a row refused outright), reading the texts
    from the shards compares exactly the rows the DataFrame path compares."""
    from curation.exact_dedup import ExactDedupConfig, exact_dedup

    texts = planted_corpus(43, "en", n_bases=10, n_singles=6)
    pair = text_rows([texts[0] + " with a few more words", texts[0] + " and other words at its end"])
    rows = text_rows(texts) + pair
    rows += [dict(rows[2]), dict(rows[3])]  # exact copies: one of each pair is rejected before
    write_rows(rows, tmp_path / "in", n_files=3)
    files = sorted(str(p) for p in (tmp_path / "in").glob("part-*.parquet"))
    df = exact_dedup(with_row_key(spark.read.parquet(*files), files), ExactDedupConfig())
    # Refused before: the row that would be kept among texts[0]'s copies. Were it compared, the
    # others would be rejected as its near-duplicates.
    refused = min([rows[0]["id"]] + [r["id"] for r in pair])
    df = reject_where(df, F.col("id") == refused, "earlier", "why")
    cfg = NearTextDedupConfig(threshold=THRESHOLD)

    def marks(frame):
        return sorted((r["id"], r["_reject"]["reason"] if r["_reject"] else "") for r in frame.collect())

    through_jvm = marks(near_dedup_text(df, cfg).select("id", "_reject"))
    from_files = marks(near_dedup_text(df, cfg, source_files=files).select("id", "_reject"))
    assert from_files == through_jvm
    reasons = [reason for _, reason in through_jvm]
    assert reasons.count("exact_duplicate") == 2 and reasons.count("why") == 1 and "near_duplicate" in reasons


def test_band_pairs_follow_the_bucket_rule_across_batches_and_partitions(spark):
    """Buckets are paired in Python per shuffle partition: the pairs must be those of the SQL
    `bucket_pairs` rule (all pairs up to all_pairs_bucket, star + chain above), also when a bucket
    spans several Arrow batches, a row repeats, or a pair shares several bands."""
    big = [f"b{i:03d}" for i in range(40)]  # > all_pairs_bucket: star from the first + chain
    small = ["s2", "s0", "s1"]  # all pairs
    rows = [(i, [7, 5000 + n, 1000 + n]) for n, i in enumerate(big)]
    rows += [(i, [900 + n, 9, 5]) for n, i in enumerate(small)]  # s0-s1-s2 share band 1 and band 2
    rows += [("s0", [900, 9, 5])]  # the same row twice (exact duplicate kept by an earlier step off)
    rows += [(f"u{n}", [2000 + n, 3000 + n, 4000 + n]) for n in range(50)]  # unique keys only
    frame = spark.createDataFrame(rows, "id string, keys array<long>")
    cfg = NearTextDedupConfig(all_pairs_bucket=32)
    expected = {(big[0], b) for b in big[1:]} | set(itertools.pairwise(big))
    expected |= {("s0", "s1"), ("s0", "s2"), ("s1", "s2")}
    previous = {
        k: spark.conf.get(k) for k in ("spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.shuffle.partitions")
    }
    try:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
        for partitions in ("1", "3"):
            spark.conf.set("spark.sql.shuffle.partitions", partitions)
            got = [(r["src"], r["dst"]) for r in band_pairs(frame, cfg).collect()]
            assert len(got) == len(set(got)), "each pair once"
            assert set(got) == expected, partitions
    finally:
        for key, value in previous.items():
            spark.conf.set(key, value)


def test_connected_components_equal_union_find_on_long_chains_and_stars(spark):
    rng = random.Random(5)
    nodes = [f"n{i:04d}" for i in range(600)]
    shuffled = nodes[:]
    rng.shuffle(shuffled)
    edges = [(shuffled[i], shuffled[i + 1]) for i in range(299)]  # a 300-node path in random id order
    edges += [(shuffled[300], shuffled[j]) for j in range(301, 340)]  # a star
    edges += [tuple(rng.sample(shuffled[340:], 2)) for _ in range(150)]  # random sparse graph
    edges += [(shuffled[599], shuffled[599])]  # a self loop only: a component of one node
    uf = UnionFind()
    for a, b in edges:
        uf.union(a, b)
    expected = {n: min(g) for g in uf.groups() for n in g if len(g) > 1}
    frame = spark.createDataFrame(edges, "src string, dst string").repartition(3)

    def check(local_max_edges: int = 0) -> int:
        stats: dict = {}
        result = connected_components(frame, local_max_edges=local_max_edges, stats=stats).collect()
        by_node = {r["node"]: r["component"] for r in result}
        assert len(by_node) == len(result), "one component per node"
        assert by_node == expected
        return stats["rounds"]

    assert check(local_max_edges=1_000_000) == 0  # opt-in: solved in the driver
    # Distributed: each shuffle partition contracts its edges (union-find), then star rounds join
    # the pieces. One partition holds the whole graph (no round needed); with several, the path and
    # the random graph are cut across partitions and only the rounds can finish them.
    keys = ("spark.sql.shuffle.partitions", "spark.sql.adaptive.coalescePartitions.enabled")
    previous = {k: spark.conf.get(k) for k in keys}
    try:
        spark.conf.set("spark.sql.adaptive.coalescePartitions.enabled", "false")
        rounds = {}
        for partitions in (1, 4, 8):
            spark.conf.set("spark.sql.shuffle.partitions", str(partitions))
            rounds[partitions] = check()
    finally:
        for key, value in previous.items():
            spark.conf.set(key, value)
    assert rounds[1] == 0 and rounds[4] >= 1 and rounds[8] >= 1, rounds


def test_keep_by_quality_column_and_rows_already_rejected_are_not_compared(spark):
    base = planted_corpus(21, "en", n_bases=1, n_singles=0)[0]
    rows = text_rows([base, base + " extra", base + " more words", "an unrelated document about nothing much"])
    for row, score in zip(rows, [0.1, 0.9, None, 0.5]):
        row["clip_score"] = score
    df = with_reject_column(
        spark.createDataFrame(
            [(r["id"], r["messages"], r["clip_score"]) for r in rows],
            "id string, messages array<struct<role string, content array<struct<type string, text string, index int>>>>, clip_score float",
        )
    )
    # The best-scored copy was refused by an earlier step: it must stay as it was and not be a keeper.
    df = reject_where(df, F.col("id") == rows[1]["id"], "earlier", "why")
    out = {
        r["id"]: r["_reject"]
        for r in near_dedup_text(df, NearTextDedupConfig(threshold=0.7, keep_by="clip_score")).collect()
    }
    assert out[rows[1]["id"]]["step"] == "earlier"
    assert out[rows[0]["id"]] is None  # 0.1 beats null
    assert out[rows[2]["id"]]["reason"] == REASON and out[rows[2]["id"]]["detail"] == rows[0]["id"]
    assert out[rows[3]["id"]] is None


def test_disabled_step_marks_nothing(spark, corpus):
    df = spark.read.parquet(corpus["glob"])
    out = near_dedup_text(df, NearTextDedupConfig(enabled=False))
    assert out.where("_reject is not null").count() == 0
