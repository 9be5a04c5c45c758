"""The numba kernels of the MinHash step against their plain-Python definitions and datasketch:
token spans, token hashes, shingle hashes and signatures, on ASCII and non-ASCII text and on the
edge cases of each loop (empty input, one token, spans at the end of the buffer, long tokens,
documents with more shingles than one signature block, permutation counts that are not a
multiple of the SIMD width)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from datasketch import MinHash

from curation.dedup import kernels, minhash
from curation.dedup.shingles import ngram_size, shingles, token_spans, tokens

WORDS = ["the", "a", "of", "x", "_", "quick", "42", "extraordinarily", "Straße", "naïve", "İstanbul", "ﬁne"]
WORDS += ["ＢＲＯＷＮ", "Ünïcödé", "x" * 8, "y" * 9, "z" * 16, "w" * 17, "v" * 40]
CJK = "中文日本語のテキストです한국어문장도있습니다"
PUNCT = [" ", "  ", "\n", "\t", ", ", "; ", "! ", "-", "... "]


def _random_texts(seed: int, count: int) -> list[str | None]:
    rng = random.Random(seed)
    texts: list[str | None] = ["", None, " \n\t ", "one", "two words", "a b c d", "a b c d e", "a b c d e f"]
    texts += ["一", "一二", "一二三四五", "一二三四五六七", "、。", "Ab" * 600]  # one long token
    for _ in range(count):
        kind = rng.random()
        if kind < 0.5:  # ASCII words
            words = [rng.choice(WORDS[:8]) for _ in range(rng.randint(0, 40))]
        elif kind < 0.8:  # accented / full-width / ligature words: NFKC and lower-casing
            words = [rng.choice(WORDS) for _ in range(rng.randint(0, 40))]
        else:  # CJK characters, with some spaces and punctuation
            words = ["".join(rng.choice(CJK) for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(0, 10))]
        texts.append("".join(w + rng.choice(PUNCT) for w in words))
    return texts


TEXTS = _random_texts(5, 300)


def _doc_tokens(spans, d: int) -> list[bytes]:
    first = int(spans.counts[:d].sum())
    return [spans.token_bytes(i) for i in range(first, first + int(spans.counts[d]))]


@pytest.mark.parametrize("script", ["auto", "words", "chars"])
def test_spans_equal_tokens_and_are_lower_cased(script):
    texts = TEXTS + ["A B C " * 400]
    spans = token_spans(texts, word_ngram=5, char_ngram=3, script=script)
    assert spans.starts.dtype == spans.ends.dtype == spans.counts.dtype == np.int64
    assert len(spans.counts) == len(texts) and int(spans.counts.sum()) == len(spans.starts) == len(spans.ends)
    for d, text in enumerate(texts):
        toks, is_chars = tokens(text, script)
        assert [t.decode() for t in _doc_tokens(spans, d)] == toks, (script, text)
        assert spans.ngram[d] == ngram_size(is_chars, 5, 3)


def test_spans_grow_past_the_first_guess_of_the_token_count():
    """Dense one-letter tokens (one per 2 bytes, the scan first guesses one per 4): the span arrays
    are grown, and the spans found before and after the growth survive it."""
    texts = ["Hello, world", "a " * 3000 + "end", "", "x_1 Y2"]
    spans = token_spans(texts)
    for d, text in enumerate(texts):
        assert [t.decode() for t in _doc_tokens(spans, d)] == tokens(text)[0]


def test_spans_of_an_empty_batch():
    spans = token_spans([])
    assert len(spans.starts) == len(spans.ends) == len(spans.counts) == 0
    hashes, per_doc = minhash.batch_shingle_hashes(spans)
    assert len(hashes) == len(per_doc) == 0


def test_token_hashes_equal_token_hash32_on_documents():
    spans = token_spans(TEXTS)
    hashes = minhash.token_hashes(spans.data, spans.starts, spans.ends)
    assert hashes.dtype == np.uint32 and len(hashes) == len(spans.starts)
    expected = [minhash.token_hash32(spans.token_bytes(i)) for i in range(len(spans.starts))]
    assert hashes.tolist() == expected


def test_token_hashes_at_every_length_and_at_the_end_of_the_buffer():
    """Lengths 0 to 40 around the 8-byte chunks, and spans ending in the last 8 bytes of `data`
    (the byte-at-a-time path): every span of every length of a random buffer's tail."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, 200, dtype=np.uint8)
    starts, ends = [], []
    for length in range(41):
        for start in (0, 3, 60, len(data) - length - 9, len(data) - length - 8, len(data) - length - 1):
            starts.append(start)
            ends.append(start + length)
    for end in range(len(data) - 12, len(data) + 1):
        for length in range(min(end, 20) + 1):
            starts.append(end - length)
            ends.append(end)
    hashes = minhash.token_hashes(data, np.array(starts), np.array(ends))
    expected = [minhash.token_hash32(data[s:e].tobytes()) for s, e in zip(starts, ends)]
    assert hashes.tolist() == expected
    assert len(set(expected)) > len(expected) // 4  # distinct spans, distinct hashes (mostly)


@pytest.mark.parametrize("word_ngram,char_ngram", [(5, 5), (3, 2), (1, 1)])
def test_shingle_hashes_equal_shingle_hash32_per_shingle(word_ngram, char_ngram):
    """Mixed widths in one batch: word and character n-grams, and documents shorter than n."""
    spans = token_spans(TEXTS, word_ngram=word_ngram, char_ngram=char_ngram)
    hashes, per_doc = minhash.batch_shingle_hashes(spans, "token")
    assert hashes.dtype == np.uint32 and int(per_doc.sum()) == len(hashes) and len(per_doc) == len(TEXTS)
    expected = []
    for d in range(len(TEXTS)):
        toks = _doc_tokens(spans, d)
        w = min(len(toks), int(spans.ngram[d]))
        doc = [minhash.shingle_hash32(b" ".join(toks[i : i + w])) for i in range(len(toks) - w + 1)] if toks else []
        assert per_doc[d] == len(doc)
        expected += doc
    assert hashes.tolist() == expected


def test_shingle_hashes_are_the_set_of_shingles_of_each_document():
    """The batch path and the per-document `shingles` (set of strings) agree, for both hashes."""
    texts = TEXTS[:120]
    spans = token_spans(texts)
    for hash_name, fn in (("token", minhash.shingle_hash32), ("sha1", minhash.sha1_hash32)):
        hashes, per_doc = minhash.batch_shingle_hashes(spans, hash_name)
        ends = np.cumsum(per_doc)
        for d, text in enumerate(texts):
            ours = set(hashes[ends[d] - per_doc[d] : ends[d]].tolist())
            assert ours == {fn(s.encode("utf-8")) for s in shingles(text)}, (hash_name, text)


@pytest.mark.parametrize("hash_name", ["token", "sha1"])
@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_signatures_equal_datasketch_on_text(hash_name, scheme):
    texts = TEXTS[:80] + [" ".join(f"w{i}" for i in range(2600))]  # more shingles than one block
    hashes, per_doc = minhash.batch_shingle_hashes(token_spans(texts), hash_name)
    ours = minhash.flat_signatures(hashes, per_doc, minhash.permutations(128, 3, scheme))
    assert ours.shape == (len(texts), 128) and ours.dtype == np.uint32
    hashfunc = {"token": minhash.shingle_hash32, "sha1": None}[hash_name]
    for text, sig in zip(texts, ours):
        theirs = MinHash(num_perm=128, seed=3, scheme=scheme, hashfunc=hashfunc)
        theirs.update_batch([s.encode("utf-8") for s in shingles(text)])
        assert np.array_equal(theirs.hashvalues.astype(np.uint64), sig.astype(np.uint64)), (text or "")[:30]


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("num_perm", [1, 7, 100, 128])
def test_signatures_equal_datasketch_on_raw_values(scheme, num_perm):
    """Extreme values, repeats, empty documents between full ones, documents that cross the
    kernels' 2048-shingle blocks, and permutation counts that leave a vector remainder."""
    rng = np.random.default_rng(num_perm)
    extremes = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1], dtype=np.uint32)
    block = kernels._BLOCK
    docs = [np.zeros(0, np.uint32), extremes, np.zeros(0, np.uint32), np.array([7], np.uint32)]
    docs += [rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32) for size in (1, 2, 31, 500)]
    docs += [
        rng.integers(0, 2**32, size, dtype=np.uint64).astype(np.uint32) for size in (block, block + 1, 2 * block + 5)
    ]
    docs += [np.repeat(extremes[3:5], 40), np.zeros(0, np.uint32)]
    perms = minhash.permutations(num_perm, 9, scheme)
    flat, per_doc = np.concatenate(docs), np.array([len(d) for d in docs])
    ours = minhash.flat_signatures(flat, per_doc, perms)
    assert ours.shape == (len(docs), num_perm)
    for values, sig in zip(docs, ours):
        theirs = MinHash(num_perm=num_perm, seed=9, scheme=scheme, hashfunc=int)
        theirs.update_batch(values.tolist())
        assert np.array_equal(theirs.hashvalues.astype(np.uint64), sig.astype(np.uint64))
    # Each document alone gives its row of the batch: rows never leak into each other.
    for i in (1, 9, 10):
        alone = minhash.flat_signatures(docs[i], np.array([len(docs[i])]), perms)
        assert np.array_equal(alone[0], ours[i])


def test_signatures_of_no_documents_and_of_documents_without_shingles():
    perms = minhash.permutations(16, 1)
    assert minhash.flat_signatures(np.zeros(0, np.uint32), np.zeros(0, np.int64), perms).shape == (0, 16)
    empty = minhash.flat_signatures(np.zeros(0, np.uint32), np.zeros(3, np.int64), perms)
    assert (empty == minhash.EMPTY).all() and empty.shape == (3, 16)


def test_signatures_reject_a_layout_that_does_not_cover_the_hashes():
    perms = minhash.permutations(16, 1)
    with pytest.raises(ValueError, match="per_doc"):
        minhash.flat_signatures(np.zeros(5, np.uint32), np.array([2, 2]), perms)
