"""MinHash signatures, vectorised with numpy over a batch of documents.

The signatures are bit-for-bit those of ``datasketch.MinHash(num_perm, seed, hashfunc=...)`` fed the
same shingles (UTF-8 bytes), so a datasketch user can check or reuse them. Two shingle hashes:

* ``token`` (default, fast): a shingle's hash combines the cached 32-bit hashes of its tokens, so a
  document costs one dictionary lookup per token and a few numpy operations instead of one SHA-1
  per shingle. datasketch gets the same values with ``hashfunc=shingle_hash32`` (this module).
* ``sha1``: datasketch's default hash function (first 4 bytes of SHA-1, little endian), for
  signatures that equal ``datasketch.MinHash(num_perm, seed)`` with no hashfunc argument.

Permutations (as datasketch's schemes):

* scheme ``affine32`` (datasketch >= 2.0 default): h' = fmix32(h), value_k = a_k * h' + b_k mod 2^32;
* scheme ``legacy`` (datasketch < 2.0): value_k = ((a_k * h + b_k) mod 2^64 mod (2^61 - 1)) & (2^32 - 1).

The signature is the element-wise minimum over the document's shingles. The permutation parameters
come from ``numpy.random.RandomState(seed)`` drawn in datasketch's order, which is what makes the
values agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

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


def shingle_hashes(shingles: Iterable[str]) -> np.ndarray:
    """32-bit hashes of shingles: the first 4 bytes of SHA-1 of the UTF-8 text, little endian."""
    sha1 = hashlib.sha1
    digest = b"".join([sha1(s.encode("utf-8")).digest()[:4] for s in shingles])
    return np.frombuffer(digest, dtype="<u4").astype(np.uint32)


def sha1_hash32(data: bytes) -> int:
    """datasketch's default hash: the first 4 bytes of SHA-1, little endian."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


_ROTATE = np.uint32(5)
_MULT = np.uint32(0x9E3779B1)
_START = np.uint32(0x9747B28C)


def _combine_step(h: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One token into a running shingle hash: h = (rotl(h, 5) ^ t) * golden (mod 2^32)."""
    return (((h << _ROTATE) | (h >> np.uint32(32 - 5))) ^ t) * _MULT


def shingle_hash32(shingle: bytes) -> int:
    """The `token` hash of one shingle (UTF-8 bytes of space-joined tokens), as datasketch's
    `hashfunc`: MinHash(hashfunc=shingle_hash32) then gives our signatures."""
    toks = shingle.decode("utf-8").split(" ")
    h = np.array([_START], dtype=np.uint32)
    for tok in toks:
        h = _combine_step(h, np.array([sha1_hash32(tok.encode("utf-8"))], dtype=np.uint32))
    return int(fmix32(h ^ np.uint32(len(toks)))[0])


class TokenHasher:
    """Shingle hashes from token lists; token hashes are cached (natural text reuses its words)."""

    def __init__(self, max_cache: int = 2_000_000):
        self.cache: dict[str, int] = {}
        self.max_cache = max_cache

    def token_hashes(self, toks: list[str]) -> np.ndarray:
        cache = self.cache
        if len(cache) > self.max_cache:
            cache.clear()
        values = list(map(cache.get, toks))  # C-level loop; None where a token is new
        if None in values:
            for i, tok in enumerate(toks):
                if values[i] is None:
                    values[i] = cache.setdefault(tok, sha1_hash32(tok.encode("utf-8")))
        return np.array(values, dtype=np.uint32)

    def shingle_hashes(self, toks: list[str], n: int) -> np.ndarray:
        """Hashes of the n-token shingles (one shingle of all tokens when there are <= n)."""
        if not toks:
            return np.zeros(0, dtype=np.uint32)
        t = self.token_hashes(toks)
        width = min(n, len(t))
        count = len(t) - width + 1
        h = np.full(count, _START, dtype=np.uint32)
        for k in range(width):
            h = _combine_step(h, t[k : k + count])
        return fmix32(h ^ np.uint32(width))


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser: a fixed bijection that spreads structured hash values."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def signatures(hash_sets: Sequence[np.ndarray], perms: Permutations, max_cells: int = 1 << 22) -> np.ndarray:
    """Signatures of many documents at once: a uint32 array of shape (documents, num_perm).

    `hash_sets[i]` are the shingle hashes of document i. Documents are processed in chunks of at
    most `max_cells` (shingle x permutation) values to bound memory. A document without shingles
    gets the all-EMPTY signature, as an unfed datasketch MinHash has.
    """
    n_docs, k = len(hash_sets), perms.num_perm
    out = np.full((n_docs, k), EMPTY, dtype=np.uint32)
    sizes = np.fromiter((len(h) for h in hash_sets), dtype=np.int64, count=n_docs)
    start = 0
    while start < n_docs:
        # Grow the chunk until it holds max_cells values (at least one document).
        stop, cells = start, 0
        while stop < n_docs and (stop == start or cells + sizes[stop] * k <= max_cells):
            cells += sizes[stop] * k
            stop += 1
        docs = [i for i in range(start, stop) if sizes[i]]
        if docs:
            flat = np.concatenate([hash_sets[i] for i in docs]).astype(np.uint32, copy=False)
            values = _permute(flat, perms)  # (num_perm, shingles)
            offsets = np.concatenate([[0], np.cumsum(sizes[docs])[:-1]])
            # Reducing along the contiguous last axis is ~10x faster than along the first.
            out[docs] = np.minimum.reduceat(values, offsets, axis=1).T
        start = stop
    return out


def _permute(h: np.ndarray, perms: Permutations) -> np.ndarray:
    """(num_perm, shingles) permuted hash values."""
    if perms.scheme == "affine32":
        # uint32 arithmetic wraps around: that is the mod 2^32.
        values = np.multiply.outer(perms.a, fmix32(h))
        values += perms.b[:, None]
        return values
    values = np.multiply.outer(perms.a, h.astype(np.uint64))
    values += perms.b[:, None]
    values %= _MERSENNE
    return (values & _LOW32).astype(np.uint32)


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature values (row-wise for 2-D arrays)."""
    return np.mean(sig_a == sig_b, axis=-1)
