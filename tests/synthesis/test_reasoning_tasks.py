"""Verifiable synthetic reasoning tasks (synthesis.reasoning): every answer confirmed by a check
that reads only the image; the mode formats parse back; agentic code reproduces its sandbox output
in the real sandbox; preference corruptions really differ; rl rows carry their answers."""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image
from reasoning_helpers import TEMPLATES, code_of, reply_text, row_inputs, sandbox_output_of, sandbox_run

from curation import schema
from curation.config import ConfigError
from synthesis.ocr_render import fonts
from synthesis.reasoning import (
    CORRUPTIONS,
    LANGS,
    MODES,
    TASK_KINDS,
    ModeTemplates,
    SandboxFailed,
    answers_match,
    check_task,
    corruptions_for,
    extract_answer,
    format_ok,
    lettering,
    make_task,
    mode_row,
    preference_row,
    rl_row,
)
from synthesis.reasoning.templates import DEFAULT_PATH, ROOT

# seeds the generators were never tuned on; counting is cheap to check, the OCR checks are not
SEED_BASE = 1000
SEEDS = {"count_shapes": 40}
OCR_SEEDS = 12
CJK = re.compile(r"[\u4e00-\u9fff]")


def seeds(kind: str) -> range:
    return range(SEED_BASE, SEED_BASE + SEEDS.get(kind, OCR_SEEDS))


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", TASK_KINDS)
def test_every_answer_is_confirmed_by_an_independent_check(kind, lang):
    for seed in seeds(kind):
        task = make_task(kind, seed, lang)
        ok, how = check_task(task)
        assert ok, f"{kind} {lang} seed {seed}: {how}"
        assert task.check == (ok, how)


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_checks_refuse_the_typical_wrong_answer(kind):
    """The check is not vacuous: the same image with the generator's plausible wrong answer fails."""
    for lang in LANGS:
        task = make_task(kind, SEED_BASE + 1, lang)
        assert task.distractor and task.distractor != task.answer
        ok, how = check_task(dataclasses.replace(task, answer=task.distractor))
        assert not ok, f"{kind} {lang}: the check accepted {task.distractor!r} (right: {task.answer!r}): {how}"


DIGEST = """
import hashlib, sys
from synthesis.reasoning import TASK_KINDS, make_task
h = hashlib.sha256()
for kind in TASK_KINDS:
    for lang in ("en", "zh"):
        task = make_task(kind, 7, lang)
        for data in [*task.images, task.question, task.answer, *task.steps, task.agentic_code]:
            h.update(data if isinstance(data, bytes) else data.encode())
print(h.hexdigest())
"""


def test_same_seed_same_bytes_other_seed_other_task():
    for kind in TASK_KINDS:
        for lang in LANGS:
            a, b = make_task(kind, 7, lang), make_task(kind, 7, lang)
            assert a == b
            assert mode_row(a, "think", TEMPLATES) == mode_row(b, "think", TEMPLATES)
            assert make_task(kind, 8, lang).images != a.images
    # and in other processes with other hash seeds (Spark's Python workers)
    digests = {
        subprocess.run(
            [sys.executable, "-c", DIGEST],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(digests) == 1


def test_both_languages_render_without_tofu():
    """Every text drawn was drawn in a face whose character map covers all of it; questions, steps
    and (for reading tasks) answers are in the task's language."""
    faces = {face.name: face for face in lettering.pool().faces}
    for kind in TASK_KINDS:
        for lang in LANGS:
            for seed in range(SEED_BASE, SEED_BASE + 5):
                task = make_task(kind, seed, lang)
                for name, text in task.meta["lettering"]:
                    assert fonts.covers(faces[name], text), (
                        f"{kind} {lang} {seed}: {name} lacks {fonts.missing(faces[name], text)!r}"
                    )
                in_chinese = [bool(CJK.search(t)) for t in (task.question, *task.steps)]
                assert all(in_chinese) if lang == "zh" else not any(in_chinese), (kind, lang, seed)
                if task.answer_kind == "text":
                    assert bool(CJK.search(task.answer)) == (lang == "zh")


def assert_prompt(row: dict, task) -> None:
    user = row["messages"][0]
    assert user["role"] == "user"
    assert [p["type"] for p in user["content"]] == ["image"] * len(task.images) + ["text"]
    assert [p["index"] for p in user["content"][:-1]] == list(range(len(task.images)))
    question = user["content"][-1]["text"]
    assert question == task.question  # no switch: the processor appends it from think_mode
    assert not any(question.rstrip().endswith(TEMPLATES.switch(m).strip()) for m in MODES)


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_each_mode_has_its_format_and_the_answer_parses_back(kind):
    t = TEMPLATES.tags
    for lang in LANGS:
        task = make_task(kind, SEED_BASE + 2, lang)
        body = TEMPLATES.answer_body(task.answer, task.answer_kind)
        for mode in MODES:
            row = mode_row(task, mode, TEMPLATES, sandbox_run=sandbox_run())
            assert schema.validate_row(row) == [], (mode, schema.validate_row(row))
            assert row["kind"] == "vqa" and row["think_mode"] == mode and row["lang"] == lang
            assert row["task_types"] == [task.task_type] and row["source"] == "synthetic_reasoning"
            assert_prompt(row, task)
            reply = reply_text(row)
            assert format_ok(reply, mode), (mode, reply)
            assert extract_answer(reply, mode) == task.answer
            assert answers_match(extract_answer(reply, mode), task.answer, task.answer_kind)
            extra = json.loads(row["extra"])
            assert {k: extra[k] for k in ("kind", "seed", "lang", "answer")} == {
                "kind": kind,
                "seed": SEED_BASE + 2,
                "lang": lang,
                "answer": task.answer,
            }
            # small images for a small model: every image within 448 px, the row within 1,600 tokens
            assert all(max(image["width"], image["height"]) <= 448 for image in row["images"])
            assert row["est_tokens"] < 1600, (mode, row["est_tokens"])
            if mode == "think":
                assert reply.startswith(f"{t.think.open}\n") and reply.endswith(t.answer.wrap(body))
                assert "\\boxed{" in reply if task.answer_kind == "number" else "\\boxed{" not in reply
            elif mode == "no_think":
                assert reply == body
            elif mode == "auto_think":
                assert reply.startswith(t.analysis.open)
                assert (t.think.open in reply) is (not task.simple)
                assert reply.endswith(body if task.simple else t.answer.wrap(body))
            else:
                assert_agentic_reply(row, task)


def assert_agentic_reply(row: dict, task) -> None:
    """The code inside the thinking, then the sandbox output as a text part of its own (tags
    included, so the processor masks it), then the saved images, then the reasoning and answer."""
    t = TEMPLATES.tags
    parts = row["messages"][-1]["content"]
    outputs = [i for i, p in enumerate(parts) if p["type"] == "text" and p["text"].startswith(t.sandbox_output.open)]
    assert len(outputs) == 1
    out = outputs[0]
    assert parts[out]["text"].endswith(t.sandbox_output.close)
    assert parts[0]["text"].startswith(t.think.open) and parts[0]["text"].rstrip().endswith(t.code.close)
    saved = json.loads(row["extra"])["agentic"]["saved_images"]
    images = parts[out + 1 : out + 1 + len(saved)]
    assert [p["type"] for p in images] == ["image"] * len(saved)
    assert [p["index"] for p in images] == list(range(len(task.images), len(task.images) + len(saved)))
    assert len(row["images"]) == len(task.images) + len(saved)
    assert parts[-1]["type"] == "text" and t.think.close in parts[-1]["text"]
    if task.kind in ("rotated_text", "low_contrast_text", "small_text_zoom"):
        assert saved, "the reading tasks' code saves the image it reads from"


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_agentic_code_run_again_prints_exactly_its_sandbox_output(kind):
    allowed = {"numpy", "PIL", "decimal", "fractions"}
    for lang in LANGS:
        for seed in (SEED_BASE + 3, SEED_BASE + 4):
            task = make_task(kind, seed, lang)
            row = mode_row(task, "agentic", TEMPLATES, sandbox_run=sandbox_run())
            reply = reply_text(row)
            code = code_of(reply)
            assert code == task.agentic_code
            imported = {
                alias.name.split(".")[0]
                for node in ast.walk(ast.parse(code))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module)])
            }
            assert imported <= allowed, imported
            inputs = row_inputs(row)
            ext = "jpg" if kind == "rotated_text" else "png"
            assert list(inputs) == [f"image_0.{ext}"]
            again = sandbox_run()(code, files=inputs)
            assert again.ok, again.stderr
            assert again.stdout == sandbox_output_of(reply)
            assert task.agentic_expect in again.stdout
            saved = json.loads(row["extra"])["agentic"]["saved_images"]
            assert [again.files[name] for name in saved] == [
                image["bytes"] for image in row["images"][len(task.images) :]
            ]
            for image in row["images"][len(task.images) :]:
                Image.open(io.BytesIO(image["bytes"])).verify()


def test_sandbox_failures_raise_with_the_reason_the_job_records():
    from synthesis.sandbox import run_python

    task = make_task("small_text_zoom", SEED_BASE, "en")
    cases = {
        "sandbox_failed": (dataclasses.replace(task, agentic_code="raise SystemExit(3)\n"), sandbox_run()),
        "sandbox_timeout": (
            dataclasses.replace(task, agentic_code="while True:\n    pass\n"),
            lambda code, files: run_python(code, files=files, timeout_s=1, mode="unsafe_subprocess"),
        ),
        "sandbox_mismatch": (dataclasses.replace(task, agentic_expect="saved something else"), sandbox_run()),
    }
    for reason, (bad, runner) in cases.items():
        with pytest.raises(SandboxFailed) as failed:
            mode_row(bad, "agentic", TEMPLATES, sandbox_run=runner)
        assert failed.value.reason == reason


def repeated_line(text: str, times: int = 5) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return any(lines[i : i + times] == [lines[i]] * times for i in range(len(lines)))


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_preference_rows_pair_a_correct_reply_with_a_corrupted_one(corruption):
    for kind in TASK_KINDS:
        for lang in LANGS:
            task = make_task(kind, SEED_BASE + 5, lang)
            for mode in MODES:
                if corruption not in corruptions_for(task, mode):
                    continue
                if mode == "agentic" and kind not in ("count_shapes", "small_text_zoom"):
                    continue  # the sandbox runs are covered above; two kinds suffice here
                row = preference_row(task, mode, TEMPLATES, corruption, sandbox_run=sandbox_run())
                assert schema.validate_row(row) == [], schema.validate_row(row)
                assert row["kind"] == "preference" and row["think_mode"] == mode
                extra = json.loads(row["extra"])
                assert extra["corruption"] == corruption
                chosen, rejected = reply_text(row), reply_text(row, "rejected")
                assert row["rejected"][0] == row["messages"][0]  # the same prompt
                assert chosen != rejected
                assert format_ok(chosen, mode) and extract_answer(chosen, mode) == task.answer
                got = extract_answer(rejected, mode)
                if corruption in ("wrong_step", "wrong_answer"):
                    assert got == task.distractor and not answers_match(got, task.answer, task.answer_kind)
                    assert extra["rejected_answer"] == task.distractor
                elif corruption == "broken_format":
                    assert not format_ok(rejected, mode) and got is None, (mode, extra["broken"], rejected)
                else:
                    assert repeated_line(rejected), rejected
                if corruption == "wrong_step" and mode != "agentic":
                    assert any(step not in rejected for step in task.steps)  # a step really changed


def test_wrong_step_needs_reasoning():
    task = make_task("arithmetic", SEED_BASE, "en")
    assert "wrong_step" not in corruptions_for(task, "no_think")
    with pytest.raises(ValueError, match="does not apply"):
        preference_row(task, "no_think", TEMPLATES, "wrong_step")


@pytest.mark.parametrize("mode", MODES)
def test_rl_rows_carry_the_prompt_and_the_answer(mode):
    for kind in TASK_KINDS:
        task = make_task(kind, SEED_BASE + 6, "zh")
        row = rl_row(task, mode)
        assert schema.validate_row(row) == []
        assert row["kind"] == "rl" and row["answer"] == task.answer and row["think_mode"] == mode
        assert [m["role"] for m in row["messages"]] == ["user"]
        assert_prompt(row, task)
        extra = json.loads(row["extra"])
        assert extra["answer_kind"] == task.answer_kind and extra["choices"] == task.choices


def test_answers_match_by_value_choice_and_text():
    assert answers_match("\\boxed{85}", "85", "number")
    assert answers_match("85.0", "85", "number") and answers_match("1,234", "1234", "number")
    assert answers_match("$\\frac{17}{4}$", "4.25", "number")  # math-verify
    assert answers_match("−4", "-4", "number")
    assert not answers_match("86", "85", "number") and not answers_match("\\boxed{8}", "85", "number")
    assert not answers_match(None, "85", "number") and not answers_match("", "85", "number")
    assert answers_match("Red.", "red", "choice") and answers_match("(A)", "A", "choice")
    assert not answers_match("blue", "red", "choice")
    assert answers_match("Ships  River", "ships river", "text") and answers_match("清晨的河面。", "清晨的河面", "text")
    assert answers_match("ＡＢＣ－１２", "abc-12", "text")
    assert not answers_match("ships rivet", "ships river", "text")


def test_extract_answer_refuses_broken_formats():
    assert extract_answer("<think>\nx\n</think>\n\n<answer>\\boxed{3}</answer>", "think") == "3"
    assert extract_answer("<think>\nx\n\n<answer>3</answer>", "think") is None  # unclosed think
    assert extract_answer("<think>x</think> 3", "think") is None  # no answer tags
    assert extract_answer("3", "no_think") == "3"
    assert extract_answer("<think>\n\n</think>\n\n3", "no_think") == "3"  # the empty block is allowed
    assert extract_answer("<think>\nx\n</think>\n\n3", "no_think") is None
    assert extract_answer("<analysis>easy</analysis>\n\n3", "auto_think") == "3"
    assert extract_answer("<analysis>hard</analysis><think>x</think><answer>3</answer>", "auto_think") == "3"
    assert extract_answer("<think>x</think><answer>3</answer>", "auto_think") is None  # no analysis
    ok = (
        "<think>\nx\n<code>```python\nprint(1)\n```</code>\n<sandbox_output>1\n</sandbox_output>\n"
        "y\n</think>\n\n<answer>1</answer>"
    )
    assert extract_answer(ok, "agentic") == "1"
    assert extract_answer(ok.replace("</code>", ""), "agentic") is None
    assert extract_answer(ok.replace("<sandbox_output>1\n</sandbox_output>", ""), "agentic") is None


def test_templates_agree_with_the_trainers_processor():
    processor = pytest.importorskip("training.processor")
    assert {mode: TEMPLATES.switch(mode) for mode in MODES} == processor.SWITCHES
    assert (TEMPLATES.tags.sandbox_output.open, TEMPLATES.tags.sandbox_output.close) == (
        processor.SANDBOX_OUTPUT_OPEN,
        processor.SANDBOX_OUTPUT_CLOSE,
    )
    row = mode_row(make_task("rotated_text", SEED_BASE, "en"), "agentic", TEMPLATES, sandbox_run=sandbox_run())
    masked = [piece for piece, is_output in processor.split_sandbox_output(reply_text(row)) if is_output]
    assert masked == [TEMPLATES.tags.sandbox_output.wrap(sandbox_output_of(reply_text(row)))]


def test_templates_refuse_a_missing_or_misspelt_key(tmp_path):
    text = (ROOT / DEFAULT_PATH).read_text(encoding="utf-8")
    missing = tmp_path / "missing.yaml"
    missing.write_text(text.replace('  agentic: " /agentic_think"\n', ""))
    with pytest.raises(ConfigError, match="switches.agentic"):
        ModeTemplates.load(missing)
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(text.replace("boxed_kinds:", "boxed_kind:"))
    with pytest.raises(ConfigError, match="boxed_kind"):
        ModeTemplates.load(misspelt)
