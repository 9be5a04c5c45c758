"""Video throughput: seconds of video per core-second for decode + Keye frame sampling + resize +
JPEG encode on a 720p file, beside a seek-per-frame baseline and `ffmpeg -vf fps=2` to files, and
the same with pocketsphinx speech recognition.

    python bench/video.py [--seconds 60] [--out bench/results/video.json]

The test video: 1280x720 at 30 fps H.264 (keyframe every 250 frames, x264's default), a moving
scene and espeak-ng sentences every 5 s in an AAC track. Every method takes the same frames (the
Keye plan: 2 fps) at the same stored size and encodes them as the same JPEG quality. Core-seconds
are the process's user + system CPU time (children's for ffmpeg), so decoder threads count.
Goals (issue 18): >= 20x real time per core without ASR, >= 2x with pocketsphinx.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import numpy as np  # noqa: E402
from hostinfo import cpu_model  # noqa: E402
from PIL import Image  # noqa: E402

from synthesis.video import frames as framelib  # noqa: E402
from synthesis.video.decode import JPEG_QUALITY, open_video  # noqa: E402
from synthesis.video.media import place, speak, write_video  # noqa: E402
from synthesis.video.process import process_item  # noqa: E402
from synthesis.video.source import VideoConfig  # noqa: E402
from synthesis.video.speech import Recognizer, SpeechConfig  # noqa: E402

SENTENCES = ["the red ball rolls across the floor", "now the blue square moves up", "a green light turns on",
             "the camera looks at the window", "we count three boxes on the table"]


def make_video(path: Path, seconds: float) -> Path:
    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w]
    base = ((xx // 40 + yy // 40) % 2 * 60 + 40).astype(np.uint8)

    def draw(i: int, t: float) -> np.ndarray:
        frame = np.stack([base, np.roll(base, i * 4, axis=1), np.full_like(base, int(40 + 180 * t / seconds))], -1)
        x = int((w - 200) * (0.5 + 0.5 * np.sin(t / 2)))
        frame[200:400, x:x + 200] = (230, 60, 60)
        return frame

    clips = [(start, speak(SENTENCES[k % len(SENTENCES)])) for k, start in enumerate(np.arange(1.0, seconds - 3, 5.0))]
    return write_video(path, [i / 30 for i in range(int(seconds * 30))], draw, (h, w), audio=place(clips, seconds))


def cpu_seconds(who=resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measure(fn) -> dict:
    c0, w0 = cpu_seconds(), time.perf_counter()
    detail = fn()
    return {"cpu_s": cpu_seconds() - c0, "wall_s": time.perf_counter() - w0, **(detail or {})}


def ours(path: Path, engine: str) -> dict:
    cfg = VideoConfig(speech=SpeechConfig(engine=engine))
    item = {"source": "bench", "origin": path.name, "path": str(path), "sidecars": {}}
    rows, facts, _ = process_item(item, cfg, Recognizer(cfg.speech))
    return {"frames": facts.wanted_frames, "rows": len(rows), "words": facts.record()["words"],
            "size": [facts.height, facts.width]}


def plan_of(path: Path) -> tuple[list[float], int, int]:
    rules = framelib.FrameRules()
    with open_video(str(path)) as video:
        index = video.index()
    plan = framelib.plan_frames(index.times, rules)
    plan, h, w = framelib.fit_plan(plan, index.height, index.width, rules, index.seconds, len(index.times))
    return [float(index.pts[i]) for i in plan.indices], h, w


def seek_per_frame(path: Path, targets: list[float], h: int, w: int) -> dict:
    """The baseline: for each planned frame, seek to the keyframe before it and decode forward."""
    kept = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for target in targets:
            container.seek(int(target), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is not None and frame.pts >= target:
                    picture = Image.fromarray(frame.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC").to_ndarray())
                    picture.save(io.BytesIO(), format="JPEG", quality=JPEG_QUALITY)
                    kept += 1
                    break
    return {"frames": kept}


def ffmpeg_fps(path: Path, h: int, w: int, out: Path) -> dict | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    c0 = cpu_seconds(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    subprocess.run([exe, "-v", "error", "-i", str(path), "-vf", f"fps=2,scale={w}:{h}:flags=bicubic", "-q:v", "3",
                    str(out / "%05d.jpg")], check=True)
    return {"cpu_s": cpu_seconds(resource.RUSAGE_CHILDREN) - c0, "wall_s": time.perf_counter() - w0,
            "frames": len(list(out.glob("*.jpg")))}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default="bench/results/video.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        video = make_video(tmp / "bench720.mp4", args.seconds)
        print(f"made {video.stat().st_size / 2**20:.1f} MiB, {args.seconds:.0f} s of 720p30 in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
        targets, h, w = plan_of(video)
        (tmp / "ff").mkdir()
        results = {
            "ours (index + one decoding pass)": measure(lambda: ours(video, "none")),
            "ours + pocketsphinx": measure(lambda: ours(video, "pocketsphinx")),
            "seek per frame": measure(lambda: seek_per_frame(video, targets, h, w)),
        }
        ff = ffmpeg_fps(video, h, w, tmp / "ff")
        if ff is not None:
            results["ffmpeg -vf fps=2 to JPEG files"] = ff
    print(f"{'method':36} {'frames':>7} {'cpu s':>7} {'wall s':>7} {'video s / core-s':>17} {'x real time (wall)':>19}")
    for name, r in results.items():
        r["video_seconds_per_core_second"] = round(args.seconds / r["cpu_s"], 2)
        r["realtime_wall"] = round(args.seconds / r["wall_s"], 2)
        print(f"{name:36} {r.get('frames', '-'):>7} {r['cpu_s']:7.2f} {r['wall_s']:7.2f} "
              f"{r['video_seconds_per_core_second']:17.1f} {r['realtime_wall']:19.1f}")
    record = {"machine": {"cpu": cpu_model(), "cores": __import__("os").cpu_count()}, "video": {
        "seconds": args.seconds, "size": "1280x720", "fps": 30, "codec": "h264 (libx264 veryfast)", "stored_frame": [h, w],
        "planned_frames": len(targets)}, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
