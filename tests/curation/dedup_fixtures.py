"""Test data for the dedup and decontamination tests: corpora with planted near-duplicates, images
with edited copies, a union-find for ground truth (imported by the test modules; not a conftest)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pyarrow.parquet as pq

from curation import schema

# --- text -------------------------------------------------------------------------------------


def english_vocab(rng: random.Random, size: int = 4000) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)})


def chinese_vocab(size: int = 3000) -> list[str]:
    return [chr(0x4E00 + i) for i in range(size)]


def random_doc(rng: random.Random, vocab: list[str], length: int) -> list[str]:
    # Zipf-like word frequencies, as in real text: a few frequent tokens, a long tail.
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    return rng.choices(vocab, weights=weights, k=length)


def edit(rng: random.Random, tokens: list[str], vocab: list[str], n_edits: int) -> list[str]:
    """A copy with `n_edits` random single-token replacements, deletions or insertions."""
    out = list(tokens)
    for _ in range(n_edits):
        op, pos = rng.choice("rdi"), rng.randrange(len(out))
        if op == "r":
            out[pos] = rng.choice(vocab)
        elif op == "d" and len(out) > 10:
            del out[pos]
        else:
            out.insert(pos, rng.choice(vocab))
    return out


EDITS = (1, 2, 3, 4, 6, 9, 14)


def planted_corpus(seed: int, lang: str, n_bases: int = 50, n_singles: int = 50) -> list[str]:
    """Texts: `n_bases` originals each with 0-3 edited copies (1 to 14 edits: Jaccard from ~0.97
    down to ~0.4 with 5-gram shingles), plus unrelated singles."""
    rng = random.Random(seed)
    if lang == "zh":
        vocab, join, lengths = chinese_vocab(), "", (200, 400)
    else:
        vocab, join, lengths = english_vocab(rng), " ", (150, 300)
    texts = []
    for _ in range(n_bases + n_singles):
        base = random_doc(rng, vocab, rng.randint(*lengths))
        texts.append(join.join(base))
        if _ < n_bases:
            for _copy in range(rng.randint(0, 3)):
                texts.append(join.join(edit(rng, base, vocab, rng.choice(EDITS))))
    return texts


def text_rows(texts: list[str], source: str = "test") -> list[dict]:
    return [schema.make_row(source, "text", [schema.message("document", t)], lang=None) for t in texts]


def write_rows(rows: list[dict], folder: Path, n_files: int = 1) -> str:
    """Rows as Parquet file(s) in `folder`; returns the glob Spark reads."""
    folder.mkdir(parents=True, exist_ok=True)
    table = schema.rows_to_table(rows)
    step = max(1, -(-len(rows) // n_files))
    for i in range(n_files):
        pq.write_table(table.slice(i * step, step), folder / f"part-{i:05d}.parquet")
    return str(folder / "part-*.parquet")


def write_input_folder(rows: list[dict], folder: Path, n_files: int = 1) -> None:
    """An input shard folder as a job leaves it (shards + a manifest listing them), without
    running a job for it."""
    from curation.schema.manifest import file_sha256, write_manifest

    write_rows(rows, folder, n_files)
    shards = [
        {"path": f.name, "rows": pq.read_metadata(f).num_rows, "bytes": f.stat().st_size, "sha256": file_sha256(f)}
        for f in sorted(folder.glob("part-*.parquet"))
    ]
    write_manifest(folder, {"schema_version": schema.SCHEMA_VERSION, "rows": len(rows), "shards": shards})


class UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, x):
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> set[frozenset]:
        out: dict = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), set()).add(x)
        return {frozenset(g) for g in out.values()}


# --- images -----------------------------------------------------------------------------------


def natural_image(seed: int, size: tuple[int, int] = (256, 192)):
    """A smooth random picture (blurred blobs and shapes): pHash behaves on it as on photos."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = random.Random(seed)
    w, h = size
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(20, w // 2), y0 + rng.randrange(20, h // 2)
        color = tuple(rng.randrange(256) for _ in range(3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=color)
    return img.filter(ImageFilter.GaussianBlur(3))


def encode(img, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def variants(img) -> dict[str, bytes]:
    """Copies a near-duplicate detector must catch: re-encoded, resized, lightly cropped."""
    w, h = img.size
    cx, cy = int(w * 0.02), int(h * 0.02)
    return {
        "jpeg": encode(img, "JPEG", quality=70),
        "resized": encode(img.resize((w // 2, h // 2))),
        "upsized_jpeg": encode(img.resize((int(w * 1.5), int(h * 1.5))), "JPEG", quality=85),
        "cropped": encode(img.crop((cx, cy, w - cx, h - cy))),
    }


def image_row(images: list[bytes], caption: str, source: str = "test") -> dict:
    parts = [schema.image_part(i) for i in range(len(images))]
    return schema.make_row(
        source, "caption", [schema.message("document", *parts, caption)], [schema.image_entry(b) for b in images]
    )
