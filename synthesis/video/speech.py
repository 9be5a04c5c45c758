"""What is said in a video, with times: one interface over three sources.

    transcript = subtitles(path_or_text, ".srt" | ".vtt")    # sidecar subtitles (ms precision)
    transcript = asr_json(text)                              # a sidecar ASR result
    transcript = Recognizer(SpeechConfig()).transcribe(pcm)  # pocketsphinx (offline) or Whisper

A transcript is a list of Segments (start, end, text, words with their own times), in seconds from
the media's start. Recognisers only ever hear the speech regions that a voice-activity detector
(pocketsphinx's) finds in audio loud enough to hold speech: no audio track, or silence, gives no
segments, so no model gets the chance to invent text for silence (Whisper's known failure).
Long audio is cut at those regions (and regions at `max_region_seconds`).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

AUDIO_RATE = 16000


class SubtitleError(ValueError):
    """Subtitles that do not parse."""


@dataclass
class Word:
    text: str
    start: float
    end: float


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
                "words": [[w.text, round(w.start, 3), round(w.end, 3)] for w in self.words]}


# --- sidecar subtitles and ASR results --------------------------------------------------------------


def subtitles(data: bytes | str, suffix: str) -> list[Segment]:
    """Segments of an .srt or .vtt file's text (SubtitleError when it does not parse)."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
    if suffix == ".srt":
        import srt

        try:
            cues = list(srt.parse(text, ignore_errors=False))
        except (srt.SRTParseError, ValueError) as exc:
            raise SubtitleError(f"srt: {exc}") from None
        found = [Segment(c.start.total_seconds(), c.end.total_seconds(), _clean(c.content)) for c in cues]
    elif suffix == ".vtt":
        import webvtt

        try:
            cues = webvtt.from_buffer(io.StringIO(text))
        except Exception as exc:  # webvtt raises its own MalformedFileError and others
            raise SubtitleError(f"vtt: {type(exc).__name__}: {exc}") from None
        # not start_in_seconds: it truncates to whole seconds
        found = [Segment(_vtt_seconds(c.start), _vtt_seconds(c.end), _clean(c.text)) for c in cues]
    else:
        raise SubtitleError(f"unknown subtitle format {suffix!r}")
    found = [s for s in found if s.text and s.end > s.start]
    if not found:
        raise SubtitleError("no cue with text")
    return sorted(found, key=lambda s: (s.start, s.end))


def _vtt_seconds(stamp: str) -> float:
    parts = stamp.strip().split(":")
    seconds = float(parts[-1])
    minutes = int(parts[-2]) if len(parts) > 1 else 0
    hours = int(parts[-3]) if len(parts) > 2 else 0
    return hours * 3600 + minutes * 60 + seconds


_TAGS = re.compile(r"<[^>]+>|\{\\[^}]*\}")


def _clean(text: str) -> str:
    return " ".join(_TAGS.sub("", text).split())


def asr_json(data: bytes | str) -> list[Segment]:
    """A sidecar ASR result: {"segments": [{"start", "end", "text", "words": [{"word"|"text",
    "start", "end"}]}]} (Whisper's JSON output has this shape)."""
    try:
        doc = json.loads(data)
        segments = []
        for s in doc["segments"]:
            words = [Word(str(w.get("word", w.get("text", ""))).strip(), float(w["start"]), float(w["end"]))
                     for w in s.get("words") or ()]
            segments.append(Segment(float(s["start"]), float(s["end"]), _clean(str(s["text"])), words))
    except (ValueError, KeyError, TypeError) as exc:
        raise SubtitleError(f"asr json: {type(exc).__name__}: {exc}") from None
    return sorted([s for s in segments if s.text], key=lambda s: (s.start, s.end))


# --- recognisers ------------------------------------------------------------------------------------------


@dataclass
class SpeechConfig:
    engine: Literal["pocketsphinx", "whisper", "none"] = "pocketsphinx"
    whisper_path: str = ""  # a local folder with a Whisper checkpoint (transformers format)
    language: str = ""  # Whisper's language ("" = detect); pocketsphinx's model is English
    min_dbfs: float = -45.0  # audio whose loudest 30 ms stays under this is silence
    min_speech_seconds: float = 0.3  # less detected speech than this: no transcript
    max_region_seconds: float = 30.0  # long speech regions are cut into pieces of at most this
    pad_seconds: float = 0.3  # audio kept around each detected speech region
    device: str = "cpu"


def loud_enough(pcm: np.ndarray, min_dbfs: float) -> bool:
    """Whether any 30 ms window of int16 audio reaches `min_dbfs` (RMS, full scale = 0 dB). Ten
    seconds at a time, so an hour of audio never becomes an hour of floats."""
    window = int(0.03 * AUDIO_RATE)
    chunk = window * 333  # ~10 s
    loudest = 0.0
    for start in range(0, len(pcm), chunk):
        part = pcm[start:start + chunk].astype(np.float32) / 32768.0
        usable = len(part) // window * window
        frames = part[:usable].reshape(-1, window) if usable else part[None, :]
        loudest = max(loudest, float(np.sqrt((frames ** 2).mean(axis=1)).max()))
    return loudest > 0 and 20 * math.log10(loudest) >= min_dbfs


class _PcmReader:
    """A file-like view of int16 samples for pocketsphinx's segmenter (no copy of the whole audio)."""

    def __init__(self, pcm: np.ndarray):
        self.pcm, self.pos = pcm, 0

    def read(self, size: int) -> bytes:
        count = max(0, size // 2)
        out = self.pcm[self.pos:self.pos + count].tobytes()
        self.pos += count
        return out


def speech_regions(pcm: np.ndarray, cfg: SpeechConfig) -> list[tuple[float, np.ndarray]]:
    """(start seconds, samples) of each stretch of speech pocketsphinx's detector hears."""
    if not loud_enough(pcm, cfg.min_dbfs):
        return []
    from pocketsphinx import Segmenter

    # the detector's regions start after a word's onset: each is widened by `pad_seconds` of the
    # original audio on both sides (clipped to the neighbours), so no word loses its first sound
    pcm = np.ascontiguousarray(pcm, dtype=np.int16)
    found = [(r.start_time, r.end_time) for r in Segmenter(sample_rate=AUDIO_RATE).segment(_PcmReader(pcm))]
    regions = []
    for k, (start, end) in enumerate(found):
        lo = max(start - cfg.pad_seconds, found[k - 1][1] if k else 0.0, 0.0)
        hi = min(end + cfg.pad_seconds, found[k + 1][0] if k + 1 < len(found) else len(pcm) / AUDIO_RATE)
        samples = pcm[int(lo * AUDIO_RATE):int(hi * AUDIO_RATE)]
        step = int(cfg.max_region_seconds * AUDIO_RATE)
        for offset in range(0, len(samples), step):
            regions.append((lo + offset / AUDIO_RATE, samples[offset:offset + step]))
    if sum(len(s) for _, s in regions) / AUDIO_RATE < cfg.min_speech_seconds:
        return []
    return regions


class Recognizer:
    """Speech to timed segments; the model is loaded once and kept (one per Python worker)."""

    def __init__(self, cfg: SpeechConfig):
        self.cfg = cfg
        self._model = None
        self._aligner = None

    def transcribe(self, pcm: np.ndarray, offset: float = 0.0, known_text: str | None = None) -> list[Segment]:
        """Segments of int16 mono 16 kHz audio that starts `offset` seconds into the media. With
        `known_text` (one sentence per speech region, e.g. a script) pocketsphinx aligns it to the
        audio instead of recognising freely, region by region, falling back to recognition where
        an alignment fails."""
        if self.cfg.engine == "none":
            return []
        regions = speech_regions(pcm, self.cfg)
        if not regions:
            return []
        sentences = _sentences(known_text) if known_text else []
        if len(sentences) != len(regions):
            sentences = [None] * len(regions)
        out = []
        for (start, samples), sentence in zip(regions, sentences):
            segment = (self._whisper(samples) if self.cfg.engine == "whisper" else self._sphinx(samples, sentence))
            if segment is not None:
                out.append(_shift(segment, offset + start))
        return out

    # pocketsphinx: English acoustic model and dictionary from its wheel; one decoder recognises,
    # another aligns (switching one decoder's search back and forth costs a model reload)
    def _sphinx(self, samples: np.ndarray, sentence: str | None) -> Segment | None:
        from pocketsphinx import Decoder

        words = []
        if sentence:
            if self._aligner is None:
                # no filler words (noise, breath) between the script's words, and wider beams than
                # recognition's: with the defaults the search lost the path on most synthetic
                # sentences; with these, every sentence of the tests aligned
                aligner = Decoder(samprate=AUDIO_RATE, loglevel="FATAL", fsgusefiller=False,
                                  beam=1e-60, wbeam=1e-40, pbeam=1e-60)
                self._aligner = (aligner, aligner.get_cmn())
            words = _sphinx_words(*self._aligner, samples, sentence)
        if not words:
            if self._model is None:
                model = Decoder(samprate=AUDIO_RATE, loglevel="FATAL")
                self._model = (model, model.get_cmn())
            words = _sphinx_words(*self._model, samples, None)
        if not words:
            return None
        return Segment(words[0].start, words[-1].end, " ".join(w.text for w in words), words)

    # Whisper: a local checkpoint through transformers, word times from its timestamp tokens
    def _whisper(self, samples: np.ndarray) -> Segment | None:
        if self._model is None:
            if not self.cfg.whisper_path:
                raise ValueError("speech.engine=whisper needs speech.whisper_path=DIR (a local Whisper checkpoint)")
            from transformers import pipeline

            self._model = pipeline("automatic-speech-recognition", model=self.cfg.whisper_path, device=self.cfg.device)
        kwargs = {"language": self.cfg.language} if self.cfg.language else {}
        result = self._model({"raw": samples.astype(np.float32) / 32768.0, "sampling_rate": AUDIO_RATE},
                             return_timestamps="word", generate_kwargs=kwargs)
        words = [Word(c["text"].strip(), float(c["timestamp"][0]), float(c["timestamp"][1] or c["timestamp"][0]))
                 for c in result.get("chunks") or () if c["text"].strip()]
        text = _clean(result.get("text") or "")
        if not text:
            return None
        start = words[0].start if words else 0.0
        end = words[-1].end if words else len(samples) / AUDIO_RATE
        return Segment(start, end, text, words)


def _sphinx_words(decoder, initial_cmn: str, samples: np.ndarray, sentence: str | None) -> list[Word]:
    """Words with times from one pocketsphinx pass: alignment to `sentence`, or recognition."""
    if sentence:
        words = re.sub(r"[^a-z' ]+", " ", sentence.lower()).split()
        try:
            decoder.set_align_text(" ".join(words))
        except RuntimeError:  # a word the dictionary does not know: recognise instead
            return []
    # cepstral mean normalisation adapts from utterance to utterance: start each region from the
    # model's initial means, so a region's result does not depend on the regions before it
    decoder.set_cmn(initial_cmn)
    decoder.start_utt()
    decoder.process_raw(samples.tobytes(), full_utt=True)
    decoder.end_utt()
    if decoder.hyp() is None:
        return []
    out = []
    for seg in decoder.seg():
        token = re.sub(r"\(\d+\)$", "", seg.word)
        if token and not token.startswith(("<", "[")):
            out.append(Word(token, seg.start_frame / 100.0, (seg.end_frame + 1) / 100.0))
    return out


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]


def _shift(segment: Segment, by: float) -> Segment:
    return Segment(segment.start + by, segment.end + by, segment.text,
                   [Word(w.text, w.start + by, w.end + by) for w in segment.words])
