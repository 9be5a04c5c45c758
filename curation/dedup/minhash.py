"""MinHash signatures, vectorised with numpy over a whole batch of documents.

The signatures are bit-for-bit those of ``datasketch.MinHash(num_perm, seed, hashfunc=...)`` fed the
same shingles (UTF-8 bytes), so a datasketch user can check or reuse them. Two shingle hashes:

* ``token`` (default, fast): a shingle's hash combines 32-bit hashes of its tokens, and a token's
  hash is a polynomial over its bytes that numpy computes for every token of a batch at once (no
  Python object per token or shingle). datasketch gets the same values with
  ``hashfunc=shingle_hash32`` (this module).
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
import itertools
from dataclasses import dataclass
from typing import Literal

import numpy as np

from curation.dedup.shingles import TokenSpans, shingle_layout

Scheme = Literal["affine32", "legacy"]
EMPTY = np.uint32(0xFFFFFFFF)  # the signature value of a document without shingles
_MERSENNE = np.uint64((1 << 61) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)


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


def sha1_hash32(data: bytes) -> int:
    """datasketch's default hash: the first 4 bytes of SHA-1, little endian."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


# Token hash: poly = sum_j byte_j * P^j mod 2^64, then MurmurHash3's 64-bit finaliser over poly plus
# the length, top 32 bits. The polynomial form is what lets numpy hash every token of a batch with
# one prefix sum (see `token_hashes`).
_P = 0xA0761D6478BD642F  # odd, so invertible mod 2^64
_P_INV = pow(_P, -1, 1 << 64)
_LENGTH = 0xE7037ED1A0B428DB
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


class _Powers:
    """P^i and P^-i mod 2^64 for i < size, grown on demand (one table per Python worker)."""

    def __init__(self):
        self.up = np.ones(1, dtype=np.uint64)
        self.down = np.ones(1, dtype=np.uint64)

    def get(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if size > len(self.up):
            n = max(size, 2 * len(self.up))
            # cumprod wraps around in uint64: exactly the powers mod 2^64.
            self.up = np.cumprod(np.full(n, _P, dtype=np.uint64)) * np.uint64(_P_INV)
            self.down = np.cumprod(np.full(n, _P_INV, dtype=np.uint64)) * np.uint64(_P)
        return self.up, self.down


_POWERS = _Powers()
_TOKEN_CHUNK = 1 << 16  # bytes per prefix sum: its uint64 temporaries (512 KB) stay in cache, 1.7x faster than 1 MB


def token_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`token_hash32` of every span `data[starts[i]:ends[i]]`, vectorised.

    With prefix sums c[k] = sum_{i<k} byte_i * P^i, a span's polynomial is (c[e] - c[s]) * P^-s:
    a few array operations per 64 KB of text instead of a loop per token.
    """
    out = np.empty(len(starts), dtype=np.uint32)
    i = 0
    while i < len(starts):
        base = int(starts[i])
        j = max(i + 1, int(np.searchsorted(starts, base + _TOKEN_CHUNK)))
        size = int(ends[j - 1]) - base
        up, down = _POWERS.get(size + 1)
        terms = data[base : base + size].astype(np.uint64)
        terms *= up[:size]
        prefix = np.zeros(size + 1, dtype=np.uint64)
        np.cumsum(terms, out=prefix[1:])  # wraps around: sums mod 2^64
        s, e = starts[i:j] - base, ends[i:j] - base
        poly = prefix[e]
        poly -= prefix[s]
        poly *= down[s]
        length = (e - s).astype(np.uint64)
        length *= np.uint64(_LENGTH)
        poly += length
        out[i:j] = _fmix64(poly) >> np.uint64(32)
        i = j
    return out


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, in place (no temporaries beyond one shifted copy)."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


_ROTATE = np.uint32(5)
_MULT = np.uint32(0x9E3779B1)
_START = np.uint32(0x9747B28C)


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
    first, width, per_doc = shingle_layout(spans.counts, spans.ngram)
    if hash_name == "token":
        return _token_shingles(spans, first, width), per_doc
    if hash_name == "sha1":
        return _sha1_shingles(spans, first, width), per_doc
    raise ValueError(f"near_dedup.hash must be token or sha1; got {hash_name!r}")


def _token_shingles(spans: TokenSpans, first: np.ndarray, width: np.ndarray) -> np.ndarray:
    t = token_hashes(spans.data, spans.starts, spans.ends)
    if not len(first) or width.min() == width.max():  # the usual case: one n-gram size
        return _combine(t, first, int(width[0]) if len(width) else 1)
    out = np.empty(len(first), dtype=np.uint32)
    for w in np.unique(width).tolist():  # short documents (fewer tokens than n), CJK n
        sel = np.flatnonzero(width == w)
        out[sel] = _combine(t, first[sel], w)
    return out


def _combine(t: np.ndarray, starts: np.ndarray, w: int) -> np.ndarray:
    """Hashes of the w-token shingles starting at token positions `starts`."""
    if len(starts) * 4 > len(t):
        # Most positions start a shingle: combine shifted slices over every position (contiguous,
        # no gathers), then keep the starts.
        h = np.full(max(len(t) - w + 1, 0), _START, dtype=np.uint32)
        for k in range(w):
            _combine_step(h, t[k : k + len(h)])
        h = h[starts]
    else:
        h = np.full(len(starts), _START, dtype=np.uint32)
        for k in range(w):
            _combine_step(h, t[starts + k])
    h ^= np.uint32(w)
    return fmix32(h)


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


def flat_signatures(
    hashes: np.ndarray, per_doc: np.ndarray, perms: Permutations, max_cells: int = 1 << 20
) -> np.ndarray:
    """Signatures of many documents at once: a uint32 array of shape (documents, num_perm).

    `hashes` holds every document's shingle hashes one document after the other, `per_doc[i]`
    of them for document i. Documents are processed in chunks of about `max_cells` (shingle x
    permutation) values: ~4 MB of uint32 stays in cache, which is faster than larger chunks. A
    document without shingles gets the all-EMPTY signature, as an unfed datasketch MinHash has.
    """
    n_docs, k = len(per_doc), perms.num_perm
    out = np.full((n_docs, k), EMPTY, dtype=np.uint32)
    if perms.scheme == "affine32":
        hashes = fmix32(hashes.astype(np.uint32, copy=False))
    docs = np.flatnonzero(per_doc > 0)
    if not len(docs):
        return out
    sizes = per_doc[docs]
    ends = np.cumsum(sizes)
    # Chunk boundaries (in documents): each chunk holds at least one document.
    bounds = [0]
    while bounds[-1] < len(docs):
        done = int(ends[bounds[-1] - 1]) if bounds[-1] else 0
        bounds.append(max(bounds[-1] + 1, int(np.searchsorted(ends, done + max_cells // k, side="right"))))
    for lo, hi in itertools.pairwise(bounds):
        start = int(ends[lo - 1]) if lo else 0
        values = _permute(hashes[start : int(ends[hi - 1])], perms)  # (num_perm, shingles)
        offsets = np.concatenate([[0], ends[lo : hi - 1] - start])
        # Reducing along the contiguous last axis is ~10x faster than along the first.
        out[docs[lo:hi]] = np.minimum.reduceat(values, offsets, axis=1).T
    return out


def _permute(h: np.ndarray, perms: Permutations) -> np.ndarray:
    """(num_perm, shingles) permuted hash values (`h` already fmix32-ed for affine32)."""
    if perms.scheme == "affine32":
        # uint32 arithmetic wraps around: that is the mod 2^32.
        values = np.multiply.outer(perms.a, h)
        values += perms.b[:, None]
        return values
    values = np.multiply.outer(perms.a, h.astype(np.uint64))  # wraps mod 2^64, as datasketch's
    values += perms.b[:, None]
    # x mod (2^61 - 1) without a division: 2^61 = 1 (mod p), so x = (x >> 61) + (x & p) (mod p), and
    # that sum is below 2p: one conditional subtraction finishes it.
    reduced = values & _MERSENNE
    values >>= np.uint64(61)
    reduced += values
    np.subtract(reduced, _MERSENNE, out=reduced, where=reduced >= _MERSENNE)
    return reduced.astype(np.uint32)  # keeps the low 32 bits: the & (2^32 - 1)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature values (row-wise for 2-D arrays)."""
    return np.mean(sig_a == sig_b, axis=-1)
