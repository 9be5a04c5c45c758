"""The bundled video sample, made by code (drawn frames, espeak-ng speech) so the repository
carries no binary data:

    python -m synthesis.video.sample out/video_sample

    folder/        mp4, mkv, webm, mov and ts videos: speech at known times, .srt / .vtt subtitles,
                   a caption .txt, silent ones, one with no audio track, one variable-frame-rate
                   one starting at 0.5 s; and the planted broken inputs
    videos.tar     two videos with sidecars, as WebDataset-style members
    table.jsonl    rows naming videos in table_videos/ (and one naming a file that is not there)
    _planted.json  every broken input with the reason it must be refused, and the spoken sentences
                   with their times

The same code and the same espeak-ng give the same bytes (one encoder thread, bit-exact muxing).
"""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np

from synthesis.video.media import place, speak, write_video

SIZE = (240, 320)
FPS = 15
SENTENCES = [
    "the red ball rolls across the floor",
    "now the blue square moves up",
    "a green light turns on",
    "the yellow circle gets bigger",
    "we count three boxes on the table",
    "the camera looks at the window",
]
VERSION = 1  # bump when the sample changes: the folder is regenerated when its stamp differs


def _drawer(seed: int, seconds: float):
    """Frames whose brightness ramps over the video and whose square moves: far-apart frames differ."""
    rng = np.random.default_rng(seed)
    colour = rng.integers(60, 255, size=3)
    h, w = SIZE

    def draw(i: int, t: float) -> np.ndarray:
        level = int(30 + 190 * min(1.0, t / max(seconds, 1e-6)))
        frame = np.full((h, w, 3), level, dtype=np.uint8)
        frame[:, :, seed % 3] = 255 - level
        x = int((w - 60) * ((t / max(seconds, 1e-6)) % 1.0))
        y = int((h - 60) * (0.5 + 0.4 * np.sin(t + seed)))
        frame[y:y + 60, x:x + 60] = colour
        return frame

    return draw


def _times(seconds: float, fps: int = FPS) -> list[float]:
    return [i / fps for i in range(int(round(seconds * fps)))]


def _srt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"

    return "".join(f"{n}\n{stamp(a)} --> {stamp(b)}\n{text}\n\n" for n, (a, b, text) in enumerate(cues, 1))


def _vtt(cues: list[tuple[float, float, str]]) -> str:
    def stamp(t: float) -> str:
        ms = int(round(t * 1000))
        return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

    return "WEBVTT\n\n" + "".join(f"{stamp(a)} --> {stamp(b)}\n{text}\n\n" for a, b, text in cues)


def _spoken(seconds: float, sentences: list[tuple[float, str]]) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    clips = [(start, speak(text)) for start, text in sentences]
    cues = [(start, start + len(audio) / 16000, text) for (start, audio), (_, text) in zip(clips, sentences)]
    return place(clips, seconds), cues


def make_sample(out: str | Path) -> Path:
    out = Path(out)
    stamp = out / "_planted.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") == VERSION:
        return out
    if out.exists():
        shutil.rmtree(out)
    folder = out / "folder"
    folder.mkdir(parents=True)
    planted: dict = {"version": VERSION, "rejects": {}, "speech": {}, "subtitles": {}}

    def video(name: str, seconds: float, seed: int, speech: list[tuple[float, str]] | None = None,
              audio: bool = True, where: Path = folder, **kwargs) -> Path:
        track = None
        if speech:
            track, cues = _spoken(seconds, speech)
            planted["speech"][name] = cues
        elif audio:
            track = np.zeros(int(seconds * 16000), dtype=np.int16)  # an audio track of silence
        return write_video(where / name, _times(seconds), _drawer(seed, seconds), SIZE, audio=track, **kwargs)

    video("talk.mp4", 8.0, 1, [(0.8, SENTENCES[0]), (4.6, SENTENCES[1])])
    video("lecture.mkv", 9.0, 2, [(1.0, SENTENCES[2]), (5.5, SENTENCES[3])])
    subs = [(0.5, 3.2, "welcome to the kitchen"), (5.25, 8.75, "first we wash the vegetables")]
    video("cooking.webm", 10.0, 3)
    (folder / "cooking.srt").write_text(_srt(subs))
    planted["subtitles"]["cooking.webm"] = subs
    video("street.mov", 7.0, 4)
    (folder / "street.vtt").write_text(_vtt([(1.0, 3.5, "cars pass by the old bridge"), (4.0, 6.5, "a bus stops at the corner")]))
    (folder / "street.txt").write_text("A street with cars and a bus at a corner.")
    video("silent.ts", 6.0, 5)
    (folder / "silent.txt").write_text("A bright square moves across a changing background.")
    video("no_audio.mp4", 6.0, 6, audio=False)
    (folder / "no_audio.txt").write_text("A square drifts over a background that brightens.")
    # variable frame rate, starting half a second in
    rng = np.random.default_rng(7)
    gaps = rng.choice([1 / 30, 1 / 15, 1 / 6], size=80)
    vfr = np.concatenate([[0.0], np.cumsum(gaps)[:-1]])
    write_video(folder / "vfr.mp4", list(vfr), _drawer(8, float(vfr[-1])), SIZE, start=0.5)
    (folder / "vfr.txt").write_text("A square moves at an uneven frame rate.")

    # the broken ones
    (folder / "empty.mp4").write_bytes(b"")
    planted["rejects"]["empty.mp4"] = "empty_file"
    (folder / "not_video.mp4").write_bytes(np.random.default_rng(9).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    planted["rejects"]["not_video.mp4"] = "not_a_video"
    _audio_only(folder / "audio_only.mp4", speak("there is no picture here"))
    planted["rejects"]["audio_only.mp4"] = "no_video_stream"
    full = video("cut.mp4", 8.0, 10, audio=False, container_options={"movflags": "+faststart"})
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 2])
    planted["rejects"]["cut.mp4"] = "truncated"
    video("blink.mp4", 0.4, 11, audio=False)
    planted["rejects"]["blink.mp4"] = "too_short"
    (folder / "talk.vtt").write_text("WEBVTT\n\nthis line is not a cue\n00:00 --> nonsense\n")
    planted["rejects"]["talk.mp4.vtt"] = "subtitles_unparseable"
    (folder / "lost.srt").write_text(_srt([(0.0, 1.0, "nobody shows this")]))
    planted["rejects"]["lost.srt"] = "subtitles_without_video"

    # a tar of two videos with sidecars
    staging = out / "_tar"
    staging.mkdir()
    video("a001.mp4", 6.0, 12, where=staging)
    (staging / "a001.txt").write_text("A coloured square slides to the right.")
    video("a002.mp4", 8.0, 13, [(1.0, SENTENCES[4])], where=staging)
    with tarfile.open(out / "videos.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(staging.iterdir()):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    shutil.rmtree(staging)

    # a table naming videos beside it
    tv = out / "table_videos"
    tv.mkdir()
    video("t1.mp4", 7.0, 14, [(1.5, SENTENCES[5])], where=tv)
    video("t2.mkv", 6.0, 15, where=tv)
    rows = [{"video": "table_videos/t1.mp4", "caption": "A moving square and a voice."},
            {"video": "table_videos/t2.mkv", "caption": "A square moves while the light changes."},
            {"video": "table_videos/gone.mp4", "caption": "This file does not exist."}]
    (out / "table.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    planted["rejects"]["table.jsonl#2"] = "missing_file"
    stamp.write_text(json.dumps(planted, indent=1, sort_keys=True))
    return out


def _audio_only(path: Path, samples: np.ndarray) -> None:
    import av

    from synthesis.video.media import _encode_audio

    container = av.open(str(path), mode="w", options={"fflags": "+bitexact"})
    stream = container.add_stream("aac", rate=16000)
    stream.layout = "mono"
    _encode_audio(container, stream, samples, 0.0)
    container.close()


if __name__ == "__main__":
    print(make_sample(sys.argv[1] if len(sys.argv) > 1 else "out/video_sample"))
