"""Benchmark (not a test): OCR rendering speed per core, beside TRDG on the same texts.

    python bench/render.py [--lines 400] [--pages 30] [--repeats 3] [--trdg-python .venv-trdg/bin/python]

Measures, each in one single-threaded process (so the figure is per core):
  * keyeforge lines/s: the line layout at font size 32 px, effects on (the default mix of rotation,
    skew, perspective, blur, noise, contrast, lighting, random JPEG quality), encoded to JPEG;
  * keyeforge lines/s with effects off;
  * keyeforge pages/s: the document-page layout, effects on, encoded to JPEG;
  * TRDG lines/s (the `trdg` package, in its own venv because it needs Pillow<10): the same texts at
    size 32, random skew up to 4 degrees, random blur, its default noise background, each image
    encoded to JPEG too so that both sides produce storable bytes.
Texts: lines of the shipped English and Chinese samples, half each. Best of `repeats` runs (the
machine is shared). Prints a table and writes bench/results/render.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
from hostinfo import cpu_model  # noqa: E402

from synthesis.ocr_render import corpus, fonts, sample  # noqa: E402
from synthesis.ocr_render.config import EffectsConfig, LayoutConfig, RenderConfig  # noqa: E402
from synthesis.ocr_render.corpus import CorpusConfig  # noqa: E402

SIZE = 32

TRDG_SCRIPT = r"""
import io, json, sys, time
from trdg.generators import GeneratorFromStrings
spec = json.load(open(sys.argv[1]))

def run(lang, texts, font_files):
    gen = GeneratorFromStrings(texts, count=len(texts), fonts=font_files, language=lang, size=spec["size"],
                               skewing_angle=4, random_skew=True, blur=1, random_blur=True)
    for img, _ in gen:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=90)

best, by_group = 0.0, {}
for _ in range(spec["repeats"]):
    start, done = time.perf_counter(), 0
    for name, lang, texts, font_files in spec["groups"]:
        t0 = time.perf_counter()
        run(lang, texts, font_files)
        by_group[name] = max(by_group.get(name, 0.0), len(texts) / (time.perf_counter() - t0))
        done += len(texts)
    best = max(best, done / (time.perf_counter() - start))
    name, lang, texts, font_files = spec["best_case"]
    t0 = time.perf_counter()
    run(lang, texts, font_files)
    by_group[name] = max(by_group.get(name, 0.0), len(texts) / (time.perf_counter() - t0))
print(json.dumps({"lines_per_s": best, "by_language": by_group}))
"""


def texts(n: int) -> dict[str, list[str]]:
    cfg, rng = CorpusConfig(), random.Random(0)
    limits = LayoutConfig().line_max_chars
    return {lang: [corpus.sentence(rng, cfg, lang, limits[lang]) for _ in range(n // 2)] for lang in ("en", "zh")}


def ours(n: int, layout: str, effects: bool, corpus_files: dict[str, str], repeats: int, pool) -> float:
    cfg = RenderConfig(
        seed=1,
        corpus=CorpusConfig(corpora={k: [v] for k, v in corpus_files.items()}, mix={"sentence": 1.0}),
        layout=dataclasses.replace(LayoutConfig(), line_font_size=[SIZE, SIZE]),
        effects=EffectsConfig(enabled=effects),
    )
    for i in range(10):  # warm the font caches
        sample.render(10_000 + i, cfg, pool, layout=layout)
    best = 0.0
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            sample.render(r * n + i, cfg, pool, layout=layout)
        best = max(best, n / (time.perf_counter() - start))
    return best


def trdg(python: str, groups: list, best_case: list, repeats: int) -> dict | None:
    if not Path(python).exists():
        print(f"TRDG skipped: {python} not found (python3.11 -m venv .venv-trdg && "
              ".venv-trdg/bin/pip install trdg 'pillow==9.5.0')", file=sys.stderr)
        return None
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({"groups": groups, "best_case": best_case, "size": SIZE, "repeats": repeats},
                                   ensure_ascii=False))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"}
        out = subprocess.run([python, "-c", TRDG_SCRIPT, str(spec)], capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        print(f"TRDG failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_avg_at_start": list(os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=400)
    ap.add_argument("--pages", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--trdg-python", default=str(ROOT / ".venv-trdg" / "bin" / "python"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "render.json"))
    args = ap.parse_args()
    cv2.setNumThreads(1)
    info = machine()
    pool = fonts.FontPool(fonts.discover())
    sample_texts = texts(args.lines)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for lang, lines in sample_texts.items():
            files[lang] = str(Path(tmp) / f"{lang}.txt")
            Path(files[lang]).write_text("\n".join(lines) + "\n", encoding="utf-8")
        lines_fx = ours(args.lines, "line", True, files, args.repeats, pool)
        lines_clean = ours(args.lines, "line", False, files, args.repeats, pool)
        pages_fx = ours(args.pages, "page", True, files, args.repeats, pool)
    en_fonts = sorted({f.path for f in pool.faces if fonts.covers(f, "".join(sample_texts["en"]))})
    zh_fonts = sorted({f.path for f in pool.faces if f.index == 0 and fonts.covers(f, "".join(sample_texts["zh"]))})
    latin = sorted({f.path for f in pool.faces if not fonts.covers(f, "中") and fonts.covers(f, "".join(sample_texts["en"]))})
    groups = [["en", "en", sample_texts["en"], en_fonts], ["zh", "cn", sample_texts["zh"], zh_fonts]]
    best_case = ["en_latin_fonts_only", "en", sample_texts["en"], latin]
    trdg_result = trdg(args.trdg_python, groups, best_case, args.repeats)
    trdg_lines = trdg_result["lines_per_s"] if trdg_result else None
    best = (trdg_result or {}).get("by_language", {}).get("en_latin_fonts_only")
    result = {
        "machine": info,
        "settings": {"font_size_px": SIZE, "lines": args.lines, "pages": args.pages, "repeats": args.repeats,
                     "threads_per_process": 1},
        "keyeforge": {"lines_per_s_per_core_effects": round(lines_fx, 1),
                      "lines_per_s_per_core_clean": round(lines_clean, 1),
                      "pages_per_s_per_core_effects": round(pages_fx, 2)},
        "trdg": {"lines_per_s_per_core_effects": round(trdg_lines, 1) if trdg_lines else None,
                 "by_language": {k: round(v, 1) for k, v in (trdg_result or {}).get("by_language", {}).items()},
                 "note": "TRDG opens the font file for every image (CJK collections are ~17 MB each); "
                         "en_latin_fonts_only is its best case, English with small Latin fonts only"},
        "speedup_lines_vs_trdg": round(lines_fx / trdg_lines, 2) if trdg_lines else None,
        "speedup_lines_vs_trdg_best_case": round(lines_fx / best, 2) if best else None,
        "goals": {"lines_vs_trdg": ">= 2x", "pages_per_s_per_core": ">= 2"},
    }
    rows = [
        ("keyeforge line, effects on", f"{lines_fx:.1f} lines/s"),
        ("keyeforge line, effects off", f"{lines_clean:.1f} lines/s"),
        ("TRDG line, effects on", f"{trdg_lines:.1f} lines/s" if trdg_lines else "n/a"),
        ("speed-up vs TRDG (effects on)", f"{result['speedup_lines_vs_trdg']}x" if trdg_lines else "n/a"),
        ("TRDG best case: en, Latin fonts", f"{best:.1f} lines/s" if best else "n/a"),
        ("speed-up vs TRDG best case", f"{result['speedup_lines_vs_trdg_best_case']}x" if best else "n/a"),
        ("keyeforge page, effects on", f"{pages_fx:.2f} pages/s"),
    ]
    print(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load_avg_at_start'][0]:.1f}; per core (1 thread)")
    print(f"| {'renderer':32} | {'per core':>16} |\n|{'-' * 34}|{'-' * 18}|")
    for name, value in rows:
        print(f"| {name:32} | {value:>16} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
