"""One video in, its rows out: open, index, plan, decode, transcribe, cut into clips, build rows.

    for rows in process_group(items, cfg, recognizer): ...   # rows of each item, then matching rows

What cannot be used becomes one refused row with its reason: empty_file, missing_file,
not_a_video, no_video_stream, truncated, undecodable_frames, too_short, subtitles_unparseable
(the subtitle file; the video goes on with speech recognition), subtitles_without_video, and
video_error for anything unforeseen (with the exception), so one odd file never stops the job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from collections.abc import Iterator

from curation import schema
from curation.steps import REJECT
from synthesis.video import frames as framelib
from synthesis.video.clips import clip_bounds, spoken_text, split_frames
from synthesis.video.decode import VideoRefused, open_video, resized
from synthesis.video.enrich import frame_ocr_row, recaption_row
from synthesis.video.rows import VideoFacts, caption_row, interleaved_row, refused_row, video_of
from synthesis.video.speech import Recognizer, Segment, SubtitleError, asr_json, subtitles
from synthesis.video.tasks import grounding_row, matching_entry, matching_rows, reorder_row, rng_for


def process_group(items: list[dict], cfg, recognizer: Recognizer) -> Iterator[list[dict]]:
    entries, empty = [], []  # matching candidates; decoded videos that gave no row (yet)
    for item in items:
        try:
            rows, facts, entry = process_item(item, cfg, recognizer)
        except Exception as exc:  # one odd file must not sink the job: a reject with the exception
            rows, facts, entry = [refused_row(item["source"], item["origin"], "video_error", f"{type(exc).__name__}: {exc}")], None, None
        if entry is not None:
            entries.append(entry)
        if facts is not None and not any(row[REJECT] is None for row in rows):
            empty.append(facts)
        yield rows
    matched = matching_rows(entries, cfg.tasks, cfg.seed) if cfg.tasks.matching else []
    with_rows = {row_origin(row) for row in matched}
    # a decoded video with no transcript, caption or task row is still counted: refused, saying why
    yield matched + [refused_row(f.source, f.origin, "no_rows", "no transcript, caption or task came from this video", f)
                     for f in empty if f.origin not in with_rows]


def row_origin(row: dict) -> str:
    return json.loads(row["extra"])["origin"]


def _read(item: dict, name: str) -> bytes:
    if "tar" in item:
        with tarfile.open(item["tar"]) as archive:
            return archive.extractfile(name).read()
    with open(name, "rb") as f:
        return f.read()


def _media(item: dict):
    """A path, or a tar member as a seekable file object (with the archive to close)."""
    if "tar" in item:
        archive = tarfile.open(item["tar"])
        member = archive.getmember(item["member"])
        return archive.extractfile(member), member.size, archive
    path = item["path"]
    if not os.path.isfile(path):
        raise VideoRefused("missing_file", f"{item['origin']} does not exist")
    return path, os.path.getsize(path), None


def _transcript(item: dict, rows: list[dict]) -> tuple[list[Segment], str]:
    """Sidecar subtitles or ASR JSON when present and parseable; a refusal row for one that is not."""
    side = item.get("sidecars") or {}
    for ext, kind in ((".srt", "subtitles"), (".vtt", "subtitles"), (".json", "asr_json")):
        if ext not in side:
            continue
        try:
            data = _read(item, side[ext])
            return (subtitles(data, ext) if kind == "subtitles" else asr_json(data)), kind
        except (SubtitleError, UnicodeDecodeError, OSError) as exc:
            rows.append(refused_row(item["source"], f"{item['origin']}{ext}", "subtitles_unparseable",
                                    f"{os.path.basename(side[ext])}: {exc}"))
    return [], "none"


def process_item(item: dict, cfg, recognizer: Recognizer):
    source, origin = item["source"], item["origin"]
    if "orphan" in item:
        return [refused_row(source, origin, "subtitles_without_video", "no video file has this subtitle file's name")], None, None
    if "missing" in item:
        return [refused_row(source, origin, "missing_file", item["missing"])], None, None
    rows: list[dict] = []
    facts = VideoFacts(source=source, origin=origin)
    try:
        media, size, archive = _media(item)
        try:
            if size == 0:
                raise VideoRefused("empty_file", "zero bytes")
            with open_video(media, threads=cfg.decode_threads) as video:
                index = video.index()
                facts.total_frames, facts.seconds, facts.codec = len(index.times), index.seconds, index.codec
                facts.has_audio = index.has_audio
                if index.seconds < cfg.min_seconds or len(index.times) < 2:
                    raise VideoRefused("too_short", f"{index.seconds:.2f} s, {len(index.times)} frames "
                                                    f"(min_seconds={cfg.min_seconds})")
                if index.declared_seconds and index.seconds < 0.9 * index.declared_seconds - 0.5:
                    raise VideoRefused("truncated", f"frames cover {index.seconds:.2f} s of the "
                                                    f"{index.declared_seconds:.2f} s the container declares")
                rules = cfg.frames
                slow_fast = rules.preset == "keye_vl_1_5_slow_fast"
                if slow_fast:  # frames under the larger budget, decoded at the largest frame size
                    rules = dataclasses.replace(rules, max_tokens=rules.slow_fast_max_tokens)
                plan = framelib.plan_frames(index.times, rules)

                def sized(height: int, width: int):
                    fitted, h, w = framelib.fit_plan(plan, height, width, rules, index.seconds, len(index.times))
                    if slow_fast:
                        h, w = schema.smart_resize(height, width, max_pixels=rules.frame_max_tokens * schema.FACTOR ** 2)
                    facts.wanted_frames, facts.effective_fps = plan.wanted, fitted.effective_fps
                    return fitted.indices, h, w

                decoded = video.decode(index, sized, with_audio=cfg.speech.engine != "none")
        finally:
            if archive is not None:
                archive.close()
    except VideoRefused as exc:
        return rows + [refused_row(source, origin, exc.reason, exc.detail, facts)], None, None
    facts.height, facts.width, facts.rotation = decoded.height, decoded.width, decoded.rotation
    if cfg.frames.preset == "keye_vl_1_5_slow_fast":
        slow = framelib.slow_fast_pathways([f.thumb for f in decoded.frames], cfg.frames.fast_similarity)
        (sh, sw), (fh, fw) = framelib.slow_fast_sizes(decoded.height, decoded.width, slow, cfg.frames)
        decoded.frames = [resized(f, sh, sw) if s else resized(f, fh, fw) for f, s in zip(decoded.frames, slow)]
        facts.height, facts.width = sh, sw
        facts.pathways = "".join("S" if s else "F" for s in slow)
    transcript, kind = _transcript(item, rows)
    if not transcript and len(decoded.audio):
        transcript = recognizer.transcribe(decoded.audio, offset=decoded.audio_start)
        kind = cfg.speech.engine if transcript else "none"
    facts.transcript, facts.transcript_source = transcript, kind
    caption = item.get("caption")
    if caption is None and ".txt" in (item.get("sidecars") or {}):
        caption = _read(item, item["sidecars"][".txt"]).decode("utf-8", "replace").strip()
    facts.caption = caption or None

    frames = decoded.frames
    whole = video_of(frames, facts)
    bounds = clip_bounds(frames, transcript, index.seconds, cfg.clips)
    clips = split_frames(frames, bounds)
    texts = [spoken_text(transcript, a, b) for a, b in bounds]
    # the optional model rows first: a failure is noted in the extra of every row of this video
    optional = []
    if cfg.ocr.enabled:
        try:
            optional.append(frame_ocr_row(facts, frames, whole, cfg.ocr))
        except Exception as exc:  # an engine failure costs only this row
            facts.errors["frame_ocr"] = f"{type(exc).__name__}: {exc}"[:200]
    if cfg.recaption.enabled:
        row, error = recaption_row(facts, frames, whole, cfg.recaption, cfg.caption_prompt)
        optional.append(row)
        if error:
            facts.errors["recaption"] = error
    rng = rng_for(cfg.seed, origin)
    made = [
        interleaved_row(facts, clips, bounds, texts),
        caption_row(facts, whole, cfg.caption_prompt),
        reorder_row(facts, frames, cfg.tasks, rng) if cfg.tasks.reorder else None,
        grounding_row(facts, whole, cfg.tasks, rng) if cfg.tasks.grounding else None,
        *optional,
    ]
    rows += [r for r in made if r is not None]
    return rows, facts, matching_entry(facts, clips, bounds)
