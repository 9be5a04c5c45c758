"""CLIP scoring throughput of curation.clip_model (no Spark), and on a GPU the
agreement of its fp16 scores with fp32.

    python bench/clip_score.py [--model ViT-B-32] [--images 256] [--batch 64]

Random weights of the named architecture are saved to a file and loaded through the same path as
real weights (clip.pretrained=FILE), so the numbers are those of the real network's size. Prints a
table and writes bench/results/clip_score_MODEL.json (under $OUT instead when OUT is set).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation.clip_model import ClipConfig, ClipModel, register_configs  # noqa: E402


def images(n: int) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 320, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def measure(cfg: ClipConfig, data: list[bytes], texts: list[str], batch: int) -> tuple[float, np.ndarray]:
    model = ClipModel(cfg)
    model.scores(data[:batch], texts[:batch])  # warm-up: kernels, allocator, tokenizer caches
    if model.device == "cuda":
        import torch

        torch.cuda.synchronize()
    start = time.perf_counter()
    scores = np.concatenate([model.scores(data[i : i + batch], texts[i : i + batch]) for i in range(0, len(data), batch)])
    if model.device == "cuda":
        torch.cuda.synchronize()
    return len(data) / (time.perf_counter() - start), scores


def main() -> None:
    import open_clip
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    register_configs(ClipConfig())  # so the built-in tiny-random can be measured too
    torch.manual_seed(0)
    weights = Path(tempfile.mkdtemp()) / "random.pt"
    torch.save(open_clip.create_model(args.model).state_dict(), weights)
    data = images(args.images)
    texts = [f"a photo of object number {i}" for i in range(args.images)]

    rows, reference = [], None
    runs = [("cpu", "fp32")] + ([("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "bf16")] if torch.cuda.is_available() else [])
    for device, precision in runs:
        cfg = ClipConfig(model=args.model, pretrained=str(weights), device=device, precision=precision)
        rate, scores = measure(cfg, data, texts, args.batch)
        reference = scores if reference is None else reference
        rows.append({"device": device, "precision": precision, "images_per_s": round(rate, 1),
                     "max_abs_diff_vs_cpu_fp32": float(np.max(np.abs(scores - reference)))})
    machine = {
        "host": platform.node(), "cpu_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "model": args.model, "images": args.images, "batch": args.batch,
    }
    print(f"CLIP scoring, {args.model} (random weights), {args.images} JPEG images 320x256, batch {args.batch}")
    print(f"{'device':8}{'precision':>10}{'images/s':>12}{'max |diff| vs CPU fp32':>26}")
    for r in rows:
        print(f"{r['device']:8}{r['precision']:>10}{r['images_per_s']:>12}{r['max_abs_diff_vs_cpu_fp32']:>26.2e}")
    out_dir = Path(os.environ.get("OUT") or Path(__file__).parent / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"clip_score_{args.model}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")



if __name__ == "__main__":
    main()
