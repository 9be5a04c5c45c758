"""MinHash signatures, vectorised with numpy over a batch of documents.

The signatures are bit-for-bit those of ``datasketch.MinHash(num_perm, seed)`` fed the same shingles
(encoded as UTF-8) with its default hash function (the first 4 bytes of SHA-1, little endian), so a
datasketch user can check or reuse them:

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
