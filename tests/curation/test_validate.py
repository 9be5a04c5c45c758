"""Validation: each kind of bad image or text gets its own reason; good rows pass untouched."""

import io
import json

import pytest
from PIL import Image

from curation import schema
from curation.sample_corpus import bomb_png
from curation.steps import REJECT, with_reject_column
from curation.validate import ValidateConfig, check_image, check_text, validate

CFG = ValidateConfig()


def encoded(size=(64, 48), fmt="JPEG", mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (10, 200, 30)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "image_empty"),
        (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, "image_decode_error"),
        (b"definitely not an image", "image_decode_error"),
        (encoded(fmt="PNG")[:60], "image_truncated"),
        (bomb_png(), "image_too_many_pixels"),
        (encoded((20, 200)), "image_too_small"),
        (encoded((6000, 28), fmt="PNG"), "aspect_ratio_too_extreme"),
    ],
)
def test_bad_images_have_their_reason(data, reason):
    assert check_image(data, CFG)[0] == reason


def test_bomb_is_refused_from_its_header_without_decoding():
    reason, detail = check_image(bomb_png(50_000, 50_000), CFG)
    assert reason == "image_too_many_pixels" and "50000x50000" in detail


def test_good_image_reports_size_and_format():
    assert check_image(encoded((64, 48)), CFG) == (None, (64, 48, "JPEG"))


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "text_empty"),
        ("   \n\t ", "text_empty"),
        ("x" * (CFG.max_text_chars + 1), "text_too_long"),
        ("ok\x00\x01\x02\x03\x04\x05\x06\x07", "text_control_chars"),
        ("\ufffd\ufffd\ufffd broken", "text_control_chars"),
        ("CafÃ© crÃ¨me Ã  la franÃ§aise", "text_mojibake"),
        ("å¤§å®¶å¥½ï¼Œè¿™æ˜¯", "text_mojibake"),
    ],
)
def test_bad_texts_have_their_reason(text, reason):
    assert check_text(text, CFG)[0] == reason


@pytest.mark.parametrize("text", ["A red circle on a blue background.", "蓝色背景上的红色圆形。", "Café crème, naïve façade — Ça va?", "line one\nline two\ttab"])
def test_good_texts_pass(text):
    assert check_text(text, CFG) is None


def test_step_marks_only_kept_rows(keyed_frame):
    good = schema.caption_row("s", encoded(), "fine caption", extra={"origin": "good"})
    png = schema.caption_row("s", encoded(fmt="PNG"), "a png", extra={"origin": "png"})
    bad = schema.caption_row("s", b"junk", "bad image", extra={"origin": "bad"})
    already = schema.caption_row("s", b"junk", "", extra={"origin": "already"})
    wrong_size = schema.caption_row("s", encoded(), "says another size", extra={"origin": "wrong_size"})
    wrong_size["images"][0]["width"] = 10
    frame = with_reject_column(keyed_frame([good, png, bad, already, wrong_size], files=2))
    from pyspark.sql import functions as F

    frame = frame.withColumn(REJECT, F.when(F.get_json_object("extra", "$.origin") == "already",
                                            F.struct(F.lit("earlier").alias("step"), F.lit("x").alias("reason"), F.lit(None).cast("string").alias("detail"))))
    out = {json.loads(r["extra"])["origin"]: r for r in validate(frame, CFG).toArrow().to_pylist()}
    assert len(out) == 5
    assert out["good"][REJECT] is None and out["png"][REJECT] is None
    assert out["bad"][REJECT]["step"] == "validate" and out["bad"][REJECT]["reason"] == "image_decode_error"
    assert out["already"][REJECT]["step"] == "earlier"  # untouched
    assert out["wrong_size"][REJECT]["reason"] == "row_malformed" and "10x48" in out["wrong_size"][REJECT]["detail"]
    assert out["good"]["images"] == [good["images"][0]]  # the step changes no row


def test_odd_formats_are_reencoded_at_ingest():
    from curation.sources.common import make_caption_row

    bmp = make_caption_row("s", "a.bmp", encoded(fmt="BMP"), b"a bitmap")
    data = bmp["images"][0]["bytes"]
    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert schema.validate_row({k: bmp[k] for k in schema.COLUMNS}) == []
    jpeg = encoded()
    assert make_caption_row("s", "a.jpg", jpeg, b"a photo")["images"][0]["bytes"] == jpeg  # kept as found
    assert make_caption_row("s", "x", b"junk", b"t")["images"][0]["bytes"] == b"junk"  # validation refuses it
