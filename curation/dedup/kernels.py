"""Compiled (numba) inner loops of text dedup: token spans, token and shingle hashes, signatures,
exact Jaccard of candidate pairs, union-find within a partition of the duplicate graph.

`shingles.token_spans` and `minhash` call these on whole batches; the plain-Python definitions they
must equal (`minhash.token_hash32`, `minhash.shingle_hash32`, datasketch's permutations) are the
references the tests compare against.

Numba typing: arithmetic on two uint32 values gives a uint64 (numba widens integers to 64 bits),
and mixing uint64 with a signed integer gives a float. Every step below therefore works on explicit
`np.uint64` values and truncates with `np.uint32(...)` where the math is mod 2^32; the truncation of
a wrapped 64-bit product or sum is exactly the 32-bit wrapped result.

The kernels are serial: Spark already runs one Python worker per core. `cache=True` writes the
machine code next to this file (`__pycache__`), so every worker after the first loads it instead of
compiling. The Python wrappers pass arrays of one fixed dtype and layout, so each kernel is compiled
once.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from curation.dedup.minhash import LENGTH, MULT, START, P

# --- token spans --------------------------------------------------------------------------------

# Which bytes belong to tokens. In ASCII text `\w` is exactly [A-Za-z0-9_]; bytes >= 0x80 occur only
# in the UTF-8 of tokens that `shingles.tokens` already extracted (separated by spaces).
_TOKEN_BYTE = np.zeros(256, dtype=np.uint8)
for _c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_":
    _TOKEN_BYTE[_c] = 1
_TOKEN_BYTE[0x80:] = 1
del _c


_ONE = np.uint64(1)


@njit(cache=True)
def scan_spans(raw, doc_starts, doc_ends):
    """(token starts, token ends, tokens per document) of `raw`, which is lower-cased in place.

    A token is a maximal run of token bytes inside one document `raw[doc_starts[d]:doc_ends[d]]`.
    Branch-free: every position is written as a candidate start and end, and the counters move on
    only where a run begins or ends. Token boundaries come every few bytes and are unpredictable,
    so a branch per boundary would be mispredicted at a large share of them. The counters are
    unsigned, and the bytes are read through a slice from 0: numba then skips its negative-index
    wraparound on every access (2x faster).
    """
    # What str.lower does to ASCII: A-Z -> a-z, every other byte unchanged. A range test in
    # wrapping uint8 arithmetic rather than a table, so that this loop vectorises.
    for pos in range(len(raw)):
        c = raw[pos]
        raw[pos] = np.uint8(c + np.uint8(32) * np.uint8(np.uint8(c - np.uint8(65)) < np.uint8(26)))
    # English text has about one token per 5.5 bytes; grown below if needed. The arrays returned
    # are views of these, not copies: a copy would touch as much fresh memory again (page faults
    # are a large share of this function's time), and the never-written tail is left unused.
    cap = len(raw) // 4 + 16
    starts = np.empty(cap, dtype=np.int64)
    ends = np.empty(cap, dtype=np.int64)
    counts = np.zeros(len(doc_starts), dtype=np.int64)
    ns = np.uint64(0)
    ne = np.uint64(0)
    for d in range(len(doc_starts)):
        lo = doc_starts[d]
        doc = raw[lo : doc_ends[d]]
        first = ns
        # A document adds at most (length + 1) // 2 tokens: make room before the branch-free loop.
        need = int(ns) + (len(doc) + 1) // 2 + 1
        if need > cap:
            cap = max(need, 2 * cap)
            starts = _grown(starts, int(ns), cap)
            ends = _grown(ends, int(ne), cap)
        prev = np.uint64(0)
        for p in range(len(doc)):
            inside = np.uint64(_TOKEN_BYTE[doc[p]])
            starts[ns] = lo + p
            ns += inside & (prev ^ _ONE)  # a run begins here
            ends[ne] = lo + p
            ne += prev & (inside ^ _ONE)  # the run before this byte ended here
            prev = inside
        if prev:  # a token that runs to the end of the document
            ends[ne] = lo + len(doc)
            ne += _ONE
        counts[d] = ns - first
    return starts[:ns], ends[:ne], counts


@njit(cache=True)
def _grown(a, used, size):
    out = np.empty(size, dtype=a.dtype)
    out[:used] = a[:used]
    return out


# --- token hashes -------------------------------------------------------------------------------

# Token hash: poly = sum_j byte_j * P^j mod 2^64, then MurmurHash3's 64-bit finaliser over poly plus
# length * LENGTH, top 32 bits (`minhash.token_hash32` is the plain-Python definition).
FMIX64_1 = np.uint64(0xFF51AFD7ED558CCD)
FMIX64_2 = np.uint64(0xC4CEB9FE1A85EC53)
_POWERS = np.array([pow(int(P), k, 1 << 64) for k in range(8)], dtype=np.uint64)  # P^0 .. P^7
_P8 = np.uint64(pow(int(P), 8, 1 << 64))
_BYTE = np.uint64(0xFF)
_SHIFT33 = np.uint64(33)
_SHIFT32 = np.uint64(32)


@njit(cache=True, inline="always")
def _fmix64(h):
    h ^= h >> _SHIFT33
    h *= FMIX64_1
    h ^= h >> _SHIFT33
    h *= FMIX64_2
    h ^= h >> _SHIFT33
    return h


@njit(cache=True, inline="always")
def _word(data, p):
    """The 8 bytes data[p:p+8] as a little-endian uint64. LLVM merges the byte loads into one
    unaligned load; the unsigned index keeps numba's wraparound code (which prevents that) out."""
    p = np.uint64(p)
    w = np.uint64(0)
    for k in range(8):
        w |= np.uint64(data[p + np.uint64(k)]) << np.uint64(8 * k)
    return w


@njit(cache=True, inline="always")
def _chunk_poly(w):
    """sum_j byte_j(w) * P^j mod 2^64 over the 8 bytes of w: eight independent products."""
    poly = np.uint64(0)
    for k in range(8):
        poly += ((w >> np.uint64(8 * k)) & _BYTE) * _POWERS[k]
    return poly


@njit(cache=True)
def token_hashes(data, starts, ends):
    """`minhash.token_hash32` of every span `data[starts[i]:ends[i]]` (uint32).

    Eight bytes at a time: poly = sum over 8-byte chunks c of chunk_poly(c) * P^(8c), the last
    chunk masked to the token's bytes (zero bytes add nothing to the sum). Most tokens are one
    chunk, so the work per token has no data-dependent branch, where a loop per byte would
    mispredict its exit at almost every token. Spans that end within 8 bytes of the end of `data`
    take the loop per byte instead (reading 8 bytes would run past the array).
    """
    out = np.empty(len(starts), dtype=np.uint32)
    n = len(data)
    for i in range(len(starts)):
        s = starts[i]
        e = ends[i]
        poly = np.uint64(0)
        power = np.uint64(1)
        if e + 8 <= n:
            while e - s > 8:
                poly += _chunk_poly(_word(data, s)) * power
                power *= _P8
                s += 8
            # The low 8 * (e - s) bits (all 64 when e - s = 8): two shifts, each below 64 bits.
            half = np.uint64(4 * (e - s))
            mask = ((_ONE << half) << half) - _ONE
            poly += _chunk_poly(_word(data, s) & mask) * power
        else:
            for j in range(s, e):
                poly += np.uint64(data[j]) * power
                power *= P
        h = poly + np.uint64(ends[i] - starts[i]) * LENGTH
        out[i] = np.uint32(_fmix64(h) >> _SHIFT32)
    return out


# --- shingle hashes -----------------------------------------------------------------------------

# A shingle's hash folds its tokens' hashes: h = START; h = (rotl(h, 5) ^ t) * MULT (mod 2^32) per
# token; then fmix32(h ^ w) for w tokens (`minhash.shingle_hash32` is the definition).
FMIX32_1 = np.uint32(0x85EBCA6B)
FMIX32_2 = np.uint32(0xC2B2AE35)


@njit(cache=True, inline="always")
def _fmix32(h):
    """MurmurHash3's 32-bit finaliser of a uint32 (each product truncated: mod 2^32)."""
    h = np.uint32(h ^ (h >> np.uint32(16)))
    h = np.uint32(h * FMIX32_1)
    h = np.uint32(h ^ (h >> np.uint32(13)))
    h = np.uint32(h * FMIX32_2)
    return np.uint32(h ^ (h >> np.uint32(16)))


@njit(cache=True)
def shingle_hashes(t, counts, ngram, total):
    """Hashes of every shingle, in document order, from the token hashes `t`.

    Document d owns counts[d] consecutive tokens. With c tokens and n = ngram[d], it has the
    c - n + 1 shingles of n consecutive tokens when c >= n, one shingle of all c tokens when
    0 < c < n, and none when c = 0 (`shingles.shingle_layout`); `total` is their sum.

    Token-major per document: the document's shingle hashes (a slice of `out`) take their k-th
    token from the contiguous slice t[k:k + m], so the loop over shingles vectorises (4x faster
    than one shingle at a time).
    """
    out = np.empty(total, dtype=np.uint32)
    o = 0
    base = 0
    for d in range(len(counts)):
        c = counts[d]
        if c > 0:
            w = min(c, ngram[d])
            m = c - w + 1
            h = out[o : o + m]
            h[:] = START
            for k in range(w):
                tk = t[base + k : base + k + m]
                for i in range(m):
                    x = h[i]
                    x = np.uint32((x << np.uint32(5)) | (x >> np.uint32(27)))  # rotl 5
                    h[i] = np.uint32((x ^ tk[i]) * MULT)
            tag = np.uint32(w)
            for i in range(m):
                h[i] = _fmix32(np.uint32(h[i] ^ tag))
            o += m
        base += c
    return out


# --- signatures ---------------------------------------------------------------------------------

_MERSENNE = np.uint64((1 << 61) - 1)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT61 = np.uint64(61)


# Shingles per block of the signature loops: the block's (permuted-input) hashes, 8 KB of uint32,
# stay in L1 cache while all num_perm passes run over them.
_BLOCK = 2048


@njit(cache=True)
def signatures_affine32(hashes, per_doc, a, b, out):
    """out[d, k] = min over document d's hashes h of a[k] * fmix32(h) + b[k] (mod 2^32).

    `out` comes filled with the empty value (2^32 - 1): a document without hashes keeps it.
    Permutation-major: for each k, one pass over a block of the document's (fmix32-ed) hashes
    with a scalar running minimum. LLVM vectorises that pass as a reduction (a multiply, an add and
    a min per lane, nothing stored): 1.4x faster than a hash-major loop, which loads and stores
    the signature row for every hash.
    """
    k = len(a)
    buf = np.empty(_BLOCK, dtype=np.uint32)
    pos = 0
    for d in range(len(per_doc)):
        end = pos + per_doc[d]
        for lo in range(pos, end, _BLOCK):
            n = min(_BLOCK, end - lo)
            for s in range(n):
                buf[s] = _fmix32(hashes[lo + s])
            for j in range(k):
                aj = a[j]
                bj = b[j]
                m = out[d, j]
                for s in range(n):
                    m = min(m, np.uint32(aj * buf[s] + bj))  # the truncation is the mod 2^32
                out[d, j] = m
        pos = end


@njit(cache=True)
def signatures_legacy(hashes, per_doc, a, b, out):
    """out[d, k] = min over document d's hashes h of ((a[k] * h + b[k]) mod 2^64 mod (2^61 - 1))
    mod 2^32, datasketch < 2.0's permutation (a, b uint64). Loop order as `signatures_affine32`."""
    k = len(a)
    buf = np.empty(_BLOCK, dtype=np.uint32)
    pos = 0
    for d in range(len(per_doc)):
        end = pos + per_doc[d]
        for lo in range(pos, end, _BLOCK):
            n = min(_BLOCK, end - lo)
            for s in range(n):
                buf[s] = hashes[lo + s]
            for j in range(k):
                # a * h mod 2^64 from two 32 x 32 -> 64-bit products (h < 2^32): a_high * h only
                # matters in its low 32 bits, shifted up. SIMD has those products natively; a full
                # 64 x 64 multiply is emulated or slow.
                a_low = a[j] & _LOW32
                a_high = a[j] >> _SHIFT32
                bj = b[j]
                m = out[d, j]
                for s in range(n):
                    x = np.uint64(buf[s])
                    v = a_low * x + ((a_high * x) << _SHIFT32) + bj  # wraps mod 2^64, as datasketch's
                    # v mod (2^61 - 1) without a division: 2^61 = 1 (mod p), so
                    # v = (v >> 61) + (v & p) (mod p), and that sum r is below 2p: r - p when
                    # r >= p. min(r, r - p) is that choice without a branch (r - p wraps to a huge
                    # value when r < p), which lets the loop vectorise.
                    r = (v & _MERSENNE) + (v >> _SHIFT61)
                    r = min(r, r - _MERSENNE)
                    m = min(m, np.uint32(r & _LOW32))
                out[d, j] = m
        pos = end


# --- exact Jaccard of candidate pairs -----------------------------------------------------------


@njit(cache=True)
def _sorted_unique(values):
    """The distinct values of a small array, sorted (a copy)."""
    s = np.sort(values)
    n = 0
    for i in range(len(s)):
        if i == 0 or s[i] != s[n - 1]:
            s[n] = s[i]
            n += 1
    return s[:n]


@njit(cache=True)
def pair_jaccard(a_values, a_offsets, b_values, b_offsets):
    """Jaccard similarity of the value sets of row i of a and row i of b, for every row: each row's
    values (with repeats, any order) are sorted and made unique, then counted against each other
    in one merge. A row pair without values has similarity 0."""
    rows = len(a_offsets) - 1
    out = np.zeros(rows, dtype=np.float64)
    for i in range(rows):
        x = _sorted_unique(a_values[a_offsets[i] : a_offsets[i + 1]])
        y = _sorted_unique(b_values[b_offsets[i] : b_offsets[i + 1]])
        p = 0
        q = 0
        both = 0
        while p < len(x) and q < len(y):
            if x[p] == y[q]:
                both += 1
                p += 1
                q += 1
            elif x[p] < y[q]:
                p += 1
            else:
                q += 1
        union = len(x) + len(y) - both
        if union > 0:
            out[i] = both / union
    return out


# --- connected components -----------------------------------------------------------------------


@njit(cache=True)
def _root(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]  # path halving
        x = parent[x]
    return x


@njit(cache=True)
def min_roots(a, b, n):
    """Union-find over the edges (a[i], b[i]) of nodes 0..n-1: each node's root, which is the
    smallest node of its component (a larger root always joins under a smaller one)."""
    parent = np.arange(n)
    for i in range(len(a)):
        x = _root(parent, a[i])
        y = _root(parent, b[i])
        if x < y:
            parent[y] = x
        elif y < x:
            parent[x] = y
    for v in range(n):
        parent[v] = _root(parent, v)
    return parent
