"""Forward and forward+backward time of the tiny Keye model on CPU (a benchmark, not a test).

    python bench/model_step.py [--config configs/models/tiny.yaml] [--repeats 5]

Each case is one packed row of 4 samples: text, then per sample one image (grid 1 x 16 x 16
patches = 64 merged tokens) and, in the "video" cases, a 4-frame video (4 x 8 x 8 patches).
"fwd" is an inference forward (no grad, full logits); "fwd+bwd" a training step's forward and
backward (loss through lm_head on labelled positions only), with and without activation
checkpointing. Median and minimum of --repeats runs after a warm-up. Prints a table and writes
bench/results/model_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.model import KeyeForConditionalGeneration, load_model_config  # noqa: E402

IMG, VID, VS, VE = 151655, 151656, 151652, 151653


def packed_batch(text_per_sample: int, samples: int, video: bool, seed: int = 0) -> dict:
    """A packed row of `samples` samples: text, an image block, (a video block), text."""
    g = torch.Generator().manual_seed(seed)
    ids, labels, bounds = [], [], [0]
    image_grids, video_grids = [], []
    for _ in range(samples):
        text = torch.randint(0, 150000, (text_per_sample,), generator=g).tolist()
        half = text_per_sample // 2
        sample = text[:half] + [VS] + [IMG] * 64 + [VE]
        image_grids.append([1, 16, 16])
        if video:
            sample += [VS] + [VID] * 64 + [VE]
            video_grids.append([4, 8, 8])
        sample += text[half:]
        ids += sample
        labels += [-100] * (len(sample) - len(text[half:])) + text[half:]
        bounds.append(len(ids))
    batch = {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "cu_seqlens": torch.tensor(bounds, dtype=torch.int32),
        "pixel_values": torch.randn(samples * 256, 588, generator=g),
        "image_grid_thw": torch.tensor(image_grids),
    }
    if video:
        batch["pixel_values_videos"] = torch.randn(samples * 256, 588, generator=g)
        batch["video_grid_thw"] = torch.tensor(video_grids)
        batch["second_per_grid_ts"] = torch.full((samples,), 0.5)
    return batch


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median, min) seconds over `repeats` runs after a warm-up. On a shared CPU the minimum is
    the better estimate of the cost itself; the median shows what others' load does to it."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 4), round(min(times), 4)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "models" / "tiny.yaml"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "model_step.json"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    config = load_model_config(args.config)
    model = KeyeForConditionalGeneration(config)
    params = sum(p.numel() for p in model.parameters())
    rows = []
    for text, video in ((32, False), (128, False), (128, True)):
        batch = packed_batch(text, samples=4, video=video)
        tokens = batch["input_ids"].shape[1]
        patches = batch["pixel_values"].shape[0] + (batch["pixel_values_videos"].shape[0] if video else 0)
        for checkpointing in (False, True):
            model.train()
            if checkpointing:
                model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.activation_checkpointing_disable()

            def forward():
                with torch.no_grad():
                    model(**batch)

            def step():  # the training path: lm_head only on labelled positions
                model.zero_grad(set_to_none=True)
                model(**batch, return_logits=False).loss.backward()

            fwd_median, fwd_min = timed(forward, args.repeats)
            step_median, step_min = timed(step, args.repeats)
            rows.append(
                {
                    "tokens": tokens,
                    "vit_patches": patches,
                    "video": video,
                    "checkpointing": checkpointing,
                    "forward_s": fwd_median,
                    "forward_min_s": fwd_min,
                    "forward_backward_s": step_median,
                    "forward_backward_min_s": step_min,
                }
            )
    header = (
        f"{'tokens':>7} {'patches':>8} {'video':>6} {'ckpt':>5} {'fwd s':>8} {'(min)':>7} "
        f"{'fwd+bwd s':>10} {'(min)':>7}"
    )
    print(f"tiny Keye ({params / 1e6:.1f}M parameters, {params - 2 * config.vocab_size * config.hidden_size:,} "
          f"outside embeddings/lm_head), CPU threads={torch.get_num_threads()}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['tokens']:>7} {r['vit_patches']:>8} {str(r['video']):>6} {str(r['checkpointing']):>5} "
              f"{r['forward_s']:>8.3f} {r['forward_min_s']:>7.3f} "
              f"{r['forward_backward_s']:>10.3f} {r['forward_backward_min_s']:>7.3f}")
    result = {
        "benchmark": "model_step",
        "config": os.path.relpath(args.config, ROOT),
        "parameters": params,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        "repeats": args.repeats,
        "load_average_1min": round(os.getloadavg()[0], 2),  # others' work on a shared machine
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
