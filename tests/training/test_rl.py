"""The rl stage (task `rl`): rule rewards on hand-written replies, the judge reward through the real
model client against a server on 127.0.0.1, a reward the tiny model can learn, equal-reward groups,
two ranks against one process, and a SIGKILL'd run resumed bit for bit (the rollouts included)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from engine_helpers import assert_same_training, run_ranks
from keye_helpers import tiny, write_shards
from safetensors.torch import load_file
from tests.launch_helpers import kill_at_checkpoint, launch
from tests.synthesis.model_client_helpers import ScriptedServer

from curation.schema import make_row, message
from training.rewards import RewardSettings, repeat_ratio, score_replies

COMMON = ("stage=rl", "model=tiny", "shuffle_buffer=8", "schedule.name=constant", "optimizer.grad_clip=0",
          "rl.prompts=2", "rl.group_size=4", "rl.max_new_tokens=8")
LENGTH_ONLY = ("rl.rewards.correctness=0", "rl.rewards.format=0", "rl.rewards.repetition=0", "rl.rewards.length=1",
               "rl.length_target=12")


def rl_rows(n: int, question: str = "Name a number below {i}.") -> list[dict]:
    return [make_row("synthetic", "rl", [message("user", question.format(i=i))], answer=str(i),
                     extra={"answer_kind": "number"}) for i in range(n)]


@pytest.fixture(scope="module")
def prompts_folder(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("rl") / "prompts", rl_rows(24), row_group_rows=8)


def metrics_of(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]


# --- rule rewards ------------------------------------------------------------------------------------


def test_rule_rewards_on_hand_written_replies():
    row = {"answer": "42", "extra": json.dumps({"answer_kind": "number"}), "messages": []}
    weights = {"correctness": 1.0, "format": 1.0, "repetition": 1.0, "length": 1.0}
    settings = RewardSettings(repetition_ngram=3, length_target=60)
    replies = {
        "correct_think": ("think", "<think>\nSix times seven.\n</think>\n\n<answer>\\boxed{42}</answer>"),
        "wrong_think": ("think", "<think>\nSix times eight.\n</think>\n\n<answer>\\boxed{48}</answer>"),
        "unclosed_think": ("think", "<think>\nSix times seven is 42\n\n<answer>\\boxed{42}</answer>"),
        "correct_no_think": ("no_think", "\\boxed{42}"),
        "thinking_in_no_think": ("no_think", "<think>\nSix times seven.\n</think>\n\n\\boxed{42}"),
        "repetitive": ("no_think", "the answer is the answer is the answer is the answer is \\boxed{42}"),
    }
    names = list(replies)
    scores = score_replies([replies[n][1] for n in names], [row] * len(names), [replies[n][0] for n in names],
                           weights, settings)
    by = {name: {k: v[i] for k, v in scores.items()} for i, name in enumerate(names)}
    assert by["correct_think"]["correctness"] == 1.0 and by["correct_think"]["format"] == 1.0
    assert by["wrong_think"]["correctness"] == 0.0 and by["wrong_think"]["format"] == 1.0
    assert by["unclosed_think"]["format"] == 0.0 and by["unclosed_think"]["correctness"] == 0.0  # no answer read
    assert by["correct_no_think"]["correctness"] == 1.0 and by["correct_no_think"]["format"] == 1.0
    assert by["thinking_in_no_think"]["format"] == 0.0 and by["thinking_in_no_think"]["correctness"] == 0.0
    # 13 words, 11 word 3-grams of which 3 are new after "the answer is" repeats: by hand below
    words = replies["repetitive"][1].split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    assert by["repetitive"]["repetition"] == pytest.approx(len(set(grams)) / len(grams)) and len(set(grams)) == 4
    assert by["repetitive"]["length"] == pytest.approx(60 / len(replies["repetitive"][1]))
    assert by["correct_no_think"]["repetition"] == 1.0 and by["correct_no_think"]["length"] == 1.0
    assert by["correct_think"]["total"] == pytest.approx(sum(by["correct_think"][k] for k in weights))
    assert repeat_ratio("哈哈哈哈哈哈", 2) == pytest.approx(1 - 1 / 5)  # characters where there are no spaces
    with pytest.raises(ValueError, match="unknown rewards"):
        score_replies(["x"], [row], ["think"], {"fluency": 1.0}, settings)


def test_the_judge_scores_through_the_model_client_against_a_local_server():
    from synthesis.model_client.client import ModelClient
    from synthesis.model_client.config import ClientConfig

    row = {"answer": "7", "extra": "{}", "images": [],
           "messages": [{"role": "user", "content": [{"type": "text", "text": "script:judge How many? "}]}]}
    verdicts = [json.dumps({"correct": True, "consistent": False})]
    with ScriptedServer({"judge": [("status", 503), ("reply", verdicts)], "down": [("status", 400)]}) as server:
        client = ModelClient(ClientConfig(base_urls=[server.url, server.url], model="judge", backoff_s=0.01,
                                          max_retries=2))
        failures = Counter()
        scores = score_replies(["\\boxed{7}"], [row], ["no_think"], {"judge": 1.0}, RewardSettings(), client, failures)
        assert scores["judge"] == [0.5] and not failures  # correct, not consistent; the 503 retried
        body = server.bodies("judge")[-1]
        assert body["response_format"]["type"] == "json_schema" and "\\boxed{7}" in json.dumps(body)
        down = {**row, "messages": [{"role": "user", "content": [{"type": "text", "text": "script:down x"}]}]}
        assert score_replies(["x"], [down], ["no_think"], {"judge": 1.0}, RewardSettings(), client, failures)["judge"] == [0.0]
        assert sum(failures.values()) == 1  # a failed judgement scores 0 and is counted, never a crash


def test_rl_stage_with_the_judge_counts_and_skips_equal_reward_groups(tmp_path):
    """Every reply judged correct and consistent: every group's rewards are equal, so every group is
    counted as such, and with skip_equal_groups nothing is trained on."""
    from training.launch import run
    from training.stages import load_stage

    folder = write_shards(tmp_path / "prompts", rl_rows(8, "script:judge Name a number below {i}."))
    verdict = [json.dumps({"correct": True, "consistent": True})]
    with ScriptedServer({"judge": [("reply", verdict)]}) as server:
        args = [*COMMON, f"data={folder}", "max_steps=1", "export=false", "rl.rewards.correctness=0",
                "rl.rewards.format=0", "rl.rewards.repetition=0", "rl.rewards.judge=1", f"rl.judge.base_urls={server.url}",
                "rl.judge.model=judge"]
        result = run(load_stage([*args, f"output={tmp_path / 'keep'}"]))
        kept = metrics_of(tmp_path / "keep")
        assert all(m["reward/judge"] == 1.0 and m["groups_equal_reward"] == 2 for m in kept)
        assert all(m["response_tokens"] > 0 for m in kept) and len(server.bodies("judge")) == 2 * 4
        run(load_stage([*args, f"output={tmp_path / 'skip'}", "rl.skip_equal_groups=true"]))
        skipped = metrics_of(tmp_path / "skip")
        assert all(m["response_tokens"] == 0 and m["loss"] == 0.0 for m in skipped)
    assert "judge" in result.task.report()[0]


def test_prompts_batched_left_padded_generate_what_each_prompt_alone_does():
    """One generate over prompts of different lengths (left-padded; one with an image) gives each
    prompt the tokens it gets alone (top_k=1: the argmax, so sampling noise cannot hide a
    difference; a wrong position or mask changes the argmax of a random model at once)."""
    from keye_helpers import png

    from curation.schema import image_entry, image_part
    from training.stages import load_stage
    from training.tasks.rl import RlTask

    task = RlTask()
    task.setup_sampling(load_stage([*COMMON, "rl.top_k=1", "rl.max_new_tokens=6"]))
    model = tiny().eval()
    rows = [make_row("t", "rl", [message("user", image_part(0), "What is drawn here, in a long sentence?")],
                     [image_entry(png(56, 84, seed=3))], answer="1"),
            make_row("t", "rl", [message("user", "Hi?")], answer="2")]
    modes = ["think", "no_think"]
    together = task.sample(model, rows, modes, 2, torch.device("cpu"), 0)
    for k, row in enumerate(rows):
        (alone,) = task.sample(model, [row], [modes[k]], 2, torch.device("cpu"), 0)
        assert [r.tolist() for r, _ in together[k][1]] == [r.tolist() for r, _ in alone[1]]
        assert torch.equal(together[k][0].input_ids, alone[0].input_ids)
    assert len(together[0][0].input_ids) != len(together[1][0].input_ids)  # padding did happen


def test_rl_raises_a_reward_the_tiny_model_can_learn(tmp_path, prompts_folder):
    """Reward: short replies (1 up to 12 characters, 12 / length beyond). Random tokens of the tiny
    model decode to a few characters each. Sampling from the top 4 tokens (a random model's output
    is uniform over 151,936 tokens, where no reward on token identity is ever seen twice), GRPO
    pushes long tokens out of the top 4 and keeps short ones: the reward rises within 16 CPU steps."""
    from training.launch import run
    from training.stages import load_stage

    cfg = load_stage([*COMMON, *LENGTH_ONLY, f"data={prompts_folder}", f"output={tmp_path}", "max_steps=16",
                      "optimizer.lr=1e-2", "rl.top_k=4", "export=false"])
    run(cfg)
    rewards = [m["reward/total"] for m in metrics_of(tmp_path)]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.2, rewards  # measured: 0.30 -> 1.00 by step 7 (AMD EPYC)
    assert all(m["clip_fraction"] == 0.0 and m["rollout_tokens_per_s"] > 0 for m in metrics_of(tmp_path))


def test_two_ranks_equal_one_process_with_the_same_global_batch(tmp_path, prompts_folder):
    """2 gloo ranks (ZeRO-2, SGD, a continuous reward) against one process running the ranks' step
    plans as micro-batches: the same rollouts (their randomness is a function of seed, step and
    row), the same rewards, the same weights up to float32 summation order."""
    from training.engine import build_engine, train_step
    from training.global_step import GlobalSteps
    from training.processor import load_tokenizer
    from training.stages import load_stage
    from training.tasks.rl import RlTask

    base = [*COMMON, *LENGTH_ONLY, f"data={prompts_folder}", "max_steps=2", "optimizer.name=sgd",
            "optimizer.lr=0.5", "optimizer.weight_decay=0", "micro_batches=1"]
    launch(*base, "num_gpus=2", f"output={tmp_path / 'dp'}")
    metrics = metrics_of(tmp_path / "dp")
    assert len(metrics) == 2 and "ranks: 2" in (tmp_path / "dp" / "report.md").read_text()

    cfg = load_stage([*base, f"output={tmp_path / 'one'}"])
    task = RlTask()
    pipes = [task.build_pipeline(cfg, load_tokenizer(), rank, 2) for rank in (0, 1)]
    engine = build_engine(tiny(), cfg, task)
    task.attach(engine, cfg)
    plans = run_ranks(2, lambda r, ex: GlobalSteps(pipes[r], 1, task.cost, rank=r, world=2, exchange=ex), steps=2)
    rewards = []
    for p0, p1 in zip(plans[0], plans[1], strict=True):
        step = train_step(engine, task, p0.mine + p1.mine, world=1)
        rewards.append(step.stats["reward_total"] / step.stats["rollouts"])
    assert [m["reward/total"] for m in metrics] == pytest.approx(rewards, rel=1e-12)
    two = load_file(str(tmp_path / "dp" / "export" / "model.safetensors"))
    one, start = engine.module.state_dict(), tiny().state_dict()
    assert not torch.equal(one["lm_head.weight"], start["lm_head.weight"])
    assert_same_training(two, one, start)


def test_sigkill_then_restart_resumes_exactly_rollouts_included(tmp_path, prompts_folder):
    args = (*COMMON, *LENGTH_ONLY, f"data={prompts_folder}", "max_steps=3", "save_every=2", "optimizer.lr=1e-3")
    straight = tmp_path / "straight"
    launch(*args, f"output={straight}")
    killed = tmp_path / "killed"
    kill_at_checkpoint(*args, output=killed, step=2)
    state = json.loads((killed / "checkpoints" / "step_2" / "trainer_rank0.json").read_text())
    assert state["task"] == {"rollout_steps": 2}
    launch(*args, f"output={killed}")
    assert "resumed at" in (killed / "report.md").read_text()
    a, b = load_file(str(straight / "export" / "model.safetensors")), load_file(str(killed / "export" / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    keys = ("loss", "reward/total", "response_tokens", "entropy")
    assert [[m[k] for k in keys] for m in metrics_of(killed)] == [[m[k] for k in keys] for m in metrics_of(straight)]


def test_beta_adds_the_kl_to_the_frozen_start(tmp_path, prompts_folder):
    """rl.beta > 0 builds the reference (the starting weights, never trained): the KL estimate is 0
    while the policy is the start, above 0 once it has moved."""
    from training.launch import run
    from training.stages import load_stage

    result = run(load_stage([*COMMON, *LENGTH_ONLY, f"data={prompts_folder}", f"output={tmp_path}", "max_steps=2",
                             "rl.top_k=4", "rl.beta=0.1", "optimizer.lr=1e-2", "export=false"]))
    first, second = metrics_of(tmp_path)
    assert first["kl"] == 0.0 and second["kl"] > 0.0
    start, reference = tiny(0).state_dict(), result.task.reference.state_dict()
    assert [k for k in start if not torch.equal(start[k], reference[k])] == []
