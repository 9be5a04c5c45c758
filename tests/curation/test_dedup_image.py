"""Image duplicates: pixel hash across encodings, pHash against edited copies, the Spark step on
planted groups (re-encoded, resized, cropped copies; multi-image rows) and unrelated images."""

from __future__ import annotations

import itertools
from math import comb

import numpy as np
import pytest

from curation.dedup import image_hash
from curation.dedup.near_image import REASON, STEP, ImageDedupConfig, image_dedup
from tests.curation.dedup_fixtures import (
    encode,
    image_row,
    natural_image,
    variants,
    write_rows,
)


def test_pixel_hash_is_the_same_for_lossless_re_encodes_and_differs_for_lossy_ones():
    img = natural_image(1)
    png, bmp, webp = encode(img, "PNG"), encode(img, "BMP"), encode(img, "WEBP", lossless=True)
    assert len({png, bmp, webp}) == 3
    hashes = {image_hash.pixel_hash(image_hash.decode(b)) for b in (png, bmp, webp)}
    assert len(hashes) == 1
    assert image_hash.pixel_hash(image_hash.decode(encode(img, "JPEG", quality=80))) not in hashes
    assert image_hash.pixel_hash(image_hash.decode(encode(natural_image(2)))) not in hashes
    assert image_hash.decode(b"not an image") is None


def test_phash_separates_edited_copies_from_other_images():
    hashes = []
    for seed in range(25):
        img = natural_image(seed)
        h = image_hash.phash(img)
        hashes.append(h)
        for name, data in variants(img).items():
            assert image_hash.hamming(h, image_hash.phash(image_hash.decode(data))) <= 10, (seed, name)
    others = [image_hash.hamming(a, b) for a, b in itertools.combinations(hashes, 2)]
    assert min(others) > 14


def test_phash_bits_follow_the_dct_definition():
    # Independent check with an explicit O(n^4) DCT-II: the bit for (u, v) is set when that
    # coefficient exceeds the median of the 8x8 lowest frequencies.
    img = natural_image(7)
    x = image_hash.grey32(img)
    n = np.arange(32)
    coeffs = np.array(
        [[np.sum(x * np.outer(np.cos(np.pi * (2 * n + 1) * u / 64), np.cos(np.pi * (2 * n + 1) * v / 64))) for v in range(8)] for u in range(8)]
    )
    bits = "".join("1" if c > np.median(coeffs) else "0" for c in coeffs.ravel())
    assert np.int64(image_hash.phash(img)).view(np.uint64) == np.uint64(int(bits, 2))


def test_band_values_select_the_configured_bits_and_candidate_rate_matches_theory():
    positions = image_hash.band_positions(48, 14, seed=1)
    assert positions.shape == (48, 14)
    rng = np.random.default_rng(0)
    base = rng.integers(-(2**63), 2**63 - 1, size=4000, dtype=np.int64)
    flips = np.zeros(len(base), dtype=np.uint64)
    for i in range(len(base)):  # flip exactly 10 random bits of each hash
        for bit in rng.choice(64, 10, replace=False):
            flips[i] |= np.uint64(1) << np.uint64(bit)
    other = (base.view(np.uint64) ^ flips).view(np.int64)
    assert np.all(image_hash.hamming(base, other) == 10)
    shared = np.any(image_hash.band_values(base, positions) == image_hash.band_values(other, positions), axis=1)
    per_band = comb(54, 14) / comb(64, 14)
    assert abs(shared.mean() - (1 - (1 - per_band) ** 48)) < 0.02


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Groups of rows that show one picture (original + edited copies), and unrelated rows."""
    groups, rows = [], []
    for seed in range(10):
        img = natural_image(seed)
        group = [image_row([encode(img)], f"original {seed}")]
        group += [image_row([data], f"{name} copy of {seed}") for name, data in variants(img).items()]
        group.append(image_row([encode(img, "BMP")], f"lossless copy of {seed}"))
        groups.append(group)
    # A two-image row whose second image is a copy of picture 0: dropped although its first is new.
    groups[0].append(image_row([encode(natural_image(500)), encode(natural_image(0), "JPEG", quality=90)], "two images"))
    singles = [image_row([encode(natural_image(seed))], f"unrelated {seed}") for seed in range(100, 130)]
    singles.append(image_row([encode(natural_image(300)), encode(natural_image(301))], "two unrelated images"))
    singles.append(image_row([b"\x89PNG broken"], "unreadable image: not compared"))
    rows = [r for g in groups for r in g] + singles
    glob = write_rows(rows, tmp_path_factory.mktemp("images"), n_files=2)
    return {"groups": [[r["id"] for r in g] for g in groups], "singles": [r["id"] for r in singles], "glob": glob}


def test_step_keeps_exactly_one_row_per_planted_group_and_every_unrelated_row(spark, planted):
    out = image_dedup(spark.read.parquet(planted["glob"]), ImageDedupConfig()).select("id", "_reject").collect()
    verdict = {r["id"]: r["_reject"] for r in out}
    for group in planted["groups"]:
        kept = [i for i in group if verdict[i] is None]
        assert kept == [min(group)], "one row per group, the smallest id"
        for i in group:
            if i != kept[0]:
                assert (verdict[i]["step"], verdict[i]["reason"], verdict[i]["detail"]) == (STEP, REASON, kept[0])
    assert all(verdict[i] is None for i in planted["singles"])


def test_exact_only_catches_lossless_copies_but_not_edited_ones(spark, planted):
    cfg = ImageDedupConfig(near=False)
    out = {r["id"]: r["_reject"] for r in image_dedup(spark.read.parquet(planted["glob"]), cfg).select("id", "_reject").collect()}
    rejected = {i for i, v in out.items() if v is not None}
    # Per group only the PNG original and its BMP copy share pixels.
    assert len(rejected) == len(planted["groups"])
    assert all(sum(i in rejected for i in g) == 1 for g in planted["groups"])


@pytest.mark.parametrize("max_hamming", [64, 10])
def test_bucket_pairing_streams_over_sorted_batches_like_all_pairs_by_hand(max_hamming):
    """The pairing reads a partition sorted by bucket in batches, holding back the bucket a batch
    ends in: its pairs equal every within-bucket pair at most max_hamming bits apart, listed by
    hand, however the rows are cut into batches (buckets span batch ends here)."""
    import pyarrow as pa

    from curation.dedup.near_image import _CloseBucketPairs

    rng = np.random.default_rng(5)
    n = 300
    ids = [f"id{i:04d}" for i in range(n)]
    phashes = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    phashes[50:80] = phashes[0] ^ 0b111  # 3 bits from image 0: near copies
    rows = [(b, int(v), ids[i], int(phashes[i])) for i in range(n) for b in range(4)
            for v in [int(rng.integers(0, 12))]]  # 4 bands, 12 values: buckets of ~25 members
    rows.sort()
    expected = set()
    for (b, v), group in itertools.groupby(rows, key=lambda r: (r[0], r[1])):
        members = sorted({(r[2], r[3]) for r in group})
        for (a, ha), (c, hc) in itertools.combinations(members, 2):
            if ((ha ^ hc) & 0xFFFFFFFFFFFFFFFF).bit_count() <= max_hamming:
                expected.add((a, c))
    table = pa.table({"id": [r[2] for r in rows], "phash": pa.array([r[3] for r in rows], pa.int64()),
                      "band": pa.array([r[0] for r in rows], pa.int64()), "value": pa.array([r[1] for r in rows], pa.int64())})
    pairing = _CloseBucketPairs(all_pairs_bucket=1000, max_hamming=max_hamming)
    for size in (37, 100, len(rows)):
        out = pa.Table.from_batches(list(pairing(iter(table.to_batches(max_chunksize=size)))))
        found = list(zip(out.column("src").to_pylist(), out.column("dst").to_pylist()))
        assert set(found) == expected and len(expected) > 0
