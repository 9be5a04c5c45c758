"""`spark-submit jobs/build_video.py` on long videos: throughput and memory of the whole job.

    python bench/video_job.py [--videos 6] [--minutes 5] [--long-minutes 30] [--work out/bench-video]

Makes `--videos` videos of `--minutes` at 854x480 15 fps and one of `--long-minutes` at 640x360
(H.264 + AAC, espeak-ng sentences every 5 s, so pocketsphinx has speech to work on), then runs the
job over them with local[2] while sampling the peak RSS of the driver JVM and the Python workers
every 0.5 s (bench/scale.py's sampler). The point: frames are streamed and only the planned ones
kept, so a worker's memory follows the frames a video keeps (at most 24,576 tokens' worth), not
its length. Writes bench/results/video_job.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from hostinfo import cpu_model  # noqa: E402
from scale import sampled_run  # noqa: E402

from synthesis.video.media import place, speak, write_video  # noqa: E402

SENTENCES = ["the red ball rolls across the floor", "now the blue square moves up", "a green light turns on",
             "the camera looks at the window", "we count three boxes on the table"]


def make_video(path: Path, seconds: float, size: tuple[int, int], fps: int, seed: int) -> Path:
    if path.exists():
        return path
    h, w = size
    rng = np.random.default_rng(seed)
    colour = rng.integers(40, 255, size=3).astype(np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    base = ((xx // 32 + yy // 32) % 2 * 50 + 60).astype(np.uint8)

    def draw(i: int, t: float) -> np.ndarray:
        scene = int(t // 20)  # a new scene every 20 s
        frame = np.stack([np.roll(base, scene * 16, axis=0), base, np.full_like(base, (scene * 37) % 200 + 30)], -1)
        x = int((w - 100) * (0.5 + 0.5 * np.sin(t / 3 + seed)))
        frame[h // 3:h // 3 + 100, x:x + 100] = colour
        return frame

    voices = {text: speak(text) for text in SENTENCES}
    clips = [(start, voices[SENTENCES[k % len(SENTENCES)]]) for k, start in enumerate(np.arange(1.0, seconds - 4, 5.0))]
    tmp = path.with_suffix(".part.mp4")
    write_video(tmp, [i / fps for i in range(int(seconds * fps))], draw, size, audio=place(clips, seconds))
    tmp.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--long-minutes", type=float, default=30.0)
    parser.add_argument("--work", default="out/bench-video")
    parser.add_argument("--out", default="bench/results/video_job.json")
    args = parser.parse_args()
    work = Path(args.work)
    videos = work / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for k in range(args.videos):
        make_video(videos / f"v{k:03d}.mp4", args.minutes * 60, (480, 854), 15, k)
    if args.long_minutes > 0:
        make_video(videos / "long.mp4", args.long_minutes * 60, (360, 640), 15, 99)
    made = time.perf_counter() - t0
    total_seconds = args.videos * args.minutes * 60 + args.long_minutes * 60
    size = sum(p.stat().st_size for p in videos.glob("*.mp4"))
    print(f"videos: {total_seconds / 3600:.2f} h, {size / 2**20:.0f} MiB (made in {made:.0f} s)", file=sys.stderr)

    out = work / "shards"
    cmd = [str(ROOT / ".venv" / "bin" / "spark-submit"), "--master", "local[2]", "jobs/build_video.py",
           f"sources={videos}", f"output={out}", "group_size=4"]  # 7 videos: two groups, two tasks
    load_before = os.getloadavg()
    code, seconds, peak = sampled_run(cmd, work / "job.log", [out / "_work"])
    if code != 0:
        raise SystemExit(f"build_video failed ({code}); see {work / 'job.log'}")
    manifest = json.loads((out / "_manifest.json").read_text())
    result = {
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "input": {"videos": args.videos + (1 if args.long_minutes > 0 else 0), "hours": round(total_seconds / 3600, 3),
                  "bytes": size, "sizes": "854x480 15 fps x videos, 640x360 15 fps long", "speech": "pocketsphinx"},
        "seconds": round(seconds, 1),
        "video_seconds_per_wall_second": round(total_seconds / seconds, 2),
        "video_seconds_per_core_second": round(total_seconds / seconds / 2, 2),
        "rows": manifest["rows"], "rejected": manifest["rejects"]["rows"], "output_bytes": manifest["bytes"],
        "peak_rss_mib": {k: round(v / 2**20) for k, v in peak.items() if k != "staging_disk"},
        "peak_work_folder_mib": round(peak["staging_disk"] / 2**20),
        "load_before": load_before, "load_after": os.getloadavg(),
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
