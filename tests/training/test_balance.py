"""Cost model (hand-computed on a tiny config) and the balancer (partitions, bounds, the all-gather
over torch.distributed)."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

from curation import schema
from training.data import (
    Assignment,
    ModelDims,
    SampleShape,
    all_gather_lists,
    balance_costs,
    greedy_lpt,
    karmarkar_karp,
)
from training.data.balance import improve_by_swaps
from training.data.cost import (
    llm_flops,
    sample_flops,
    sample_shape,
    sequence_flops,
    video_grid,
    vit_flops,
)

TINY = ModelDims(
    vit_hidden=2, vit_layers=1, vit_intermediate=3, patch_size=1, in_channels=1, merge_size=2,
    llm_hidden=2, llm_layers=1, llm_intermediate=3, llm_heads=1, llm_kv_heads=1, llm_head_dim=2, vocab_size=5,
)  # fmt: skip


def test_cost_of_a_tiny_model_matches_a_hand_computation():
    # ViT, one image of grid (1, 2, 2) = 4 patches:
    #   per-patch matmul params: embed 1*1*2 = 2; layer q,k,v,o 4*2*2 = 16 + fc1,fc2 2*2*3 = 12 -> 30
    #   linear 2 * 4 * 30 = 240; attention 1 layer * 4 * 4^2 * 2 = 128
    #   projector, 1 merged token: 2 * 1 * (8*8 + 8*2) = 160                         -> 528
    assert vit_flops((1, 2, 2), TINY) == 528
    # a 2-frame video (2, 2, 2) is ONE attention segment of 8 patches:
    #   linear 2 * 8 * 30 = 480; attention 4 * 8^2 * 2 = 512; projector 2 merged tokens 320 -> 1312
    assert vit_flops((2, 2, 2), TINY) == 1312
    # LLM per-token params: q 2*2 + k,v 2*2*2 + o 2*2 + gate/up/down 3*2*3 = 34, lm_head 2*5 = 10 -> 44
    #   4 tokens (3 text + 1 merged image token): linear 2*4*44 = 352, causal attention 4*4^2*2/2 = 64
    assert llm_flops(4, TINY) == 416
    image_sample = SampleShape(text_tokens=3, grids=((1, 2, 2),))
    assert image_sample.llm_tokens(TINY) == 4
    assert sample_flops(image_sample, TINY) == 528 + 416
    # text-only, 2 tokens: 2*2*44 = 176 + 4*2^2*2/2 = 16 -> 192; samples in a sequence add up
    text_sample = SampleShape(text_tokens=2)
    assert sequence_flops([image_sample, text_sample], TINY) == 944 + 192
    bidirectional = ModelDims(**{**TINY.__dict__, "causal_llm": False})
    assert llm_flops(2, bidirectional) == 176 + 32


def test_default_dims_are_keye_vl_8b():
    dims = ModelDims()
    # Qwen3-8B model card: 6.95B non-embedding parameters; the lm_head adds 4096 x 151936 = 0.622B.
    one_token = llm_flops(1, dims) - dims.llm_layers * 4 * 4096 * 0.5
    assert one_token / 2 == pytest.approx(6.95e9 + 4096 * 151936, rel=0.01)
    # SigLIP so400m: ~0.4B vision parameters, nearly all touched once per patch
    one_patch = vit_flops((1, 1, 1), dims) - dims.vit_layers * 4 * 1152
    assert 0.38e9 < one_patch / 2 < 0.44e9


def test_row_shapes_from_metadata_match_est_tokens():
    # only sizes and frame counts matter: the bytes are placeholders, nothing is decoded
    m, image = schema.message, lambda h, w: schema.image_entry(b"img", width=w, height=h)
    video = schema.video_entry([b"frame"] * 6, [i / 2 for i in range(6)], width=84, height=56, fps=2.0, duration=3.0)
    rows = [
        schema.make_row("t", "text", [m("user", "Say hi."), m("assistant", "Hi there!")]),
        schema.make_row(
            "t", "vqa", [m("user", schema.image_part(0), "Colour?"), m("assistant", "Red.")], [image(56, 84)]
        ),
        schema.make_row(
            "t",
            "vqa",
            [m("user", schema.image_part(0), "and", schema.image_part(1)), m("assistant", "Same.")],
            [image(84, 56), image(112, 140)],
        ),
        schema.make_row(
            "t", "video", [m("user", schema.video_part(0), "What?"), m("assistant", "Noise.")], videos=[video]
        ),
    ]
    shapes = [sample_shape(row) for row in rows]
    # 56x84, 84x56 and 112x140 are multiples of 28 already: grids are sides / 14. The 6-frame 56x84
    # video is scaled up to the 128-token frame minimum: factor sqrt(128*784 / (56*84)) = 4.62,
    # ceil(56*4.62/28)*28 = 280 and ceil(84*4.62/28)*28 = 392 -> 20 x 28 patches per frame
    assert [s.grids for s in shapes] == [(), ((1, 4, 6),), ((1, 6, 4), (1, 8, 10)), ((6, 20, 28),)]
    assert [s.llm_tokens() for s in shapes] == [row["est_tokens"] for row in rows]


@pytest.mark.parametrize("height, width", [(360, 640), (1080, 1920), (56, 84), (2000, 300)])
@pytest.mark.parametrize("frames", [1, 5, 16, 100, 400, 1000])
def test_video_grid_follows_the_schema_token_rule(height, width, frames):
    t, h, w = video_grid(height, width, frames)
    assert t * h * w // 4 == schema.video_tokens(height, width, frames)
    assert t % 2 == 0 and h % 2 == 0 and w % 2 == 0


def test_lpt_and_karmarkar_karp_on_a_known_instance():
    # {8,7,6,5,4} into 2: optimum 15/15. LPT: 8|7, 6->B, 5->A, 4->A (tie at 13, lower rank) = 17/13.
    # KK differencing: 8-7=1, 6-5=1, 4-1=3, 3-1=2 -> 16/14.
    costs = [8, 7, 6, 5, 4]
    lpt, kk = greedy_lpt(costs, 2), karmarkar_karp(costs, 2)
    assert sorted(lpt.loads) == [13, 17] and lpt.ranks[0] == (0, 3, 4)
    assert sorted(kk.loads) == [14, 16]
    best = balance_costs(costs, 2)  # KK's 16/14, then one swap (6 <-> 5 between the sides) reaches 15/15
    assert best.method == "karmarkar_karp+swaps" and sorted(best.loads) == [15, 15]


def test_swaps_lower_the_most_loaded_rank():
    costs = [5, 4, 3, 3, 1]
    start = Assignment(((0, 1), (2, 3, 4)), (9.0, 7.0), "given")
    # moves: 5 or 4 away -> 12 or 11; swaps 5<->3: 7/9, 4<->3: 8/8 (best), 4<->1: 6/10
    better = improve_by_swaps(costs, start)
    assert better.ranks == ((0, 2), (1, 3, 4)) and better.loads == (8.0, 8.0)
    assert improve_by_swaps(costs, better) is better  # nothing left to gain: unchanged
    alone = Assignment(((0,), (1, 2, 3, 4)), (5.0, 11.0), "given")
    # rank 1 may give away a sequence, but never leaves rank 0 (or itself) empty
    assert all(improve_by_swaps(costs, alone).ranks)


def brute_force_max_load(costs, k):
    return min(
        max(sum(c for c, r in zip(costs, labels) if r == rank) for rank in range(k))
        for labels in itertools.product(range(k), repeat=len(costs))
    )


@pytest.mark.parametrize("seed", range(6))
def test_assignments_are_partitions_within_known_bounds(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    costs = rng.lognormal(0, 1, size=int(rng.integers(k, 8))).round(3).tolist()
    optimum = brute_force_max_load(costs, k)
    for plan in (greedy_lpt(costs, k), karmarkar_karp(costs, k), balance_costs(costs, k)):
        assert sorted(i for r in plan.ranks for i in r) == list(range(len(costs)))
        assert all(plan.ranks)
        assert plan.loads == pytest.approx([sum(costs[i] for i in r) for r in plan.ranks])
        assert max(plan.loads) >= optimum - 1e-9
    # Graham's bound for LPT: at most (4/3 - 1/(3k)) of the optimum
    assert max(greedy_lpt(costs, k).loads) <= (4 / 3 - 1 / (3 * k)) * optimum + 1e-9
    assert max(balance_costs(costs, k).loads) <= min(
        max(greedy_lpt(costs, k).loads), max(karmarkar_karp(costs, k).loads)
    )


def test_many_ranks_get_close_to_the_mean_and_every_rank_works():
    rng = np.random.default_rng(0)
    costs = rng.lognormal(0, 0.6, size=64 * 4).tolist()
    plan = balance_costs(costs, 64)
    # no assignment beats max(largest sequence, mean load); this one is within 2% of that bound
    lower_bound = max(max(costs), sum(costs) / 64)
    assert max(plan.loads) <= 1.02 * lower_bound
    assert all(plan.ranks) and len(plan.rank_of()) == len(costs)
    assert balance_costs(costs, 64) == plan  # deterministic


def test_zero_costs_still_leave_no_rank_idle():
    for plan in (karmarkar_karp([0, 0, 0, 0, 5], 3), greedy_lpt([0, 0, 0, 0, 5], 3)):
        assert all(plan.ranks) and sorted(plan.loads) == [0, 0, 5]


def test_fewer_sequences_than_ranks_is_refused():
    with pytest.raises(ValueError, match="at least one sequence"):
        balance_costs([1.0, 2.0], 3)


def test_gather_without_a_process_group_is_local():
    assert all_gather_lists([1, 2.5]) == [[1.0, 2.5]]
    assert all_gather_lists([3, 4], integers=True) == [[3, 4]]


def _distributed_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    local = [[5.0, 1.0, 1.0], [4.0]][rank]  # uneven counts: the padding path
    gathered = all_gather_lists(local)
    plan = balance_costs([c for costs in gathered for c in costs], world_size, per_rank=2)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"gathered": gathered, "ranks": plan.ranks, "loads": list(plan.loads)}, f)
    dist.destroy_process_group()


def test_ranks_gather_costs_and_agree_on_the_plan(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for result in results:
        assert result["gathered"] == [[5.0, 1.0, 1.0], [4.0]]
    # the same plan on every rank from the same numbers: 2 sequences each, costs 11 -> 6/5
    assert results[0]["ranks"] == results[1]["ranks"] and results[0]["loads"] == results[1]["loads"]
    assert sorted(results[0]["loads"]) == [5.0, 6.0] and all(len(r) == 2 for r in results[0]["ranks"])
