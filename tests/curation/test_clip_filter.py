"""CLIP scoring inside Spark equals open_clip run directly; filters keep what they promise;
missing weights are an error that names the setting, never a random model."""

import io
import json
import math

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from curation import schema
from curation.clip_filter import ClipConfig, ClipWeightsError, clip_filter, resolve_weights, score_rows
from curation.steps import REJECT, with_reject_column

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    # vocab_size must stay 49408: the bundled BPE tokenizer emits ids up to that
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny open_clip architecture registered from a file, with random weights saved to disk."""
    folder = tmp_path_factory.mktemp("clip")
    config = folder / "kf-test-tiny.json"
    config.write_text(json.dumps(TINY))
    open_clip.add_model_config(config)
    torch.manual_seed(123)
    model = open_clip.create_model("kf-test-tiny")
    weights = folder / "weights.pt"
    torch.save(model.state_dict(), weights)
    return ClipConfig(model="kf-test-tiny", model_config=str(config), pretrained=str(weights), batch_size=3)


def picture(i: int) -> bytes:
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


CAPTIONS = ["a cat", "a red square", "two dogs on grass", "蓝色的圆形", "a photo of text", "nothing", "sky", "a car"]


def rows(source="s"):
    out = [schema.caption_row(source, picture(i), c, extra={"origin": f"{source}{i}"}) for i, c in enumerate(CAPTIONS)]
    out.append(schema.make_row(source, "text", [schema.message("document", "no image here")], extra={"origin": f"{source}-text"}))
    return out


@pytest.fixture
def frame(keyed_frame):
    return lambda rows_: with_reject_column(keyed_frame(rows_, files=2))


def direct_scores(cfg: ClipConfig) -> np.ndarray:
    model, _, preprocess = open_clip.create_model_and_transforms(cfg.model, pretrained=cfg.pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(cfg.model)
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(Image.open(io.BytesIO(picture(i))).convert("RGB")) for i in range(len(CAPTIONS))]))
        txt = model.encode_text(tokenizer(CAPTIONS))
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (img * txt).sum(-1).numpy()


def test_spark_scores_equal_open_clip(frame, tiny_clip):
    data = rows()
    scores = {r["id"]: r["clip_score"] for r in score_rows(frame(data), tiny_clip).collect()}
    got = np.array([scores[data[i]["id"]] for i in range(len(CAPTIONS))])
    # float32 embeddings of 32 dimensions: cosines agree to ~1e-7; 1e-5 leaves room for the
    # batch padding's kernel path (the same on every x86 CPU, unlike bit equality)
    np.testing.assert_allclose(got, direct_scores(tiny_clip), atol=1e-5)
    assert data[-1]["id"] not in scores  # not a caption row: not scored
    out = {json.loads(r["extra"])["origin"]: r for r in clip_filter(frame(data), tiny_clip).toArrow().to_pylist()}
    assert out["s-text"]["clip_score"] is None and out["s0"]["clip_score"] == pytest.approx(scores[data[0]["id"]])


def test_threshold_and_top_fraction(frame, tiny_clip):
    expected = direct_scores(tiny_clip)
    threshold = float(np.median(expected))
    cfg = ClipConfig(**{**tiny_clip.__dict__, "mode": "threshold", "threshold": threshold})
    out = clip_filter(frame(rows()), cfg).toArrow().to_pylist()
    rejected = {json.loads(r["extra"])["origin"] for r in out if r[REJECT]}
    assert rejected == {f"s{i}" for i, v in enumerate(expected) if v < threshold}
    assert all(r[REJECT]["reason"] == "clip_below_threshold" for r in out if r[REJECT])

    cfg = ClipConfig(**{**tiny_clip.__dict__, "mode": "top_fraction", "top_fraction": 0.3})
    both = rows("a") + rows("b")[:5]
    out = clip_filter(frame(both), cfg).toArrow().to_pylist()
    kept = {json.loads(r["extra"])["origin"] for r in out if r[REJECT] is None}
    best_a = {f"a{i}" for i in np.argsort(-expected)[: math.ceil(0.3 * 8)]}
    best_b = {f"b{i}" for i in np.argsort(-expected[:5])[: math.ceil(0.3 * 5)]}
    assert kept == best_a | best_b | {"a-text"}  # per source; unscored rows pass
    assert len(out) == len(both)


def test_missing_weights_are_a_clear_error(tiny_clip):
    # conftest sets HF_HUB_OFFLINE=1, as on a machine without network
    with pytest.raises(ClipWeightsError, match="clip.pretrained"):
        resolve_weights(ClipConfig(model="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir="/nonexistent-cache"))
    with pytest.raises(ClipWeightsError, match="needs clip.pretrained"):
        resolve_weights(ClipConfig(model="ViT-B-32"))
    with pytest.raises(ClipWeightsError, match="neither a file nor a tag"):
        resolve_weights(ClipConfig(model="ViT-B-32", pretrained="/no/such/file.pt"))
    with pytest.raises(ClipWeightsError, match="not an open_clip architecture"):
        resolve_weights(ClipConfig(model="no-such-model", pretrained="x"))
    assert resolve_weights(ClipConfig()) is None  # tiny-random: explicitly untrained
    assert resolve_weights(tiny_clip) == tiny_clip.pretrained


def test_scores_do_not_depend_on_partitioning(frame, tiny_clip):
    """Batches of one take another kernel path than batches of three; fixed batch shapes make a
    row's score bit-identical whatever rows share its batch."""
    results = []
    for partitions in (1, 4, 9):
        cfg = ClipConfig(**{**tiny_clip.__dict__, "partitions": partitions})
        out = score_rows(frame(rows()), cfg).toArrow().to_pylist()
        results.append({r["id"]: r["clip_score"] for r in out})
    assert results[0] == results[1] == results[2]
