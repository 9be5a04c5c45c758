"""Making media files: drawn frames and speech muxed into a container (the bundled sample, the
tests and the benchmark all make their videos here).

    write_video(path, times=[0, 1/30, ...], draw=lambda i, t: rgb_array, size=(360, 640),
                audio=int16_mono_16k, codec="libx264")
    speak("hello there") -> int16 mono 16 kHz (espeak-ng)

Each frame is shown from its time to the next frame's time (variable frame rates are just uneven
times); the same arguments give the same bytes (one encoder thread, no timestamps in metadata).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np

AUDIO_RATE = 16000
TIME_BASE = Fraction(1, 90000)
CODECS = {  # container suffix -> (video codec, audio codec)
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("libx264", "libopus"),
    ".webm": ("libvpx", "libopus"),
    ".ts": ("libx264", "aac"),
}


def write_video(
    path: str | Path,
    times: Sequence[float],
    draw: Callable[[int, float], np.ndarray],
    size: tuple[int, int],
    audio: np.ndarray | None = None,
    codec: str | None = None,
    options: dict | None = None,
    start: float = 0.0,
    container_options: dict | None = None,
    rotation: int = 0,
) -> Path:
    """A video whose frame i is `draw(i, times[i])` (H x W x 3 uint8) shown at `start + times[i]`;
    `rotation`: display-matrix rotation in degrees counter-clockwise (as phones record)."""
    path = Path(path)
    video_codec, audio_codec = CODECS.get(path.suffix, ("libx264", "aac"))
    height, width = size
    container = av.open(str(path), mode="w", options={"fflags": "+bitexact", **(container_options or {})})
    stream = container.add_stream(codec or video_codec, rate=_nominal_rate(times))
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    if rotation:
        stream.set_display_rotation(rotation)
    stream.time_base = TIME_BASE
    stream.codec_context.time_base = TIME_BASE
    stream.thread_count = 1
    stream.options = {"threads": "1", **({"preset": "veryfast", "bf": "0"} if stream.codec_context.name == "libx264" else {}),
                      **(options or {})}
    a_stream = None
    if audio is not None:
        a_stream = container.add_stream(audio_codec, rate=48000 if audio_codec == "libopus" else AUDIO_RATE)
        a_stream.layout = "mono"
        a_stream.thread_count = 1
    for i, t in enumerate(times):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(draw(i, t), dtype=np.uint8), format="rgb24")
        frame.pts = int(round((start + t) / TIME_BASE))
        frame.time_base = TIME_BASE
        for packet in stream.encode(frame.reformat(format="yuv420p")):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    if a_stream is not None:
        _encode_audio(container, a_stream, audio, start)
    container.close()
    return path


def _encode_audio(container, stream, audio: np.ndarray, start: float) -> None:
    rate = stream.codec_context.sample_rate
    samples = np.asarray(audio, dtype=np.int16)
    resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
    chunk = 1024 * AUDIO_RATE // rate if rate >= AUDIO_RATE else 1024
    pts = int(round(start * AUDIO_RATE))
    for offset in range(0, len(samples), chunk):
        frame = av.AudioFrame.from_ndarray(samples[None, offset:offset + chunk], format="s16", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = pts + offset
        frame.time_base = Fraction(1, AUDIO_RATE)
        for converted in resampler.resample(frame):
            for packet in stream.encode(converted):
                container.mux(packet)
    for converted in resampler.resample(None):
        for packet in stream.encode(converted):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _nominal_rate(times: Sequence[float]) -> Fraction:
    if len(times) < 2:
        return Fraction(30)
    gap = float(np.median(np.diff(np.asarray(times, dtype=np.float64))))
    return Fraction(round(1 / gap)) if gap > 0 else Fraction(30)


def speak(text: str, voice: str = "en-us", words_per_minute: int = 150) -> np.ndarray:
    """`text` spoken by espeak-ng, as int16 mono at 16 kHz."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng): it speaks the sample's audio")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([exe, "-v", voice, "-s", str(words_per_minute), "-w", str(wav), text], check=True,
                       capture_output=True)
        return read_audio(wav)


def read_audio(path: str | Path) -> np.ndarray:
    """The first audio track of a file as int16 mono at 16 kHz."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
        chunks = []
        for frame in container.decode(audio=0):
            chunks.extend(c.to_ndarray().reshape(-1) for c in resampler.resample(frame))
        chunks.extend(c.to_ndarray().reshape(-1) for c in resampler.resample(None))
    return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)


def place(clips: Sequence[tuple[float, np.ndarray]], seconds: float) -> np.ndarray:
    """A silent track of `seconds` with each (start, samples) clip placed at its start."""
    track = np.zeros(int(round(seconds * AUDIO_RATE)), dtype=np.int16)
    for start, samples in clips:
        at = int(round(start * AUDIO_RATE))
        end = min(len(track), at + len(samples))
        track[at:end] = samples[: end - at]
    return track
