"""Photo-like image-caption corpora of realistic sizes, for the scale benchmark and memory tests.

    python bench/photos.py OUT --count 5000            # a corpus in all three source formats

Each image is a smooth colour field with mid-frequency structure and grain, so JPEG sizes behave
like photographs' (640x480 ~80-120 KB, 1920x1080 ~400-700 KB at quality 90) rather than like flat
test images (a few KB). Sizes are drawn from a mix of common photo shapes and a few PNGs; each
image's pixels and caption come from its own seed, so every image is distinct and the corpus is
the same bytes for the same (count, seed) on any machine.

A few percent are planted problems, as web data has them: exact copies (the same file again under
another name), re-encoded copies (the same picture at another JPEG quality: a near-duplicate image)
and broken files (truncated JPEGs, random bytes). `corpus.json` lists them.

The corpus is split over the three source formats build_pretrain reads: a folder of images with
sidecar .txt captions, WebDataset .tar shards, and a JSONL table whose image column holds paths
relative to the table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# (width, height, share) of the generated images; PNGs are 640x480 screenshots-like images.
SHAPES = [(640, 480, 0.55), (800, 600, 0.12), (1024, 768, 0.10), (1280, 720, 0.10), (1920, 1080, 0.08)]
PNG_SHARE = 0.05
EXACT_COPY_SHARE = 0.02
REENCODED_SHARE = 0.02
BROKEN_SHARE = 0.01
WORDS = (
    "a the red blue green small large old new dog cat bird tree house street river mountain city "
    "night morning people child woman man car boat bridge garden market window door table chair "
    "plate food cup book phone road field sky cloud snow beach sunset forest lake park wall sign "
    "standing sitting walking next to behind under near in front of with on at during"
).split()
TAR_IMAGES = 1000  # images per WebDataset shard


@dataclass(frozen=True)
class Item:
    index: int
    kind: str  # photo, png, exact_copy, reencoded, broken
    of: int  # the original's index for copies, else -1
    width: int
    height: int


def plan(count: int, seed: int) -> list[Item]:
    """Which image each index is; copies refer to an earlier original."""
    rng = np.random.default_rng(seed)
    shapes = np.array([(w, h) for w, h, _ in SHAPES])
    shares = np.array([s for _, _, s in SHAPES])
    items: list[Item] = []
    for i in range(count):
        u = rng.random()
        originals = [it.index for it in items[-500:] if it.kind in ("photo", "png")]
        if u < EXACT_COPY_SHARE and originals:
            src = items[int(rng.choice(originals))]
            items.append(Item(i, "exact_copy", src.index, src.width, src.height))
        elif u < EXACT_COPY_SHARE + REENCODED_SHARE and originals:
            src = items[int(rng.choice(originals))]
            items.append(Item(i, "reencoded", src.index, src.width, src.height))
        elif u < EXACT_COPY_SHARE + REENCODED_SHARE + BROKEN_SHARE:
            items.append(Item(i, "broken", -1, 640, 480))
        elif u < EXACT_COPY_SHARE + REENCODED_SHARE + BROKEN_SHARE + PNG_SHARE:
            items.append(Item(i, "png", -1, 640, 480))
        else:
            w, h = shapes[rng.choice(len(shapes), p=shares / shares.sum())]
            items.append(Item(i, "photo", -1, int(w), int(h)))
    return items


def pixels(index: int, width: int, height: int) -> Image.Image:
    """The photo-like picture of image `index`: a smooth colour field, mid-frequency structure and
    grain (the grain is what makes JPEG sizes realistic)."""
    rng = np.random.default_rng([index, 7])
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    mid = Image.fromarray(rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8))
    mid = mid.resize((width, height), Image.BILINEAR)
    field = np.asarray(low, dtype=np.float32) * 0.7 + np.asarray(mid, dtype=np.float32) * 0.3
    # Grain: a shared random tile, rolled by the image's own offsets (fast, still distinct bytes).
    grain = _grain_tile()
    dy, dx = rng.integers(0, grain.shape[0]), rng.integers(0, grain.shape[1])
    rolled = np.roll(grain, (dy, dx), axis=(0, 1))[:height, :width]
    field += rolled[:, :, None] * (4.0 if width * height < 1_000_000 else 2.0)
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))


_GRAIN: list[np.ndarray] = []


def _grain_tile() -> np.ndarray:
    if not _GRAIN:
        _GRAIN.append(np.random.default_rng(12345).standard_normal((1088, 1928)).astype(np.float32))
    return _GRAIN[0]


def caption(index: int) -> str:
    rng = np.random.default_rng([index, 11])
    words = rng.choice(WORDS, int(rng.integers(8, 24)))
    return f"photo {index}: " + " ".join(words)


def encode(item: Item) -> bytes:
    if item.kind == "broken":
        rng = np.random.default_rng([item.index, 13])
        if item.index % 2:
            return rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()  # not an image at all
        return encode(Item(item.index, "photo", -1, 640, 480))[:30_000]  # a truncated JPEG
    if item.kind == "png":
        buf = io.BytesIO()
        pixels(item.index, item.width, item.height).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()
    source = item.of if item.kind in ("exact_copy", "reencoded") else item.index
    quality = 75 if item.kind == "reencoded" else 90
    buf = io.BytesIO()
    pixels(source, item.width, item.height).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _caption_of(item: Item) -> str:
    # Exact copies repeat their original's caption (the same sample twice); the rest are distinct.
    return caption(item.of if item.kind == "exact_copy" else item.index)


def _suffix(item: Item) -> str:
    return ".png" if item.kind == "png" else ".jpg"


def _write_chunk(args: tuple[str, str, list[Item]]) -> int:
    """Write one chunk of items into its format's place; returns bytes of images written."""
    out, fmt, items = args
    root = Path(out)
    total = 0
    if fmt == "folder":
        for it in items:
            data = encode(it)
            total += len(data)
            sub = root / "folder" / f"{it.index // 1000:04d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"img{it.index:07d}{_suffix(it)}").write_bytes(data)
            (sub / f"img{it.index:07d}.txt").write_text(_caption_of(it))
    elif fmt == "tar":
        (root / "webdataset").mkdir(parents=True, exist_ok=True)
        path = root / "webdataset" / f"shard-{items[0].index:07d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for it in items:
                data = encode(it)
                total += len(data)
                for name, payload in ((f"{it.index:07d}{_suffix(it)}", data), (f"{it.index:07d}.txt", _caption_of(it).encode())):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime = len(payload), 0
                    tar.addfile(info, io.BytesIO(payload))
    else:  # table: images beside a JSONL, referenced by relative path
        images = root / "table" / "images"
        images.mkdir(parents=True, exist_ok=True)
        lines = []
        for it in items:
            data = encode(it)
            total += len(data)
            name = f"img{it.index:07d}{_suffix(it)}"
            (images / name).write_bytes(data)
            lines.append(json.dumps({"image": f"images/{name}", "caption": _caption_of(it)}))
        (root / "table" / f"part-{items[0].index:07d}.jsonl").write_text("\n".join(lines) + "\n")
    return total


def generate(out: str | Path, count: int, seed: int = 0, workers: int | None = None) -> dict:
    """Write the corpus under `out` (folder/, webdataset/, table/, corpus.json); returns corpus.json.

    Reuses a complete corpus of the same count and seed instead of writing it again.
    """
    out = Path(out)
    meta_path = out / "corpus.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta["count"] == count and meta["seed"] == seed:
            return meta
    items = plan(count, seed)
    # A third of the items per format, in runs so copies land in every format.
    formats = ["folder", "tar", "table"]
    size = max(1, min(TAR_IMAGES, -(-count // 3)))
    chunks = [(str(out), formats[(start // size) % 3], items[start : start + size]) for start in range(0, count, size)]
    workers = workers or os.cpu_count() or 1
    with ProcessPoolExecutor(workers) as pool:
        image_bytes = sum(pool.map(_write_chunk, chunks))
    kinds = {k: sum(1 for it in items if it.kind == k) for k in ("photo", "png", "exact_copy", "reencoded", "broken")}
    meta = {
        "count": count,
        "seed": seed,
        "image_bytes": image_bytes,
        "kinds": kinds,
        "sources": [str(out / name) for name in ("folder", "webdataset", "table") if (out / name).exists()],
    }
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    meta = generate(args.out, args.count, args.seed)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
