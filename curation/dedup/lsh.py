"""Locality-sensitive hashing over MinHash signatures: bands of rows, one key per band.

Two documents become a candidate pair when all `rows` values of some band agree. For Jaccard
similarity s that happens with probability 1 - (1 - s^r)^b; `optimal_bands` chooses (b, r) for a
threshold by minimising the weighted false-positive plus false-negative probability mass, the rule
datasketch's MinHashLSH uses, so both pick the same bands for the same threshold.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

# Gauss-Legendre nodes on [-1, 1]: enough for these smooth polynomials in s to integrate exactly
# (degree b*r <= num_perm), without a SciPy dependency.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(128)


def _integrate(f, lo: float, hi: float) -> float:
    if hi <= lo:
        return 0.0
    x = 0.5 * (hi - lo) * _NODES + 0.5 * (hi + lo)
    return float(0.5 * (hi - lo) * np.sum(_WEIGHTS * f(x)))


def false_positive_mass(threshold: float, bands: int, rows: int) -> float:
    return _integrate(lambda s: 1 - (1 - s**rows) ** bands, 0.0, threshold)


def false_negative_mass(threshold: float, bands: int, rows: int) -> float:
    return _integrate(lambda s: (1 - s**rows) ** bands, threshold, 1.0)


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted error mass."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    best, best_error = (0, 0), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            error = fp_weight * false_positive_mass(threshold, b, r) + fn_weight * false_negative_mass(threshold, b, r)
            if error < best_error:
                best, best_error = (b, r), error
    return best


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One signed 64-bit key per (document, band): a hash of the band's `rows` values.

    Keys of different bands may coincide; callers group by (band, key). A 64-bit collision only
    adds a candidate that verification then discards.
    """
    if bands * rows > sigs.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} values, signatures have {sigs.shape[1]}")
    values = sigs[:, : bands * rows].astype(np.uint64).reshape(len(sigs), bands, rows)
    h = np.full((len(sigs), bands), _GOLDEN, dtype=np.uint64)
    for j in range(rows):
        h = _mix64((h ^ values[:, :, j]) * _GOLDEN)
    return h.view(np.int64)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (wrapping uint64 arithmetic)."""
    h = (h ^ (h >> np.uint64(30))) * _MIX1
    h = (h ^ (h >> np.uint64(27))) * _MIX2
    return h ^ (h >> np.uint64(31))
