"""The generation path in Spark against an OpenAI-compatible server on 127.0.0.1 (its replies are
scripted by rule; the client, parsing and voting are the real ones): a 429 storm retried, prose
instead of JSON re-asked, labels outside the candidates discarded and counted, a judge that times
out recorded, pairs without enough yes votes refused; every image accounted for, funnel balanced."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

from taskgalaxy_helpers import MADE_UP, GenerationServer, picky  # noqa: E402

from curation import schema  # noqa: E402
from curation.agreement import ballot_from_detail  # noqa: E402
from curation.writer import read_manifest, write_output  # noqa: E402
from synthesis.model_client.config import ClientConfig  # noqa: E402
from taskgalaxy.generate import STEP, GenerateConfig, generation_plan  # noqa: E402


def _png(k: int) -> bytes:
    picture = Image.new("RGB", (96, 64), (30 * k % 255, 90, 200 - 20 * k))
    ImageDraw.Draw(picture).ellipse((10 + 5 * k, 10, 50 + 5 * k, 50), fill=(250, 250, 20))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


def test_generation_end_to_end_with_bad_replies(spark, tmp_path):
    rows = [schema.caption_row("pics", _png(k), f"picture {k}") for k in range(6)]
    rows.append(schema.caption_row("pics", b"not an image at all", "broken"))
    src = tmp_path / "pics"
    src.mkdir()
    pq.write_table(schema.rows_to_table(rows), src / "part-00000.parquet")
    with GenerationServer(storm=6, slow_seconds=1.5) as server:
        llm = ClientConfig(base_urls=[server.url], model="writer", max_retries=8, backoff_s=0.01, schema_reasks=2)
        judge = ClientConfig(base_urls=[server.url], timeout_s=0.5, max_retries=0, backoff_s=0.01, logprobs=True)
        cfg = GenerateConfig(enabled=True, llm=llm, judge=judge, judge_models=["judge-yes", "judge-picky", "judge-slow"],
                             votes_needed=2, top_k=5)
        frame = generation_plan(spark, [str(src / "part-00000.parquet")], cfg).frame()
        out = tmp_path / "out"
        write_output(frame, str(out), steps=[STEP], config={}, card=True)
        statuses = list(server.statuses)
        requests = list(server.requests)
    manifest = read_manifest(out)
    kept = pq.read_table(out / manifest["shards"][0]["path"]).to_pylist() if manifest["shards"] else []
    rejects = pq.read_table(out / "_rejects").to_pylist()
    funnel = json.loads((out / "_funnel.json").read_text())
    assert funnel["input_rows"] == len(kept) + len(rejects) and funnel["kept_rows"] == len(kept)
    # every image is accounted for: two pairs each (the filter named two candidates), or a reason
    ids = [r["id"] for r in rows]
    by_image: dict[str, list] = {}
    for r in kept:
        by_image.setdefault(json.loads(r["extra"])["origin"], []).append(("kept", r["task_types"][0]))
    for r in rejects:
        by_image.setdefault(r["origin"], []).append((r["reason"], None))
    assert set(by_image) == set(ids)
    assert by_image[ids[-1]] == [("undecodable_image", None)]
    assert all(len(v) == 2 for i, v in by_image.items() if i != ids[-1])
    # kept pairs: two yes votes (judge-yes, judge-picky), the slow judge's timeout recorded
    assert kept, [(r["reason"], r["detail"][:300]) for r in rejects]
    for r in kept:
        extra = json.loads(r["extra"])
        assert r["task_types"][0] in extra["candidates"] and MADE_UP not in r["task_types"]
        assert extra["discarded_labels"] == [MADE_UP]
        votes = {v["judge"]: v for v in extra["votes"]}
        assert votes["judge-yes"]["vote"] is True and votes["judge-picky"]["vote"] is True
        assert votes["judge-slow"] == {"judge": "judge-slow", "error": "timeout"}
        assert votes["judge-yes"]["mean_logprob"] == -0.5  # the endpoint's logprobs, kept with the vote
    # judge-picky turned down some images: their pairs had one yes vote of the two needed
    data = {r["id"]: r["images"][0]["bytes"] for r in rows}
    assert 0 < sum(picky(data[i]) for i in ids[:-1]) < len(ids) - 1  # the rule splits these images
    assert {json.loads(r["extra"])["origin"] for r in kept} == {i for i in ids[:-1] if not picky(data[i])}
    refused_pairs = [r for r in rejects if r["reason"] == "judges_rejected"]
    assert {r["origin"] for r in refused_pairs} == {i for i in ids[:-1] if picky(data[i])}
    assert len(refused_pairs) + len(kept) == 2 * (len(ids) - 1)
    # a refused pair's detail names every vote; the card's agreement counts kept and refused pairs
    assert all(ballot_from_detail(r["detail"]) == {"judge-yes": True, "judge-picky": False, "judge-slow": None}
               for r in refused_pairs)
    assert all(r["detail"].endswith("judge-slow:timeout") for r in refused_pairs)
    card = (out / "card" / "README.md").read_text()
    alike = len(kept) / (len(kept) + len(refused_pairs))  # judge-yes always yes; judge-picky yes on kept pairs only
    assert f"| judge-picky / judge-yes | {len(kept) + len(refused_pairs)} | {alike:.3f} |" in card, card[card.find("## Judges"):][:800]
    assert f"| judge-slow | 0 ({len(kept) + len(refused_pairs)}) | - |" in card  # it timed out on every pair
    # the 429 storm was retried, never a reason; the prose filter replies were re-asked
    assert statuses.count(429) == 6 and not any("429" in r["reason"] for r in rejects)
    filters = [b for b in requests if b.get("model") == "writer" and "candidate task types" in json.dumps(b["messages"][0])]
    assert sum(1 for b in filters if len(b["messages"]) > 1) >= len(ids) - 1


def test_build_sft_runs_the_generation_path_when_a_model_is_configured(spark, tmp_path):
    from curation import config as configuration
    from jobs.build_sft import BuildSftConfig, run

    rows = [schema.caption_row("pics", _png(k), f"picture {k}") for k in range(3)]
    src = tmp_path / "pics"
    src.mkdir()
    pq.write_table(schema.rows_to_table(rows), src / "part-00000.parquet")
    with GenerationServer(storm=0) as server:
        args = [f"sources={src}", f"output={tmp_path / 'sft'}", "generate.enabled=true",
                f"generate.llm.base_urls=[{server.url}]", "generate.llm.model=writer", "generate.llm.backoff_s=0.01",
                f"generate.judge.base_urls=[{server.url}]", "generate.judge_models=[judge-yes,judge-yes-too,judge-picky]", "balance.cap=1", "card=true"]
        manifest = run(configuration.load(BuildSftConfig, args), spark)
    funnel = json.loads((tmp_path / "sft" / "_funnel.json").read_text())
    assert [s["step"] for s in funnel["steps"]][:2] == ["read_shards", STEP]
    kept = pq.read_table(tmp_path / "sft" / manifest["shards"][0]["path"]).to_pylist()
    generated = [r for r in kept if r["source"] == "taskgalaxy"]
    # three judges, two always yes: every image's two pairs pass, with the types the filter chose
    rejects = pq.read_table(tmp_path / "sft" / "_rejects").to_pylist()
    balanced_out = [r for r in rejects if r["source"] == "taskgalaxy"]
    assert {r["reason"] for r in balanced_out} <= {"balanced_out"}
    assert len(generated) + len(balanced_out) == 2 * len(rows) and all(r["task_types"] for r in generated)
    assert funnel["input_rows"] == len(rows) + 2 * len(rows) and funnel["kept_rows"] == len(kept)
    # the judges' tally counts every judged pair, also those the balance left out afterwards
    judges = json.loads((tmp_path / "sft" / "_stats.json").read_text())["judges"]
    picky_pairs = 2 * sum(picky(r["images"][0]["bytes"]) for r in rows)
    assert judges["items"] == 2 * len(rows) and judges["judges"]["judge-picky"]["yes"] == 2 * len(rows) - picky_pairs
    assert judges["pairs"]["judge-yes / judge-yes-too"]["agreement"] == 1.0
    assert "## Judges" in (tmp_path / "sft" / "card" / "README.md").read_text()


def test_max_images_holds_for_the_whole_job(tmp_path):
    """The row budget is cut from the files' footers on the driver, so it does not multiply by tasks."""
    from taskgalaxy.generate import generation_units

    rows = [schema.caption_row("pics", _png(k), f"picture {k}") for k in range(7)]
    one, two = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    pq.write_table(schema.rows_to_table(rows[:6]), one, row_group_size=3)
    pq.write_table(schema.rows_to_table(rows[6:]), two)
    assert generation_units([one, two]) == [(one, 0, -1), (one, 1, -1), (two, 0, -1)]
    assert generation_units([one, two], max_images=5) == [(one, 0, 3), (one, 1, 2)]
    assert generation_units([one, two], max_images=7) == [(one, 0, 3), (one, 1, 3), (two, 0, 1)]
