"""Reading a video file: an index pass over the packets (no decoding), then one sequential decoding
pass that keeps only the planned frames (resized, JPEG-encoded) and the audio (16 kHz mono).

    with open_video(path_or_file) as media:
        index = media.index()                    # every frame's pts, in presentation order
        frames, audio = media.decode(plan_fn)    # plan_fn(index, display_h, display_w) -> (plan, h, w)

Why two passes: Keye's rule needs the frame count before choosing frames, and mkv/webm/ts
containers do not say it; reading packets without decoding costs a small part of decoding. Why not
a seek per frame: seeking lands on a keyframe and decodes forward to the target every time (the
benchmark measures it, bench/video.py). Times are each frame's pts in seconds from the media's
start (the container's start time), so variable frame rates and non-zero start times come out
right. Rotation metadata (the display matrix) is applied to every kept frame.

Every way a file can be unusable raises VideoRefused with a reason the job records.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import av
import numpy as np
from PIL import Image

from synthesis.video.frames import video_seconds

AUDIO_RATE = 16000
JPEG_QUALITY = 90
THUMB = 32  # side of the grey thumbnails that frame differences are measured on


class VideoRefused(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class VideoIndex:
    pts: np.ndarray  # every frame's pts (int64, the stream's time base), presentation order
    times: np.ndarray  # the same in seconds from the media's start
    seconds: float  # duration from the frames' times
    width: int  # coded size (before rotation)
    height: int
    codec: str
    has_audio: bool
    declared_seconds: float | None  # what the container says of the video stream, when it says


@dataclass
class Frame:
    time: float
    jpeg: bytes
    thumb: np.ndarray  # THUMB x THUMB float32 grey levels in [0, 1]


@dataclass
class Decoded:
    frames: list[Frame]
    height: int  # stored frame size (after rotation and resize)
    width: int
    rotation: int
    audio: np.ndarray  # int16 mono at AUDIO_RATE, empty without an audio track
    audio_start: float  # seconds from the media's start of the first audio sample
    corrupt_packets: int = 0


class open_video:
    """A media file opened for indexing and decoding; a path or a seekable binary file object."""

    def __init__(self, source, threads: int = 0):
        self.source, self.threads = source, threads

    def __enter__(self) -> "open_video":
        try:
            self.container = av.open(self.source, mode="r")
        except av.error.FileNotFoundError as exc:
            raise VideoRefused("missing_file", str(exc)) from None
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoRefused("not_a_video", f"{type(exc).__name__}: {exc}") from None
        if not self.container.streams.video:
            kinds = sorted({s.type for s in self.container.streams})
            self.container.close()
            raise VideoRefused("no_video_stream", f"{'/'.join(kinds)} streams only" if kinds else "no streams")
        self.video = self.container.streams.video[0]
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        start = self.container.start_time  # microseconds, or None
        self.origin = start / 1e6 if start is not None else 0.0
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()

    def _seconds(self, pts: int, stream) -> float:
        return float(pts * stream.time_base) - self.origin

    def index(self) -> VideoIndex:
        """Every video packet's pts (no decoding), sorted into presentation order."""
        pts = []
        try:
            for packet in self.container.demux(self.video):
                if packet.pts is not None and packet.size > 0:
                    pts.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise VideoRefused("truncated", f"reading packets failed after {len(pts)}: {exc}") from None
        if not pts:
            raise VideoRefused("undecodable_frames", "the video stream holds no frames")
        pts = np.array(sorted(set(pts)), dtype=np.int64)
        times = np.array([self._seconds(int(p), self.video) for p in pts], dtype=np.float64)
        # the stream's own declared length (an mp4 index lists every frame, even ones cut off)
        declared = float(self.video.duration * self.video.time_base) if self.video.duration else None
        ctx = self.video.codec_context
        return VideoIndex(
            pts=pts, times=times, seconds=video_seconds(times) if len(times) > 1 else 0.0, width=ctx.width, height=ctx.height,
            codec=ctx.name, has_audio=self.audio is not None, declared_seconds=declared,
        )

    def decode(
        self, index: VideoIndex, plan_fn: Callable[[int, int], tuple[list[int], int, int]], with_audio: bool = True
    ) -> Decoded:
        """One pass: keep the frames `plan_fn(display_h, display_w) -> (indices, h, w)` chooses
        (called at the first frame, once rotation is known) and resample the audio."""
        self.container.seek(0)
        self.video.thread_type = "AUTO"
        if self.threads:
            self.video.codec_context.thread_count = self.threads
        streams = [self.video] + ([self.audio] if (with_audio and self.audio is not None) else [])
        wanted_pts: dict[int, int] = {}  # frame pts -> how many times it is taken (repeats in tiny videos)
        frames: list[Frame] = []
        size = None
        rotation = 0
        resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE) if len(streams) > 1 else None
        audio_chunks: list[np.ndarray] = []
        audio_start = None
        corrupt = 0
        decoded_frames = 0
        for packet in _packets(self.container.demux(*streams)):
            if packet is None:  # reading the file itself failed (cut off, unreadable): what came so far counts
                corrupt += 1
                break
            try:
                outputs = packet.decode()
            except av.error.FFmpegError:
                corrupt += 1
                continue
            for out in outputs:
                if packet.stream.type == "audio":
                    if audio_start is None and out.pts is not None:
                        audio_start = self._seconds(out.pts, packet.stream)
                    for chunk in resampler.resample(out):
                        audio_chunks.append(chunk.to_ndarray().reshape(-1))
                    continue
                decoded_frames += 1
                if size is None:
                    rotation = int(round(out.rotation or 0)) % 360
                    h, w = (out.width, out.height) if rotation in (90, 270) else (out.height, out.width)
                    indices, fh, fw = plan_fn(h, w)
                    size = (fh, fw)
                    for i in indices:
                        p = int(index.pts[i])
                        wanted_pts[p] = wanted_pts.get(p, 0) + 1
                if out.pts is None:
                    continue
                repeat = wanted_pts.pop(int(out.pts), 0)
                if repeat:
                    frame = _keep(out, rotation, size, self._seconds(out.pts, self.video))
                    frames.extend([frame] * repeat)
        if resampler is not None:
            for chunk in resampler.resample(None):
                audio_chunks.append(chunk.to_ndarray().reshape(-1))
        if decoded_frames == 0:
            raise VideoRefused("undecodable_frames", f"no frame decoded ({corrupt} corrupt packets)")
        if wanted_pts:
            missing = sum(wanted_pts.values())
            raise VideoRefused(
                "truncated" if corrupt else "undecodable_frames",
                f"{missing} of the planned frames did not decode ({corrupt} corrupt packets, {decoded_frames} frames decoded)",
            )
        audio = np.concatenate(audio_chunks).astype(np.int16, copy=False) if audio_chunks else np.zeros(0, np.int16)
        audio_chunks.clear()
        return Decoded(frames=frames, height=size[0], width=size[1], rotation=rotation, audio=audio,
                       audio_start=audio_start or 0.0, corrupt_packets=corrupt)


def _packets(demuxer):
    """The demuxer's packets, then None if reading the container failed part way."""
    try:
        yield from demuxer
    except av.error.FFmpegError:
        yield None


def _keep(frame: av.VideoFrame, rotation: int, size: tuple[int, int], time: float) -> Frame:
    """The frame turned upright, resized by swscale straight to the stored size, JPEG-encoded."""
    h, w = size
    coded_h, coded_w = (w, h) if rotation in (90, 270) else (h, w)
    rgb = frame.reformat(width=coded_w, height=coded_h, format="rgb24", interpolation="BICUBIC").to_ndarray()
    picture = Image.fromarray(rgb)
    if rotation:
        # the display matrix rotates counter-clockwise by `rotation` degrees; PIL's ROTATE_n too
        picture = picture.transpose({90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180,
                                     270: Image.Transpose.ROTATE_270}[rotation])
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=JPEG_QUALITY)
    thumb = np.asarray(picture.convert("L").resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return Frame(time=time, jpeg=buf.getvalue(), thumb=thumb)


def resized(frame: Frame, height: int, width: int) -> Frame:
    """The frame at another stored size (the slow/fast preset's second pass over kept frames)."""
    picture = Image.open(io.BytesIO(frame.jpeg))
    if picture.size == (width, height):
        return frame
    buf = io.BytesIO()
    picture.convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return Frame(time=frame.time, jpeg=buf.getvalue(), thumb=frame.thumb)

