"""`spark-submit jobs/build_video.py` end to end on the generated sample: every planted broken input
refused with its reason, the funnel balanced, the rows valid, the card's video section, the same
bytes from an in-process re-run on another partitioning, and a shard's video row trained through
the processor and the tiny model with temporal ids that follow the frames' times."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation import config as configuration
from curation import schema

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}


def shard_bytes(folder: Path) -> dict[str, bytes]:
    files = sorted(folder.glob("part-*.parquet")) + sorted((folder / "_rejects").glob("part-*.parquet"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def video_sample(tmp_path_factory):
    from synthesis.video.sample import make_sample

    return make_sample(tmp_path_factory.mktemp("video") / "sample")


@pytest.fixture(scope="module")
def video_output(tmp_path_factory, video_sample):
    out = tmp_path_factory.mktemp("video_cli") / "video"
    cmd = [str(BIN / "spark-submit"), "--master", "local[2]", "--conf", f"spark.pyspark.python={sys.executable}",
           "jobs/build_video.py", f"output={out}", f"sample_dir={video_sample}"]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rows kept" in result.stdout
    return out


def _rows(folder: Path) -> list[dict]:
    return [r for p in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_every_planted_input_is_refused_with_its_reason_and_the_funnel_balances(video_output, video_sample):
    planted = json.loads((video_sample / "_planted.json").read_text())["rejects"]
    rejects = pq.read_table(video_output / "_rejects").to_pylist()
    got = {r["origin"]: r["reason"] for r in rejects}
    assert got == planted
    funnel = json.loads((video_output / "_funnel.json").read_text())
    kept = len(_rows(video_output))
    assert funnel["input_rows"] == kept + len(rejects) and funnel["kept_rows"] == kept


def test_rows_are_valid_and_every_good_video_gave_rows(video_output, video_sample):
    rows = _rows(video_output)
    table = pq.read_table(sorted(video_output.glob("part-*.parquet"))[0])
    assert schema.validate_table(table) == {}
    by_origin: dict[str, set] = {}
    for r in rows:
        extra = json.loads(r["extra"])
        by_origin.setdefault(extra["origin"], set()).add(extra.get("task", r["kind"]))
    good = {"talk.mp4", "lecture.mkv", "cooking.webm", "street.mov", "silent.ts", "no_audio.mp4", "vfr.mp4",
            "videos.tar/a001.mp4", "videos.tar/a002.mp4", "table.jsonl#0", "table.jsonl#1"}
    assert set(by_origin) == good
    # subtitled videos: interleaved rows whose text is the subtitles, cue by cue in clip order
    cooking = next(r for r in rows if r["kind"] == "interleaved" and json.loads(r["extra"])["origin"] == "cooking.webm")
    texts = [p["text"] for p in cooking["messages"][0]["content"] if p["type"] == "text"]
    assert texts == ["welcome to the kitchen", "first we wash the vegetables"]
    # silent videos get no speech text, ever
    for r in rows:
        extra = json.loads(r["extra"])
        if extra["origin"] in ("silent.ts", "no_audio.mp4"):
            assert r["kind"] != "interleaved" and extra["video"]["transcript"] == "none"
    card = (video_output / "card" / "README.md").read_text()
    assert "## Videos" in card and "11 videos" in card


def test_rerun_in_process_on_other_partitions_gives_the_same_bytes(video_output, video_sample, spark, tmp_path):
    from jobs.build_video import BuildVideoConfig, run

    cfg = configuration.load(BuildVideoConfig, [f"output={tmp_path / 'again'}", f"sample_dir={video_sample}",
                                                "partitions=1", "card=false"])
    run(cfg, spark)
    assert shard_bytes(tmp_path / "again") == shard_bytes(video_output)


def test_a_video_row_trains_with_temporal_ids_from_its_frame_times(video_output):
    import torch

    from training.model import KeyeForConditionalGeneration, load_model_config
    from training.processor import KeyeProcessor, collate_packed, load_tokenizer

    torch.manual_seed(0)
    tiny_model = KeyeForConditionalGeneration(load_model_config(ROOT / "configs" / "models" / "tiny.yaml"))
    tokenizer = load_tokenizer()

    rows = _rows(video_output)
    row = next(r for r in rows if r["kind"] == "video" and json.loads(r["extra"]).get("task") == "caption")
    video = row["videos"][0]
    processor = KeyeProcessor(tokenizer)  # the real budgets: the stored frames are already their size
    sample = processor(row)
    (t, gh, gw), = sample.video_grid_thw.tolist()
    assert (t, gh * 14, gw * 14) == (len(video["frames"]), video["height"], video["width"])
    block = (sample.input_ids == processor.video_token_id).nonzero().flatten()
    start = int(sample.position_ids[0, block[0]])
    per_frame = (gh // 2) * (gw // 2)
    temporal = (sample.position_ids[0, block].view(t, per_frame)[:, 0] - start).tolist()
    times = video["timestamps"]
    spf = (times[-1] - times[0]) / (len(times) - 1)
    # the released rule: int(k x seconds_per_frame x 2); for this constant-rate video that is the
    # frame's own time x 2 from the first, truncated, to within the float32 rounding of k x spf
    assert temporal == [int(torch.tensor(k * spf * 2, dtype=torch.float32)) for k in range(t)]
    assert all(abs(tk - (ts - times[0]) * 2) < 1 + 1e-3 for tk, ts in zip(temporal, times))
    out = tiny_model(**collate_packed([sample]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.num_loss_tokens.item() > 0
    grads = [p.grad for p in tiny_model.visual.parameters() if p.grad is not None]  # the frames reached the ViT
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
