"""Image fingerprints: a hash of the decoded pixels (exact duplicates whatever the encoding) and a
64-bit perceptual hash (near duplicates: re-encoded, resized, lightly cropped copies).

pHash: the image in grey, resized to 32x32, its 2-D DCT-II, the 8x8 lowest frequencies, one bit
per coefficient above their median (the construction of the `imagehash` package, with the DCT done
here as two small matrix products). Similar images have hashes a few bits apart (Hamming distance).
The resize first reduces by an integer factor with a box filter (PIL's `reducing_gap`), then
applies Lanczos: 4x faster on photos than Lanczos over the full image, and a few bits at most
from it.

Identical pixels give identical pHashes, so wherever near duplicates are looked for (pHash within
some bits), exact duplicates are among them: the pixel hash is only needed when exact copies alone
are asked for.
"""

from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
from PIL import Image

PHASH_BITS = 64
_DCT_SIZE = 32
_LOW = 8


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT = _dct_matrix(_DCT_SIZE)


def decode(data: bytes) -> Image.Image | None:
    """The decoded image, or None when the bytes are not a readable image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.load()
        return img
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # Corrupt, unknown or oversized: the image is not compared (validation rejects the row).
        return None


def pixel_hash(img: Image.Image) -> str:
    """SHA-256 of the decoded RGB(A) pixels and size: equal for lossless re-encodes of one image."""
    mode = "RGBA" if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info else "RGB"
    pixels = img.convert(mode)
    h = hashlib.sha256(f"{mode}:{pixels.width}x{pixels.height}:".encode())
    h.update(pixels.tobytes())
    return h.hexdigest()[:32]


def grey32(img: Image.Image) -> np.ndarray:
    """The 32x32 grey image the pHash is computed from (float64)."""
    grey = img.convert("L").resize((_DCT_SIZE, _DCT_SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(grey, dtype=np.float64)


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash as a signed 64-bit integer (Spark's long), bit 63 first."""
    x = grey32(img)
    coeffs = (_DCT @ x @ _DCT.T)[:_LOW, :_LOW]
    bits = (coeffs > np.median(coeffs)).ravel()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bits that differ between 64-bit hashes (element-wise)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(x.view(np.uint64))


def band_positions(bands: int, bits_per_band: int, seed: int) -> np.ndarray:
    """Which hash bits make each LSH band: `bands` random subsets of `bits_per_band` bits.

    Two hashes d bits apart share a band with probability 1 - (1 - C(64-d, k)/C(64, k))^bands.
    """
    rng = np.random.RandomState(seed)
    return np.stack([np.sort(rng.choice(PHASH_BITS, bits_per_band, replace=False)) for _ in range(bands)])


def band_values(hashes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(n, bands) integers: the selected bits of each hash, packed."""
    u = np.asarray(hashes, dtype=np.int64).view(np.uint64)
    shifts = np.uint64(63) - positions.astype(np.uint64)  # position 0 is the most significant bit
    bits = (u[:, None, None] >> shifts[None, :, :]) & np.uint64(1)
    weights = np.uint64(1) << np.arange(positions.shape[1], dtype=np.uint64)[::-1]
    return (bits * weights[None, None, :]).sum(axis=2).astype(np.int64)
