"""Stage configuration: one dataclass for every stage, one YAML per stage under configs/stages/.

A stage is configuration, never a copy of the loop: which parts train (`train`), their learning
rates (`lr` x `lr_mult`), the schedule, the data mixture and the DeepSpeed config. Values come
from the dataclass defaults, then `configs/stages/NAME.yaml`, then `key=value` overrides, through
`curation.config.load` (the same mechanism as the curation jobs):

    cfg = load_stage(["stage=align", "max_steps=20", "data=out/a,out/b"])

Parts of the model (the released attribute names): `visual` (ViT), `projector` (`mlp_AR`), `llm`
(`model` + `lm_head`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from curation.config import ConfigError, load
from synthesis.model_client.config import ClientConfig

REPO = Path(__file__).resolve().parents[1]
STAGES_DIR = REPO / "configs" / "stages"
PARTS = ("visual", "projector", "llm")  # the VLM's parts (task "lm")
# parts of the model each task trains: "lm" is the VLM with the LM loss (every stage but
# vit_pretrain); "contrastive" is vit_pretrain: the ViT, a small text tower and the SigLIP loss's
# learnable temperature and bias ("logit")
TASK_PARTS = {"lm": PARTS, "contrastive": ("visual", "text", "logit"), "preference": PARTS, "rl": PARTS}


@dataclass
class LrMultipliers:
    """Per-part factor on `optimizer.lr` (e.g. a ViT that moves 10x slower than the LLM)."""

    visual: float = 1.0
    projector: float = 1.0
    llm: float = 1.0
    text: float = 1.0  # vit_pretrain's text tower
    logit: float = 1.0  # vit_pretrain's SigLIP temperature and bias


@dataclass
class OptimizerConfig:
    name: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1.0e-4  # peak learning rate before the per-part multipliers
    weight_decay: float = 0.0  # not applied to biases and norm weights
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1.0e-8
    grad_clip: float = 1.0  # global gradient-norm clip; 0 = none


@dataclass
class ScheduleConfig:
    name: Literal["cosine", "constant", "linear"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # final lr / peak lr (cosine, linear)
    # steps the decay spans; 0: max_steps. Set it when a run is stopped early and continued with
    # a larger max_steps, so that the curve does not change under it.
    total_steps: int = 0


@dataclass
class MpoConfig:
    """Task `preference` (training/tasks/preference.py): MPO = w_dpo DPO + w_bco BCO + w_sft NLL."""

    beta: float = 0.1  # the implicit reward's scale: reward = beta x (log pi - log pi_ref)
    weights: list[float] = field(default_factory=lambda: [0.8, 0.2, 1.0])  # dpo, bco, sft (InternVL's)
    # live: a frozen copy of the starting weights runs beside the policy; precomputed: read from the
    # rows (`python -m training.precompute_ref`), no reference model is loaded
    reference: Literal["live", "precomputed"] = "live"


@dataclass
class ModeShares:
    """How often a prompt's group is rolled out in each thinking mode (mix-mode RL)."""

    think: float = 0.5
    no_think: float = 0.3
    auto_think: float = 0.2


@dataclass
class RewardWeights:
    """Weights of the named rewards (training/rewards.py) in the total an advantage is made of."""

    correctness: float = 1.0
    format: float = 0.2
    repetition: float = 0.1
    length: float = 0.0
    judge: float = 0.0  # a model judge through `rl.judge` (the model client); 0: never called


@dataclass
class RlConfig:
    """Task `rl` (training/tasks/rl.py): mix-mode GRPO on `rl` rows (prompt + answer)."""

    prompts: int = 2  # prompts per micro-batch; each is rolled out group_size times
    group_size: int = 4
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: the whole vocabulary
    modes: ModeShares = field(default_factory=ModeShares)
    rewards: RewardWeights = field(default_factory=RewardWeights)
    repetition_ngram: int = 4
    length_target: int = 2000  # characters: the length reward is 1 up to here, target / length beyond
    epsilon: float = 0.2
    epsilon_high: float | None = None  # clip-higher (DAPO); None: epsilon
    beta: float = 0.0  # KL to the frozen starting weights; > 0 builds the reference
    # advantages (losses.grpo_advantages): "batch" divides by the std of a micro-batch's rewards
    scale: Literal["group", "batch", "none"] = "group"
    aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = "token_mean"
    skip_equal_groups: bool = False  # groups whose rewards are all equal carry no advantage: leave them out
    # ZeRO-3: gather the whole model once for the rollout phase (false: every generated token's
    # forward gathers each layer again, what bench/post_train.py compares against)
    gather_once: bool = True
    judge: ClientConfig = field(default_factory=ClientConfig)


@dataclass
class AlignmentConfig:
    """Iterative alignment (training/alignment.py): rounds of sampling into pairs, then MPO. Sampling
    and scoring take their settings from `rl` (group_size replies per prompt, modes, rewards, judge)."""

    rounds: int = 0  # 0: a plain stage; n: n rounds (the iterative_alignment stage)
    prompts: int = 8  # prompts sampled per round
    margin: float = 0.1  # least total-score difference between a pair's chosen and rejected reply
    pairs_per_prompt: int = 1


@dataclass
class StageConfig:
    stage: str = "pretrain"
    # training/tasks: lm (the VLM, packed sequences), contrastive (vit_pretrain), preference (mpo), rl
    task: Literal["lm", "contrastive", "preference", "rl"] = "lm"
    # tiny | keye_8b (configs/models/NAME.yaml) | a model YAML | an HF folder (weights loaded)
    model: str = "tiny"
    # HF folder whose weights start the run. Without it a YAML model starts from random weights,
    # which only the tiny model may do (a random 8B is never what anybody meant).
    init: str | None = None
    data: list[str] = field(default_factory=lambda: ["out/pretrain"])  # shard folders
    data_weights: list[float] = field(default_factory=list)  # draw weight per folder; empty = equal
    output: str = ""  # default out/train/STAGE
    max_steps: int = 5  # optimizer steps
    max_tokens: int = 1024  # tokens per packed sequence
    micro_batches: int = 1  # packed sequences per rank per optimizer step (gradient accumulation)
    train: list[str] = field(default_factory=lambda: list(PARTS))  # parts that learn; the rest is frozen
    # contrastive (vit_pretrain): image-caption pairs per micro-batch per rank, caption token limit,
    # and the text tower's config
    batch_size: int = 16
    max_text_tokens: int = 64
    text_model: str = "configs/models/siglip_text_tiny.yaml"
    mpo: MpoConfig = field(default_factory=MpoConfig)
    rl: RlConfig = field(default_factory=RlConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    lr_mult: LrMultipliers = field(default_factory=LrMultipliers)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    deepspeed: str = "configs/deepspeed/zero2.json"
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    balance: bool = True  # move sequences between ranks so each step's rank costs are even (global_step.py)
    ledger: bool = True  # OUTPUT/ledger/rank{r}.jsonl: the sample ids each step trained on
    save_every: int = 0  # checkpoint every N steps (0: only at the end)
    keep_checkpoints: int = 2  # complete checkpoints kept (older ones are deleted)
    export: bool = True  # HF export (safetensors) to OUTPUT/export at the end
    seed: int = 0
    epochs: int | None = None  # None: stream the data forever; n: stop after n passes
    shuffle_buffer: int = 256  # reader shuffle buffer (rows)
    packer_buffer: int = 64  # packer look-ahead (samples)
    peak_tflops: float | None = None  # device peak for MFU; None: table by device name / measured on CPU
    hostfile: str | None = None  # several nodes: handed to the DeepSpeed launcher
    num_gpus: int | None = None  # processes per node for the launcher; None: all local GPUs (CPU: 2+ = gloo ranks)
    # Without ssh (SLURM, Kubernetes: each node starts its own launcher): this node's index in the
    # hostfile, and the first node's address and port. None: the launcher reaches the nodes by ssh.
    node_rank: int | None = None
    master_addr: str | None = None
    master_port: int = 29500

    @property
    def output_dir(self) -> Path:
        return Path(self.output or f"out/train/{self.stage}")

    def check(self) -> StageConfig:
        parts = TASK_PARTS[self.task]
        unknown = sorted(set(self.train) - set(parts))
        if unknown:
            raise ConfigError(f"train: unknown parts {unknown}; parts of task {self.task} are {', '.join(parts)}")
        if not self.train:
            raise ConfigError("train: at least one part must learn")
        if self.data_weights and len(self.data_weights) != len(self.data):
            raise ConfigError(f"data_weights has {len(self.data_weights)} values for {len(self.data)} data folders")
        if self.alignment.rounds and self.task != "preference":
            raise ConfigError(f"alignment.rounds trains MPO rounds: task must be preference, got {self.task}")
        if self.rl.group_size < 2:
            raise ConfigError(f"rl.group_size must be >= 2 (advantages compare rollouts), got {self.rl.group_size}")
        if len(self.mpo.weights) != 3:
            raise ConfigError(f"mpo.weights: three values (dpo, bco, sft), got {self.mpo.weights}")
        for key in ("max_steps", "max_tokens", "micro_batches", "batch_size", "max_text_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        return self


def stage_file(name: str) -> Path:
    path = STAGES_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in STAGES_DIR.glob("*.yaml")))
        raise ConfigError(f"no stage {name!r} ({path} is missing); stages: {known}")
    return path


def load_stage(argv: Sequence[str] = ()) -> StageConfig:
    """`stage=NAME` picks configs/stages/NAME.yaml (default pretrain); other key=value override it."""
    argv = list(argv)
    names = [a.split("=", 1)[1] for a in argv if a.startswith("stage=")]
    name = names[-1] if names else StageConfig.stage
    rest = [a for a in argv if not a.startswith("stage=")]
    cfg = load(StageConfig, ["--config", str(stage_file(name)), *rest])
    if cfg.stage != name:
        raise ConfigError(f"{stage_file(name)} says stage: {cfg.stage}, expected {name}")
    return cfg.check()
