"""MinHash signatures of a whole batch of documents, computed by compiled kernels (`kernels`).

The signatures are bit-for-bit those of ``datasketch.MinHash(num_perm, seed, hashfunc=...)`` fed the
same shingles (UTF-8 bytes), so a datasketch user can check or reuse them. Two shingle hashes:

* ``token`` (default, fast): a shingle's hash combines 32-bit hashes of its tokens, and a token's
  hash is a polynomial over its bytes; one compiled loop hashes every token of a batch, another
  combines them into shingle hashes (no Python object per token or shingle). datasketch gets the
  same values with ``hashfunc=shingle_hash32`` (this module).
* ``sha1``: datasketch's default hash function (first 4 bytes of SHA-1, little endian), for
  signatures that equal ``datasketch.MinHash(num_perm, seed)`` with no hashfunc argument. One
  hashlib call per shingle remains, driven by C-level ``map`` over slices of one buffer.

Permutations (as datasketch's schemes):

* scheme ``affine32`` (datasketch >= 2.0 default): h' = fmix32(h), value_k = a_k * h' + b_k mod 2^32;
* scheme ``legacy`` (datasketch < 2.0): value_k = ((a_k * h + b_k) mod 2^64 mod (2^61 - 1)) & (2^32 - 1).

The signature is the element-wise minimum over the document's shingles. The permutation parameters
come from ``numpy.random.RandomState(seed)`` drawn in datasketch's order, which is what makes the
values agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np

from curation.dedup.shingles import TokenSpans, shingle_layout, shingles_per_doc

Scheme = Literal["affine32", "legacy"]
EMPTY = np.uint32(0xFFFFFFFF)  # the signature value of a document without shingles
_MERSENNE = np.uint64((1 << 61) - 1)


@dataclass(frozen=True)
class Permutations:
    scheme: str
    a: np.ndarray
    b: np.ndarray

    @property
    def num_perm(self) -> int:
        return len(self.a)


def permutations(num_perm: int = 128, seed: int = 1, scheme: Scheme = "affine32") -> Permutations:
    gen = np.random.RandomState(seed)
    if scheme == "affine32":
        # Odd multipliers make h -> a*h + b a bijection on 32-bit values.
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        return Permutations(scheme, a, b)
    if scheme == "legacy":
        pairs = [
            (gen.randint(1, _MERSENNE, dtype=np.uint64), gen.randint(0, _MERSENNE, dtype=np.uint64))
            for _ in range(num_perm)
        ]
        a, b = (np.array(col, dtype=np.uint64) for col in zip(*pairs))
        return Permutations(scheme, a, b)
    raise ValueError(f"unknown MinHash scheme {scheme!r}; use affine32 or legacy")


# --- shingle hashes -----------------------------------------------------------------------------


def _kernels():
    """The compiled kernels, imported on first use: a driver that only plans the Spark jobs never
    loads numba (~0.4 s)."""
    from curation.dedup import kernels

    return kernels


def sha1_hash32(data: bytes) -> int:
    """datasketch's default hash: the first 4 bytes of SHA-1, little endian."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


# Token hash: poly = sum_j byte_j * P^j mod 2^64, then MurmurHash3's 64-bit finaliser over poly plus
# length * LENGTH, top 32 bits. `kernels.token_hashes` computes it for every token of a batch.
P = np.uint64(0xA0761D6478BD642F)  # the polynomial's base: odd, so every power of it is odd too
LENGTH = np.uint64(0xE7037ED1A0B428DB)  # separates tokens that differ only by trailing zero bytes
_P = int(P)
_LENGTH = int(LENGTH)
_M64 = (1 << 64) - 1


def token_hash32(token: bytes) -> int:
    """The hash of one token (its UTF-8 bytes), in plain Python: the reference for `token_hashes`."""
    poly, power = 0, 1
    for byte in token:
        poly = (poly + byte * power) & _M64
        power = (power * _P) & _M64
    h = (poly + len(token) * _LENGTH) & _M64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _M64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _M64
    h ^= h >> 33
    return h >> 32


def token_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`token_hash32` of every span `data[starts[i]:ends[i]]` (uint32)."""
    return _kernels().token_hashes(
        np.ascontiguousarray(data, dtype=np.uint8),
        np.ascontiguousarray(starts, dtype=np.int64),
        np.ascontiguousarray(ends, dtype=np.int64),
    )


# The reference shingle hash, with numpy uint32 arithmetic (wrapping: mod 2^32);
# `kernels.shingle_hashes` computes it for every shingle of a batch.
_ROTATE = np.uint32(5)
# A shingle's hash folds its tokens' hashes: h = START; h = (rotl(h, 5) ^ t) * MULT per token, then
# fmix32(h ^ number of tokens).
START = np.uint32(0x9747B28C)
MULT = np.uint32(0x9E3779B1)  # odd: a bijection mod 2^32
_MULT = MULT
_START = START


def _combine_step(h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One token into a running shingle hash: h = (rotl(h, 5) ^ t) * golden (mod 2^32), in place."""
    high = h >> np.uint32(32 - 5)
    h <<= _ROTATE
    h |= high
    h ^= t
    h *= _MULT
    return h


def shingle_hash32(shingle: bytes) -> int:
    """The `token` hash of one shingle (UTF-8 bytes of space-joined tokens), as datasketch's
    `hashfunc`: MinHash(hashfunc=shingle_hash32) then gives our signatures."""
    toks = shingle.split(b" ")
    h = np.array([_START], dtype=np.uint32)
    for tok in toks:
        _combine_step(h, np.array([token_hash32(tok)], dtype=np.uint32))
    return int(fmix32(h ^ np.uint32(len(toks)))[0])


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser: a fixed bijection that spreads structured hash values."""
    h = h ^ (h >> np.uint32(16))
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def batch_shingle_hashes(spans: TokenSpans, hash_name: str = "token") -> tuple[np.ndarray, np.ndarray]:
    """(hashes of every shingle of the batch in document order, shingles per document).

    A document's shingles may repeat (the minimum and the set of hashes are the same).
    """
    if hash_name == "token":
        # The kernel walks each document's tokens itself: only the shingle counts are needed here.
        per_doc = shingles_per_doc(spans.counts, spans.ngram)
        return _token_shingles(spans, per_doc), per_doc
    if hash_name == "sha1":
        first, width, per_doc = shingle_layout(spans.counts, spans.ngram)
        return _sha1_shingles(spans, first, width), per_doc
    raise ValueError(f"near_dedup.hash must be token or sha1; got {hash_name!r}")


def _token_shingles(spans: TokenSpans, per_doc: np.ndarray) -> np.ndarray:
    t = token_hashes(spans.data, spans.starts, spans.ends)
    counts = np.ascontiguousarray(spans.counts, dtype=np.int64)
    ngram = np.ascontiguousarray(spans.ngram, dtype=np.int64)
    return _kernels().shingle_hashes(t, counts, ngram, int(per_doc.sum()))


def _sha1_shingles(spans: TokenSpans, first: np.ndarray, width: np.ndarray) -> np.ndarray:
    # The tokens re-joined by single spaces: every shingle's UTF-8 is then one slice of `text`.
    lengths = spans.ends - spans.starts
    new_starts = np.cumsum(lengths + 1) - lengths - 1
    text = np.full(int(lengths.sum() + len(lengths)), ord(" "), dtype=np.uint8)
    shift = np.repeat(new_starts - spans.starts, lengths)
    src = np.repeat(spans.starts - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
    text[src + shift] = spans.data[src]
    blob = text.tobytes()
    lo = new_starts[first].tolist()
    hi = (new_starts + lengths)[first + width - 1].tolist()
    # One hashlib call per shingle (a list comprehension beats a chain of C-level maps here); the
    # first 4 bytes of each digest, little endian.
    sha1 = hashlib.sha1
    raw = np.frombuffer(b"".join([sha1(blob[a:b]).digest() for a, b in zip(lo, hi)]), dtype=np.uint8)
    return np.ascontiguousarray(raw.reshape(-1, 20)[:, :4]).view("<u4").ravel().astype(np.uint32)


# --- signatures ---------------------------------------------------------------------------------


def flat_signatures(hashes: np.ndarray, per_doc: np.ndarray, perms: Permutations) -> np.ndarray:
    """Signatures of many documents at once: a uint32 array of shape (documents, num_perm).

    `hashes` holds every document's shingle hashes one document after the other, `per_doc[i]`
    of them for document i. One compiled loop permutes each hash and keeps the running minimum in
    the document's signature row: no (shingle x permutation) array is ever built. A document
    without shingles gets the all-EMPTY signature, as an unfed datasketch MinHash has.
    """
    per_doc = np.ascontiguousarray(per_doc, dtype=np.int64)
    hashes = np.ascontiguousarray(hashes, dtype=np.uint32)
    if int(per_doc.sum()) != len(hashes):
        raise ValueError(f"per_doc sums to {int(per_doc.sum())} hashes; got {len(hashes)}")
    out = np.full((len(per_doc), perms.num_perm), EMPTY, dtype=np.uint32)
    if perms.scheme == "affine32":
        _kernels().signatures_affine32(hashes, per_doc, perms.a, perms.b, out)
    else:
        _kernels().signatures_legacy(hashes, per_doc, perms.a, perms.b, out)
    return out


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature values (row-wise for 2-D arrays)."""
    return np.mean(sig_a == sig_b, axis=-1)
