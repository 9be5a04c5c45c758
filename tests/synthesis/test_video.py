"""The video path below Spark: Keye's frame rules on real files, speech with times, clips, tasks.

Every expected number here is computed in the test from what the test put into the file (frame
times it chose, sentences it placed), not by the code under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from curation import schema
from synthesis.video.clips import ClipConfig, clip_bounds, spoken_text, split_frames
from synthesis.video.media import place, speak, write_video
from synthesis.video.process import process_group, process_item
from synthesis.video.source import VideoConfig, list_items
from synthesis.video.speech import Recognizer, SpeechConfig, SubtitleError, subtitles

PTS_STEP = 1 / 90000  # the writer's time base: a frame's time is exact to this


def _draw(i: int, t: float) -> np.ndarray:
    frame = np.full((120, 160, 3), (i * 3) % 256, dtype=np.uint8)
    frame[:, (i * 2) % 140:(i * 2) % 140 + 20, 1] = 255
    return frame


def _keye_frames(times: list[float], height: int = 120, width: int = 160) -> list[float]:
    """keye-vl-utils 1.0 smart_nframes + linspace, written out: duration x 2 frames, clamped to
    [4, min(768, total)], floored to even, at most 24576 // 128 = 192, and two fewer while a frame
    (smart_resize to a budget of 24576 // n tokens, at least 128) overshoots 24576 in all; the
    times of the chosen frames."""
    total = len(times)
    gap = float(np.median(np.diff(times)))
    seconds = times[-1] - times[0] + gap
    video_fps = total / seconds
    n = total / video_fps * 2
    n = min(max(n, 4), math.floor(min(768, total) / 2) * 2, total)
    n = min(math.floor(n / 2) * 2, 192)
    while True:
        cap = max(128, min(768, 24576 // n))
        h, w = schema.smart_resize(height, width, min_pixels=128 * 28 * 28, max_pixels=cap * 28 * 28)
        if (h // 28) * (w // 28) * n <= 24576:
            break
        n -= 2
    picked = np.round(np.linspace(0, total - 1, n)).astype(int)
    return [times[i] for i in picked]


def _item(tmp_path, name: str, times: list[float], caption: str = "A bar moves.", **kwargs) -> dict:
    path = write_video(tmp_path / name, times, _draw, (120, 160), **kwargs)
    path.with_suffix(".txt").write_text(caption)
    return next(i for i in list_items(str(tmp_path)) if i["origin"] == name)


def _caption_video(rows: list[dict]) -> dict:
    row = next(r for r in rows if r["kind"] == "video" and json.loads(r["extra"]).get("task") == "caption")
    return row["videos"][0]


@pytest.mark.parametrize(
    "name,times,start",
    [
        ("cfr.mp4", [i / 30 for i in range(300)], 0.0),  # 10 s at 30 fps: 20 frames
        ("vfr.mkv", list(np.cumsum(np.random.default_rng(3).choice([1 / 60, 1 / 24, 1 / 8], 240)) - 1 / 60), 0.0),
        ("late.ts", [i / 25 for i in range(100)], 2.0),  # starts 2 s into the stream
        ("long.webm", [i / 5 for i in range(600)], 0.0),  # 120 s: 240 frames wanted, budget allows 192
    ],
)
def test_frame_count_and_times_follow_keye_rules(tmp_path, name, times, start):
    item = _item(tmp_path, name, times, start=start)
    rows, facts, _ = process_item(item, VideoConfig(speech=SpeechConfig(engine="none")), Recognizer(SpeechConfig(engine="none")))
    video = _caption_video(rows)
    expected = _keye_frames(times)
    assert len(video["frames"]) == len(expected)
    got = np.array(video["timestamps"])
    # times from the media's start: the container's start time is the first frame here. Matroska
    # (mkv, webm) stores times in whole milliseconds: each of the two times compared is rounded
    # once there (<= 0.5 ms each); mp4 and ts keep the writer's 1/90000 s.
    tolerance = 1e-3 + 1e-9 if name.endswith((".mkv", ".webm")) else 2 * PTS_STEP
    assert np.abs(got - (np.array(expected) - times[0])).max() <= tolerance
    if name == "long.webm":
        # 120x160 rounds up to 280x392 = 140 tokens at the 128-token minimum: 174 frames fit 24576
        assert len(expected) == 174 and facts.wanted_frames == 240
        assert facts.effective_fps == pytest.approx(174 / 120, rel=1e-6)
        h, w = video["height"], video["width"]
        assert (h // 28) * (w // 28) * 174 <= schema.VIDEO_MAX_TOKENS
    # the stored frames are already the size the processor uses: multiples of 28 within the budget
    assert video["height"] % 28 == 0 and video["width"] % 28 == 0


def test_subtitles_keep_milliseconds_and_bad_ones_are_refused():
    vtt = b"WEBVTT\n\n00:00:01.250 --> 00:00:03.999\nhello <b>there</b>\n\n01:00:02.001 --> 01:00:04.000\nlate\n"
    got = subtitles(vtt, ".vtt")
    assert [(s.start, s.end, s.text) for s in got] == [(1.25, 3.999, "hello there"), (3602.001, 3604.0, "late")]
    srt = b"1\n00:00:01,250 --> 00:00:03,999\nhello there\n\n2\n00:01:02,001 --> 00:01:04,000\nsecond\n"
    assert [(s.start, s.end) for s in subtitles(srt, ".srt")] == [(1.25, 3.999), (62.001, 64.0)]
    for bad, suffix in [(b"garbage\nno times", ".srt"), (b"WEBVTT\n\nnot a cue\n", ".vtt"), (b"", ".vtt")]:
        with pytest.raises(SubtitleError):
            subtitles(bad, suffix)


SENTENCES = [(1.0, "the quick brown fox jumps over the lazy dog"), (6.0, "open the window and look outside"),
             (10.5, "today we will paint the red house")]


def test_pocketsphinx_word_times_fall_in_the_spoken_sentences():
    clips = [(start, speak(text)) for start, text in SENTENCES]
    known = [(start, start + len(audio) / 16000) for start, audio in clips]
    audio = place(clips, 14.0)
    recognizer = Recognizer(SpeechConfig())
    for known_text in ("\n".join(t for _, t in SENTENCES), None):  # aligned to the script, and free
        segments = recognizer.transcribe(audio, offset=0.25, known_text=known_text)
        assert len(segments) == len(SENTENCES)
        for segment, (a, b) in zip(segments, known):
            assert segment.words
            for word in segment.words:
                assert a + 0.25 - 0.5 <= word.start <= word.end <= b + 0.25 + 0.5, (word, a, b)
    aligned = recognizer.transcribe(audio, known_text="\n".join(t for _, t in SENTENCES))
    assert [s.text for s in aligned] == [text for _, text in SENTENCES]  # aligned: the script's words


def test_silence_and_noise_give_no_transcript():
    recognizer = Recognizer(SpeechConfig())
    assert recognizer.transcribe(np.zeros(16000 * 5, np.int16)) == []
    hiss = (np.random.default_rng(0).normal(size=16000 * 3) * 20).astype(np.int16)  # about -64 dBFS
    assert recognizer.transcribe(hiss) == []
    assert recognizer.transcribe(np.zeros(0, np.int16)) == []


def test_subtitles_land_in_the_right_clips(tmp_path):
    times = [i / 10 for i in range(120)]  # 12 s
    item = _item(tmp_path, "talk.mp4", times)
    (tmp_path / "talk.srt").write_text(
        "1\n00:00:00,500 --> 00:00:02,000\nfirst words here\n\n"
        "2\n00:00:05,200 --> 00:00:07,000\nsecond part now\n\n"
        "3\n00:00:10,100 --> 00:00:11,900\nthe last line\n\n"
    )
    item = next(i for i in list_items(str(tmp_path)) if i["origin"] == "talk.mp4")
    cfg = VideoConfig(clips=ClipConfig(seconds=5.0))
    rows, _, _ = process_item(item, cfg, Recognizer(cfg.speech))
    row = next(r for r in rows if r["kind"] == "interleaved")
    parts = row["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["video", "text", "video", "text", "video", "text"]
    assert [p["text"] for p in parts if p["type"] == "text"] == ["first words here", "second part now", "the last line"]
    for k, video in enumerate(row["videos"]):  # clip k holds the frames of [5k, 5k + 5)
        assert all(5 * k <= t < 5 * (k + 1) + 1e-3 for t in video["timestamps"])
    assert json.loads(row["extra"])["video"]["transcript"] == "subtitles"


def test_clip_modes_by_sentence_and_by_shot():
    from synthesis.video.decode import Frame
    from synthesis.video.speech import Segment

    dark, light = np.zeros((32, 32), np.float32), np.ones((32, 32), np.float32)
    frames = [Frame(t / 2, b"", dark if t < 9 else light) for t in range(16)]  # a cut at 4.5 s
    assert clip_bounds(frames, [], 8.0, ClipConfig(mode="shots")) == [(0.0, 4.5), (4.5, 8.0)]
    transcript = [Segment(0.2, 2.0, "one"), Segment(3.0, 5.0, "two"), Segment(5.5, 7.5, "three")]
    bounds = clip_bounds(frames, transcript, 8.0, ClipConfig(mode="sentences"))
    # a clip from 3.0 and one from 5.5 would hold 5 frames each; the 0-3 s clip holds 6
    assert bounds == [(0.0, 3.0), (3.0, 5.5), (5.5, 8.0)]
    assert [spoken_text(transcript, a, b) for a, b in bounds] == ["one", "two", "three"]
    assert [len(c) for c in split_frames(frames, bounds)] == [6, 5, 5]


def test_reordering_and_matching_answers_follow_the_source_order(tmp_path):
    items = []
    for k in range(4):
        times = [i / 10 for i in range(110)]
        path = write_video(tmp_path / f"v{k}.mp4", times, lambda i, t, k=k: np.full((120, 160, 3), (i * 2 + 50 * k) % 256, np.uint8),
                           (120, 160))
        path.with_suffix(".txt").write_text(f"video {k}")
    items = list_items(str(tmp_path))
    cfg = VideoConfig(speech=SpeechConfig(engine="none"))
    rows = [r for batch in process_group(items, cfg, Recognizer(cfg.speech)) for r in batch]
    frames_of = {}  # origin -> {frame sha: time}, from each video's caption row (all sampled frames)
    for r in rows:
        extra = json.loads(r["extra"])
        if extra.get("task") == "caption":
            v = r["videos"][0]
            frames_of[extra["origin"]] = {schema.image_entry(f)["sha256"]: t for f, t in zip(v["frames"], v["timestamps"])}
    reorder = [r for r in rows if json.loads(r["extra"]).get("task") == "frame_reordering"]
    assert len(reorder) == 4
    for r in reorder:
        shown = [frames_of[json.loads(r["extra"])["origin"]][img["sha256"]] for img in r["images"]]
        order = [int(x) - 1 for x in r["messages"][1]["content"][0]["text"].split(", ")]
        assert [shown[i] for i in order] == sorted(shown) and shown != sorted(shown)
    matching = [r for r in rows if json.loads(r["extra"]).get("task") == "video_matching"]
    assert len(matching) == 4
    for r in matching:
        origin = json.loads(r["extra"])["origin"]
        own = frames_of[origin]
        label = r["messages"][1]["content"][0]["text"]
        context, candidates = r["videos"][0], r["videos"][1:]
        true = [k for k, v in enumerate(candidates) if all(schema.image_entry(f)["sha256"] in own for f in v["frames"])]
        assert [chr(ord("A") + k) for k in true] == [label]
        assert min(candidates[true[0]]["timestamps"]) > max(context["timestamps"])


def _scenes(i: int, t: float) -> np.ndarray:
    """Three still scenes of 4 s each (a hard cut at 4 s and 8 s), a small blinking dot in each."""
    scene = int(t // 4)
    frame = np.full((480, 640, 3), (40 + 90 * scene) % 256, dtype=np.uint8)
    frame[:, :, scene % 3] = 200
    frame[10:14, 10:14] = 255 if i % 2 else 0  # a change far under the similarity threshold
    return frame


def test_slow_fast_preset_marks_scene_changes_slow_and_keeps_the_budget(tmp_path):
    from PIL import Image

    from synthesis.video.frames import FrameRules

    path = write_video(tmp_path / "scenes.mp4", [i / 10 for i in range(120)], _scenes, (480, 640))
    path.with_suffix(".txt").write_text("Three scenes.")
    item = next(i for i in list_items(str(tmp_path)) if i["origin"] == "scenes.mp4")
    budget = 3000  # binds: 3 slow + 21 fast frames of a 392-token picture would take 3633
    cfg = VideoConfig(frames=FrameRules(preset="keye_vl_1_5_slow_fast", slow_fast_max_tokens=budget),
                      speech=SpeechConfig(engine="none"))
    rows, facts, _ = process_item(item, cfg, Recognizer(cfg.speech))
    video = _caption_video(rows)
    times = video["timestamps"]
    # 24 frames at 2 fps; slow exactly where a new scene starts (the first frame at or after 0, 4, 8 s)
    expected = "".join("S" if k == 0 or int(t // 4) != int(times[k - 1] // 4) else "F" for k, t in enumerate(times))
    assert facts.pathways == expected and expected.count("S") == 3
    sizes = [Image.open(__import__("io").BytesIO(f)).size for f in video["frames"]]
    tokens = [(w // 28) * (h // 28) for w, h in sizes]
    slow = {tk for tk, p in zip(tokens, expected) if p == "S"}
    fast = {tk for tk, p in zip(tokens, expected) if p == "F"}
    assert len(slow) == len(fast) == 1 and fast.pop() < slow.pop()
    assert sizes[0] == (video["width"], video["height"])
    # within the budget, and close to it: the slow frames took what the fast ones left
    assert 0.8 * budget < sum(tokens) <= budget


def test_frame_ocr_reads_on_screen_text_with_its_time(tmp_path):
    from PIL import Image, ImageDraw, ImageFont

    from synthesis.video.enrich import FrameOcrConfig

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", 48)

    def titled(i: int, t: float) -> np.ndarray:
        picture = Image.new("RGB", (480, 270), (255, 255, 255))
        text = "HELLO 2024" if 2 <= t < 6 else ("GOODBYE" if t >= 6 else "")
        if text:
            ImageDraw.Draw(picture).text((40, 100), text, fill=(0, 0, 0), font=font)
        return np.asarray(picture)

    write_video(tmp_path / "titles.mp4", [i / 10 for i in range(100)], titled, (270, 480))
    item = next(i for i in list_items(str(tmp_path)) if i["origin"] == "titles.mp4")
    cfg = VideoConfig(speech=SpeechConfig(engine="none"), ocr=FrameOcrConfig(enabled=True))
    rows, _, _ = process_item(item, cfg, Recognizer(cfg.speech))
    row = next(r for r in rows if r["kind"] == "ocr")
    texts = json.loads(row["extra"])["texts"]
    assert [text.replace(" ", "") for _, text in texts] == ["HELLO2024", "GOODBYE"]
    # read every second sampled frame (one a second): first seen within a second of appearing
    assert 2.0 <= texts[0][0] < 3.0 and 6.0 <= texts[1][0] < 7.0


def test_recaption_through_the_model_client_and_a_failing_server(tmp_path):
    from model_client_helpers import ScriptedServer

    from synthesis.model_client.config import ClientConfig
    from synthesis.video.enrich import RecaptionConfig

    write_video(tmp_path / "clip.mp4", [i / 10 for i in range(60)], _draw, (120, 160))
    item = next(i for i in list_items(str(tmp_path)) if i["origin"] == "clip.mp4")
    caption = "A green bar slides to the right over a background that slowly brightens."
    scripts = {"cap": [("reply", [caption])], "down": [("status", 503)]}
    with ScriptedServer(scripts) as server:
        for script in ("cap", "down"):
            client = ClientConfig(base_urls=[server.url], model="captioner", max_retries=1, backoff_s=0.01)
            cfg = VideoConfig(speech=SpeechConfig(engine="none"),
                              recaption=RecaptionConfig(enabled=True, client=client, frames=4,
                                                        prompt=f"script:{script} Describe the video."))
            rows, facts, _ = process_item(item, cfg, Recognizer(cfg.speech))
            recaptions = [r for r in rows if json.loads(r["extra"]).get("task") == "recaption"]
            if script == "cap":
                assert [r["messages"][1]["content"][0]["text"] for r in recaptions] == [caption]
                body = server.bodies("cap")[0]
                images = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"]
                assert len(images) == 4  # the frames went to the model as images
            else:
                assert recaptions == [] and facts.errors == {"recaption": "http_503_exhausted"}
                assert all(json.loads(r["extra"])["video"]["errors"] == facts.errors for r in rows)
                assert any(json.loads(r["extra"]).get("task") == "frame_reordering" for r in rows)  # the rest stays


@pytest.mark.parametrize("angle,corner", [(90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")])
def test_rotation_metadata_is_applied(tmp_path, angle, corner):
    """A red block in the coded picture's top-left corner; the display matrix turns the picture
    `angle` degrees counter-clockwise, so the block ends in `corner` (ffmpeg's autorotate put it
    in the same corners when this test was written)."""
    import io

    from PIL import Image

    def marked(i: int, t: float) -> np.ndarray:
        frame = np.full((120, 160, 3), 255, np.uint8)
        frame[:30, :40] = (255, 0, 0)
        return frame

    _item(tmp_path, "phone.mp4", [i / 10 for i in range(20)], rotation=angle)
    item = next(i for i in list_items(str(tmp_path)) if i["origin"] == "phone.mp4")
    item_path = write_video(tmp_path / "phone.mp4", [i / 10 for i in range(20)], marked, (120, 160), rotation=angle)
    assert item["path"] == str(item_path.resolve())
    cfg = VideoConfig(speech=SpeechConfig(engine="none"))
    rows, facts, _ = process_item(item, cfg, Recognizer(cfg.speech))
    video = _caption_video(rows)
    picture = np.asarray(Image.open(io.BytesIO(video["frames"][0])).convert("RGB"))
    red = (picture[:, :, 0] > 200) & (picture[:, :, 1] < 80)
    ys, xs = np.nonzero(red)
    h, w = picture.shape[:2]
    assert f"{'top' if ys.mean() < h / 2 else 'bottom'}-{'left' if xs.mean() < w / 2 else 'right'}" == corner
    assert (h > w) == (angle % 180 != 0) and (video["height"], video["width"]) == (h, w)
    assert facts.rotation == angle % 360


def test_whisper_path_runs_the_transformers_pipeline_on_speech_regions_only(tmp_path):
    """A tiny random Whisper (video_helpers): its words are nonsense, but they come back as timed
    words shifted to the media's clock, inside the speech region, and silence never reaches it."""
    from video_helpers import save_tiny_whisper

    folder = save_tiny_whisper(tmp_path / "whisper")
    audio = place([(1.0, speak("the quick brown fox jumps over the lazy dog"))], 6.0)
    spoken = (1.0, 1.0 + len(speak("the quick brown fox jumps over the lazy dog")) / 16000)
    recognizer = Recognizer(SpeechConfig(engine="whisper", whisper_path=str(folder), language="en"))
    segments = recognizer.transcribe(audio, offset=0.5)
    assert len(segments) == 1 and segments[0].text and segments[0].words
    # the region: what the detector heard (10 ms frames: a frame early at most) widened by pad_seconds
    slack = SpeechConfig().pad_seconds + 0.011
    for word in segments[0].words:
        assert spoken[0] + 0.5 - slack <= word.start <= word.end <= spoken[1] + 0.5 + slack
    assert recognizer.transcribe(np.zeros(16000 * 3, np.int16)) == []
    with pytest.raises(ValueError, match="whisper_path"):
        Recognizer(SpeechConfig(engine="whisper")).transcribe(audio)
