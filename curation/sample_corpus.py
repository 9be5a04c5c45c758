"""The bundled sample corpus, made by code so that the repository carries no binary data.

    python -m curation.sample_corpus out/sample

writes the same bytes on every machine for the same seed:

    folder/       images with sidecar .txt captions             (English and Chinese)
    wds/          WebDataset tar shards (.jpg + .txt or .json)
    table.parquet image bytes + caption
    table.jsonl   image paths relative to the table (images in table_images/) + text
    _planted.json every deliberately broken input with the reject reason it must get,
                  plus the exact duplicates and mismatched captions that were planted

Images are simple scenes (coloured shapes on a background) with captions that say what is in
them, so a real CLIP model can tell matched from mismatched pairs.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import struct
import sys
import tarfile
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

COLORS = {
    "red": ((220, 40, 40), "红色"),
    "green": ((40, 170, 60), "绿色"),
    "blue": ((40, 80, 220), "蓝色"),
    "yellow": ((235, 210, 40), "黄色"),
    "purple": ((140, 60, 180), "紫色"),
    "orange": ((245, 140, 30), "橙色"),
    "black": ((20, 20, 20), "黑色"),
    "white": ((245, 245, 245), "白色"),
}
SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形", "ring": "圆环", "cross": "十字"}
EN_TEMPLATES = [
    "A {color} {shape} on a {bg} background.",
    "{count_word} {color} {shape}s drawn on a plain {bg} backdrop.",
    "Simple illustration: {color} {shape} shapes over {bg}.",
    "A flat graphic showing {count_word} {color} {shape}s against a {bg} field.",
]
ZH_TEMPLATES = ["{bg}背景上的{count}个{color}{shape}。", "一张简单的图：{bg}底色上画着{count}个{color}{shape}。"]
COUNT_WORDS = {1: "One", 2: "Two", 3: "Three"}

N_FOLDER, N_WDS_SHARDS, N_WDS_PER_SHARD, N_PARQUET, N_JSONL = 200, 2, 60, 100, 100
N_DUPLICATES, N_MISMATCHED = 12, 16
VERSION = 1  # bump when the generator changes, so stale corpora are rebuilt


def scene(rng: random.Random) -> dict:
    color, bg = rng.sample(sorted(COLORS), 2)
    return {
        "shape": rng.choice(sorted(SHAPES)),
        "color": color,
        "bg": bg,
        "count": rng.randint(1, 3),
        "width": rng.randrange(96, 320, 8),
        "height": rng.randrange(96, 320, 8),
        "seed": rng.randrange(2**31),
    }


def draw(s: dict, fmt: str = "JPEG") -> bytes:
    from PIL import Image, ImageDraw

    rng = random.Random(s["seed"])
    img = Image.new("RGB", (s["width"], s["height"]), COLORS[s["bg"]][0])
    pen = ImageDraw.Draw(img)
    fill = COLORS[s["color"]][0]
    for _ in range(s["count"]):
        r = rng.randint(min(s["width"], s["height"]) // 8, min(s["width"], s["height"]) // 4)
        cx, cy = rng.randint(r, s["width"] - r), rng.randint(r, s["height"] - r)
        box = (cx - r, cy - r, cx + r, cy + r)
        if s["shape"] == "circle":
            pen.ellipse(box, fill=fill)
        elif s["shape"] == "ring":
            pen.ellipse(box, outline=fill, width=max(2, r // 4))
        elif s["shape"] == "square":
            pen.rectangle(box, fill=fill)
        elif s["shape"] == "triangle":
            pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        elif s["shape"] == "cross":
            pen.rectangle((cx - r, cy - r // 4, cx + r, cy + r // 4), fill=fill)
            pen.rectangle((cx - r // 4, cy - r, cx + r // 4, cy + r), fill=fill)
        else:  # star
            import math

            points = [
                (cx + (r if k % 2 == 0 else r // 2) * math.sin(k * math.pi / 5),
                 cy - (r if k % 2 == 0 else r // 2) * math.cos(k * math.pi / 5))
                for k in range(10)
            ]
            pen.polygon(points, fill=fill)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def caption(s: dict, rng: random.Random, lang: str) -> str:
    if lang == "zh":
        return rng.choice(ZH_TEMPLATES).format(
            bg=COLORS[s["bg"]][1], color=COLORS[s["color"]][1], shape=SHAPES[s["shape"]], count=s["count"]
        )
    template = rng.choice(EN_TEMPLATES)
    if s["count"] == 1 and "{count_word}" in template:
        template = EN_TEMPLATES[0]
    return template.format(color=s["color"], shape=s["shape"], bg=s["bg"], count_word=COUNT_WORDS[s["count"]])


def mismatched(s: dict, rng: random.Random) -> dict:
    """A scene that shares nothing with `s`: used to write a caption that does not fit the image."""
    other = dict(s)
    other["shape"] = rng.choice(sorted(set(SHAPES) - {s["shape"]}))
    other["color"] = rng.choice(sorted(set(COLORS) - {s["color"], s["bg"]}))
    other["bg"] = rng.choice(sorted(set(COLORS) - {s["color"], s["bg"], other["color"]}))
    return other


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid PNG header declaring a huge image over a tiny compressed body."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b"")


def generate(root: str | Path, seed: int = 0) -> Path:
    """Write the corpus under `root` (skipped if already complete) and return `root`."""
    root = Path(root)
    marker = root / "_planted.json"
    if marker.exists() and json.loads(marker.read_text()).get("version") == [VERSION, seed]:
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(seed)
    planted = {"version": [VERSION, seed], "bad": [], "duplicates": [], "mismatched": []}
    items = []  # (scene, caption, lang) for every good pair
    n_good = N_FOLDER + N_WDS_SHARDS * N_WDS_PER_SHARD + N_PARQUET + N_JSONL
    for i in range(n_good):
        s = scene(rng)
        lang = "zh" if i % 4 == 3 else "en"
        if i % 31 == 7 and len(planted["mismatched"]) < N_MISMATCHED:
            items.append((s, caption(mismatched(s, rng), rng, lang), lang, True))
        else:
            items.append((s, caption(s, rng, lang), lang, False))
    images = [draw(s) for s, *_ in items]
    # Exact duplicates: the same image bytes and caption appear again in a later source.
    dup_of = {n_good - 1 - k: k for k in range(N_DUPLICATES)}
    for target, src in dup_of.items():
        images[target] = images[src]
        items[target] = items[src]

    def note(i: int, origin: str, source: str) -> None:
        if items[i][3] and i not in dup_of:
            planted["mismatched"].append({"source": source, "origin": origin})
        if i in dup_of:
            planted["duplicates"].append({"source": source, "origin": origin, "copy_of_item": dup_of[i]})

    # folder/
    folder = root / "folder"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(N_FOLDER):
        name = f"img_{i:04d}"
        (folder / f"{name}.jpg").write_bytes(images[i])
        (folder / f"{name}.txt").write_text(items[i][1], encoding="utf-8")
        note(i, f"{name}.jpg", "folder")
    k = N_FOLDER
    # wds/
    wds = root / "wds"
    wds.mkdir(exist_ok=True)
    for shard in range(N_WDS_SHARDS):
        with tarfile.open(wds / f"shard-{shard:04d}.tar", "w", format=tarfile.GNU_FORMAT) as tar:
            for j in range(N_WDS_PER_SHARD):
                key = f"s{shard:02d}_{j:04d}"
                if j % 2:
                    text = json.dumps({"caption": items[k][1], "lang": items[k][2]}, ensure_ascii=False).encode()
                    _add(tar, f"{key}.json", text)
                else:
                    _add(tar, f"{key}.txt", items[k][1].encode())
                _add(tar, f"{key}.jpg", images[k])
                note(k, f"shard-{shard:04d}.tar#{key}", "wds")
                k += 1
            if shard == 0:  # planted: empty caption, and a member that climbs out of the shard
                _add(tar, "bad_empty.jpg", images[0])
                _add(tar, "bad_empty.txt", b"")
                _add(tar, "../escape.txt", b"this member must never be extracted")
    planted["bad"] += [
        {"source": "wds", "origin": "shard-0000.tar#bad_empty", "reason": "text_empty"},
        {"source": "wds", "origin": "shard-0000.tar#../escape.txt", "reason": "unsafe_tar_path"},
    ]
    # table.parquet
    rows = {"image": [], "caption": []}
    for _ in range(N_PARQUET):
        rows["image"].append(images[k])
        rows["caption"].append(items[k][1])
        note(k, f"table.parquet#row={len(rows['image']) - 1}", "table")
        k += 1
    wide = {"shape": "square", "color": "red", "bg": "white", "count": 1, "width": 6000, "height": 28, "seed": 1}
    rows["image"].append(draw(wide, "PNG"))
    rows["caption"].append("A very long thin red strip.")
    planted["bad"].append({"source": "table", "origin": f"table.parquet#row={N_PARQUET}", "reason": "aspect_ratio_too_extreme"})
    pq.write_table(pa.table(rows, schema=pa.schema([("image", pa.binary()), ("caption", pa.string())])), root / "table.parquet")
    # table.jsonl with relative image paths
    (root / "table_images").mkdir(exist_ok=True)
    lines = []
    for j in range(N_JSONL):
        rel = f"table_images/{j:04d}.jpg"
        (root / rel).write_bytes(images[k])
        lines.append(json.dumps({"image": rel, "text": items[k][1]}, ensure_ascii=False).encode())
        k += 1
    (root / "table_images" / "long.jpg").write_bytes(images[1])
    lines.append(json.dumps({"image": "table_images/long.jpg", "text": "word " * 210_000}).encode())
    lines.append(json.dumps({"image": "table_images/missing.jpg", "text": "An image that is not there."}).encode())
    lines.append(json.dumps({"image": "../../etc/hostname", "text": "A path that leaves the table."}).encode())
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    (root / "table.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    for j in range(N_JSONL):
        note(N_FOLDER + N_WDS_SHARDS * N_WDS_PER_SHARD + N_PARQUET + j, f"table.jsonl#offset={offsets[j]}", "table")
    planted["bad"] += [
        {"source": "table", "origin": f"table.jsonl#offset={offsets[N_JSONL]}", "reason": "text_too_long"},
        {"source": "table", "origin": f"table.jsonl#offset={offsets[N_JSONL + 1]}", "reason": "image_not_found"},
        {"source": "table", "origin": f"table.jsonl#offset={offsets[N_JSONL + 2]}", "reason": "unsafe_image_path"},
    ]
    # folder/: broken files
    good_jpeg = images[2]
    bad_files = {
        "bad_corrupt.jpg": (good_jpeg[:4] + bytes(random.Random(seed + 1).randrange(256) for _ in range(2048)), "image_decode_error"),
        "bad_truncated.png": (_png(items[3][0])[: len(_png(items[3][0])) // 2], "image_truncated"),
        "bad_zero.jpg": (b"", "image_empty"),
        "bad_bomb.png": (bomb_png(), "image_too_many_pixels"),
        "bad_tiny.png": (_png({**items[4][0], "width": 12, "height": 12}), "image_too_small"),
    }
    for name, (data, reason) in bad_files.items():
        (folder / name).write_bytes(data)
        (folder / name).with_suffix(".txt").write_text(f"A caption for {name}.")
        planted["bad"].append({"source": "folder", "origin": name, "reason": reason})
    (folder / "bad_latin1.jpg").write_bytes(images[5])
    (folder / "bad_latin1.txt").write_bytes("Caf\xe9 cr\xe8me on a table.".encode("latin-1"))
    (folder / "bad_mojibake.jpg").write_bytes(images[6])
    (folder / "bad_mojibake.txt").write_text("CafÃ© crÃ¨me Ã  la franÃ§aise, trÃ¨s bien.", encoding="utf-8")
    (folder / "orphan_caption.txt").write_text("A caption whose image is missing.")
    planted["bad"] += [
        {"source": "folder", "origin": "bad_latin1.jpg", "reason": "text_not_utf8"},
        {"source": "folder", "origin": "bad_mojibake.jpg", "reason": "text_mojibake"},
        {"source": "folder", "origin": "orphan_caption.txt", "reason": "image_missing"},
    ]
    planted["counts"] = {"good_pairs": n_good, "bad_inputs": len(planted["bad"])}
    (root / "_planted.json").write_text(json.dumps(planted, indent=2, ensure_ascii=False) + "\n")
    return root


def _png(s: dict) -> bytes:
    return draw(s, "PNG")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def source_paths(root: str | Path) -> list[str]:
    root = Path(root)
    return [str(root / "folder"), str(root / "wds"), str(root / "table.parquet"), str(root / "table.jsonl")]


if __name__ == "__main__":
    print(generate(sys.argv[1] if len(sys.argv) > 1 else "out/sample"))
