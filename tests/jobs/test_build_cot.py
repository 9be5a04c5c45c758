"""`jobs/build_cot.py`: six complete folders of reasoning data, every agentic row's code printing
exactly its <sandbox_output> when run again in the sandbox, a teacher's replies kept only when
right, and the cold start drawing the modes by their weights."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from tests.jobs.cot_helpers import TeacherServer
from tests.launch_helpers import fresh_shell_env

from curation import config as configuration
from curation import schema
from curation.schema.manifest import list_shards, read_manifest

ROOT = Path(__file__).resolve().parents[2]
MODES = ["think", "no_think", "auto_think", "agentic"]


@pytest.fixture(scope="module")
def cot(spark, tmp_path_factory):
    from jobs.build_cot import BuildCotConfig, run

    out = tmp_path_factory.mktemp("cot") / "cot"
    run(configuration.load(BuildCotConfig, [f"output={out}", "count=12"]), spark)
    return out


def rows(folder: Path) -> list[dict]:
    return [r for shard in list_shards(folder) for r in pq.read_table(shard.path).to_pylist()]


def test_six_complete_folders_whose_funnels_balance(cot):
    for name in [*MODES, "preference", "rl"]:
        folder = cot / name
        manifest = read_manifest(folder)
        funnel = json.loads((folder / "_funnel.json").read_text())
        assert funnel["input_rows"] == 12 == manifest["rows"] + manifest["rejects"]["rows"]
        assert manifest["rows"] >= 9, (name, funnel)  # a few may be refused by their checks, with a reason
        table = pq.read_table(list_shards(folder)[0].path)
        assert schema.validate_table(table) == {}
        stats = json.loads((folder / "_stats.json").read_text())
        assert stats["contents"]["rows"] == manifest["rows"] and len(stats["contents"]["task"]) >= 5
        assert set(stats["contents"]["lang"]) == {"en", "zh"}
        assert "## Steps" in (folder / "card" / "README.md").read_text()
    for mode in MODES:
        assert {r["think_mode"] for r in rows(cot / mode)} == {mode}
    assert all(r["rejected"] and r["rejected"] != r["messages"] and json.loads(r["extra"])["corruption"] for r in rows(cot / "preference"))
    assert all(r["answer"] and [m["role"] for m in r["messages"]] == ["user"] for r in rows(cot / "rl"))


def test_every_agentic_row_prints_its_sandbox_output_when_run_again(cot):
    from synthesis.cot.teacher import code_and_outputs
    from synthesis.reasoning import input_files
    from synthesis.sandbox import run_python

    agentic = rows(cot / "agentic")
    assert agentic
    for row in agentic:
        reply = "".join(p["text"] or "" for m in row["messages"] if m["role"] == "assistant" for p in m["content"] if p["type"] == "text")
        blocks = code_and_outputs(reply)
        assert blocks, reply[:200]
        inputs = json.loads(row["extra"])["agentic"]["input_images"]
        files = input_files([image["bytes"] for image in row["images"][:inputs]])
        for code, shown in blocks:
            result = run_python(code, files=files)
            assert result.ok and result.stdout == shown, (result.reason, result.stdout[:200], shown[:200])


def test_a_teacher_is_kept_only_when_right_and_its_code_prints_what_it_says(cot, spark, tmp_path):
    from jobs.build_cot import BuildCotConfig, run

    prompts = rows(cot / "rl")
    known = {p["content"][-1]["text"].strip(): r["answer"] for r in prompts[:8] for p in r["messages"]}
    with TeacherServer(known) as teacher:
        out = tmp_path / "taught"
        cfg = configuration.load(BuildCotConfig, [
            f"output={out}", "count=0", f"prompts={cot / 'rl'}", "teacher.enabled=true",
            f"teacher.client.base_urls={teacher.url}", "teacher.client.model=scripted", "teacher.samples=3",
            "folders=think,no_think,auto_think,agentic",
        ])
        run(cfg, spark)
    for mode in MODES:
        kept, funnel = rows(out / mode), json.loads((out / mode / "_funnel.json").read_text())
        assert funnel["input_rows"] == len(prompts)
        assert len(kept) == 8, mode  # exactly the prompts whose answer the teacher knows
        for row in kept:
            extra = json.loads(row["extra"])
            assert extra["replies_asked"] == 3 and extra["replies_correct"] >= 1 and extra["teacher"] == "scripted"
            reply = row["messages"][-1]["content"][0]["text"]
            assert "999" not in reply and "something else" not in reply  # the wrong and the lying replies
        refused = pq.read_table(out / mode / "_rejects").to_pylist()
        assert {r["reason"] for r in refused} == {"no_correct_reply"} and len(refused) == len(prompts) - 8
    # the image an agentic reply's code saved: appended to the row's images, shown after its output
    for row in rows(out / "agentic"):
        parts, inputs = row["messages"][-1]["content"], json.loads(row["extra"])["agentic"]["input_images"]
        assert [p["type"] for p in parts] == ["text", "image", "text"] and len(row["images"]) == inputs + 1
        assert parts[0]["text"].endswith("</sandbox_output>") and parts[1]["index"] == inputs
        assert Image.open(io.BytesIO(row["images"][-1]["bytes"])).size == (16, 8)
    # shortest of the right ones
    think = rows(out / "think")[0]["messages"][-1]["content"][0]["text"]
    assert think.startswith("<think>Counted.</think>")


def test_the_cold_start_draws_the_modes_by_their_weights(cot, tmp_path):
    """Over 200+ draws the logged mode fractions are within 0.05 of the stage's weights. The reader
    draws ahead of training (its shuffle buffer of 256 rows and the packer's 64 fill first), so two
    steps draw over 300 rows."""
    data = ",".join(str(cot / m) for m in MODES)
    out = tmp_path / "train"
    cmd = [sys.executable, "-m", "training.launch", "stage=cot_coldstart", f"data={data}", f"output={out}",
           "max_steps=2", "max_tokens=1024", "export=false", "optimizer.lr=0"]
    done = subprocess.run(cmd, cwd=ROOT, env=fresh_shell_env(PYSPARK_PYTHON=sys.executable), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    weights = dict(zip(MODES, [0.4, 0.3, 0.2, 0.1]))
    drawn = {name.split("/")[-1]: value for name, value in last.items() if name.startswith("mix/")}
    assert set(drawn) == set(MODES) and last["rows_drawn"] >= 200, last
    for mode, weight in weights.items():
        assert abs(drawn[mode] - weight) <= 0.05, (mode, drawn, last["rows_drawn"])
    assert set(name.split("/")[-1] for name in last if name.startswith("trained_mix/")) <= set(MODES)


def test_jsonl_prompts_and_their_bad_lines(spark, tmp_path):
    import base64

    from jobs.build_cot import BuildCotConfig, run

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, format="PNG")
    inline = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "red.png").write_bytes(buf.getvalue())
    lines = [
        {"question": "What colour is the square?", "answer": "red", "image": inline},
        {"question": "How many squares?", "answer": "1", "answer_kind": "number", "images": ["pics/red.png"]},
        {"question": "Outside?", "answer": "x", "image": "../../etc/passwd"},
        {"question": "Missing picture?", "answer": "x", "image": "pics/none.png"},
        {"answer": "no question"},
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    with TeacherServer({"What colour is the square?": "red", "How many squares?": "1"}) as teacher:
        cfg = configuration.load(BuildCotConfig, [
            f"output={tmp_path / 'out'}", "count=0", f"prompts={prompts}", "teacher.enabled=true", "folders=think",
            "teacher.modes=think", f"teacher.client.base_urls={teacher.url}", "teacher.client.model=scripted",
            "teacher.samples=3",
        ])
        run(cfg, spark)
    kept = rows(tmp_path / "out" / "think")
    assert sorted(json.loads(r["extra"])["answer"] for r in kept) == ["1", "red"] and all(len(r["images"]) == 1 for r in kept)
    reasons = sorted(r["reason"] for r in pq.read_table(tmp_path / "out" / "think" / "_rejects").to_pylist())
    assert reasons == ["bad_prompt_line", "bad_prompt_line", "image_not_found", "unsafe_image_path"]
