"""Tagging's two options: CLIP image scores mixed into the text scores (checked against CLIP's
scores computed here directly), and a model classifier choosing among the nearest types (against
an OpenAI-compatible server on 127.0.0.1 whose picks follow a rule; the client is the real one)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from curation import config as configuration
from curation import schema
from curation.clip_model import ClipConfig, load_clip
from curation.workdir import ROW_KEY as ROW
from synthesis.model_client.config import ClientConfig
from synthesis.model_client.rule_server import RuleServer, completion, user_texts
from taskgalaxy.steps import _index, _Tagger
from taskgalaxy.tagging import TagConfig, clip_type_texts, mix_image_scores
from taskgalaxy.taxonomy import SEED, Taxonomy

QUESTIONS = ["How many apples are on the table?", "What does the sign say?", "Is the cup left of the plate?",
             "What is the trend of the line in the chart?"]


def _png(k: int) -> bytes:
    picture = Image.new("RGB", (64, 48), (40 * k % 255, 120, 200 - 30 * k))
    ImageDraw.Draw(picture).rectangle((5 + 6 * k, 5, 30 + 6 * k, 40), fill=(250, 200 - 40 * k, 20))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def _batch(images: list) -> pa.RecordBatch:
    messages = [[{"role": "user", "content": [{"type": "text", "text": q, "index": None}]}] for q in QUESTIONS]
    return pa.RecordBatch.from_pydict({ROW: list(range(len(QUESTIONS))), "messages": messages,
                                       "task_types": [[] for _ in QUESTIONS], "_t_image": images})


def _tags(cfg: TagConfig, images: list) -> tuple[list, list]:
    out = pa.Table.from_batches(list(_Tagger(cfg)(iter([_batch(images)])))).to_pydict()
    return out["_t_types"], out["_t_by"]


def test_mixing_puts_image_scores_on_the_text_scale():
    text = np.array([[0.1, 0.3, 0.5]])
    image = np.array([[0.2, 0.4, 0.0]])  # same spread as the text row, mean 0.2 -> moved to 0.3: [0.3, 0.5, 0.1]
    assert np.allclose(mix_image_scores(text, image, 0.5), [[0.2, 0.4, 0.3]])
    assert np.array_equal(mix_image_scores(text, image, 0.0), text)
    assert np.array_equal(mix_image_scores(text, np.full((1, 3), np.nan), 0.5), text)  # no image: the text's


def test_image_weight_one_follows_clip_and_zero_follows_the_text():
    images = [_png(k) for k in range(3)] + [b"not an image"]
    clip_cfg = ClipConfig()  # tiny-random: untrained, but its scores are what the option must follow
    by_text, _ = _tags(TagConfig(threshold=-1.0), images)
    assert by_text == [[p for p, _ in t] for t in _index(str(SEED), "").tag(QUESTIONS, threshold=-1.0)]
    mixed, _ = _tags(TagConfig(threshold=-1.0, image_weight=1.0, clip=clip_cfg), images)
    clip = load_clip(clip_cfg)
    leaves = clip.embed_texts(clip_type_texts(Taxonomy.load()))
    paths = [t.path for t in Taxonomy.load().leaves()]
    for k in range(3):  # the image alone decides: CLIP's nearest leaf to the image
        assert mixed[k] == [paths[int(np.argmax(leaves @ clip.embed_images([images[k]])[0]))]]
    assert mixed[3] == by_text[3]  # an unreadable image: the text decides


def classifier_reply(body: dict) -> tuple[int, dict]:
    """classifier-second picks the second listed type; classifier-wild names one that is not
    listed; classifier-none says none fits; anything else gets a 503."""
    listed = re.findall(r"^- ([^:\n]+):", user_texts(body)[0], flags=re.M)
    pick = {"classifier-second": listed[1], "classifier-wild": "made up~type~here", "classifier-none": "none"}
    if body["model"] not in pick:
        return 503, {"error": {"message": "down"}}
    return 200, completion(body, [json.dumps({"task_type": pick[body["model"]]})])


@pytest.fixture(scope="module")
def classifier_server():
    with RuleServer(classifier_reply) as server:
        yield server


@pytest.mark.parametrize("model, expect", [("classifier-second", "second"), ("classifier-wild", "fallback:outside_candidates"),
                                           ("classifier-none", "none"), ("classifier-down", "fallback:http_503_exhausted")])
def test_classifier_picks_among_the_nearest_types(classifier_server, model, expect):
    client = ClientConfig(base_urls=[classifier_server.url], model=model, max_retries=1, backoff_s=0.01)
    tags, by = _tags(TagConfig(threshold=-1.0, classify=True, classifier=client, candidates=5, top_k=2), [None] * 4)
    nearest = _index(str(SEED), "").tag(QUESTIONS, threshold=-1.0, top_k=2)
    if expect == "second":  # the second-nearest first, then the nearest (top_k=2)
        assert tags == [[n[1][0], n[0][0]] for n in nearest] and by == ["classifier"] * 4
    elif expect == "none":
        assert tags == [[]] * 4 and by == ["classifier"] * 4
    else:  # the embedding's answer stands, and why is recorded
        assert tags == [[p for p, _ in n] for n in nearest] and by == [expect] * 4


def test_build_sft_with_both_options(spark, tmp_path, classifier_server):
    from jobs.build_sft import BuildSftConfig, run

    m = schema.message
    rows = [schema.make_row("qa", "vqa", [m("user", schema.image_part(0), q), m("assistant", "yes")],
                            [schema.image_entry(_png(k))]) for k, q in enumerate(QUESTIONS)]
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(schema.rows_to_table(rows), src / "part-00000.parquet")
    args = [f"sources={src}", f"output={tmp_path / 'out'}", "card=false", "tag.image_weight=0.3", "tag.classify=true",
            f"tag.classifier.base_urls=[{classifier_server.url}]", "tag.classifier.model=classifier-second", "tag.top_k=2"]
    manifest = run(configuration.load(BuildSftConfig, args), spark)
    kept = pq.read_table(tmp_path / "out" / manifest["shards"][0]["path"]).to_pylist()
    direct, _ = _tags(TagConfig(image_weight=0.3, classify=True, top_k=2, classifier=ClientConfig(
        base_urls=[classifier_server.url], model="classifier-second")), [_png(k) for k in range(4)])
    by_question = {r["messages"][0]["content"][1]["text"]: r["task_types"] for r in kept}
    assert [by_question[q] for q in QUESTIONS] == direct
    stats = {s["step"]: s["stats"] for s in json.loads((tmp_path / "out" / "_stats.json").read_text())["steps"]}
    assert stats["tag_task_types"]["decided_by"] == {"classifier": 4}
