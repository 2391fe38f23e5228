"""Typed configuration: one pydantic model per component, every field with a default and a doc.

`load_config(path, overrides)` reads YAML, applies `key.sub=value` overrides (values parsed as
YAML, so `--set update.lr=1e-4` gives a float) and validates. Every problem becomes a `ConfigError`
with one line naming the field, which the CLI prints with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from clicker.core.credit_config import (  # noqa: F401  (re-exported: config's public names)
    AdjudicatorConfig,
    CreditConfig,
    DistillConfig,
    ImplicitPRMConfig,
    JudgeConfig,
    MCConfig,
    RFTConfig,
    ValueConfig,
)
from clicker.core.section import ConfigError
from clicker.core.section import Section as _Section


class ModelConfig(_Section):
    path: str | None = Field(None, description="local HF model directory; None = built-in tiny")
    tiny_seed: int = Field(0, description="seed of the built-in tiny model (when path is None)")
    tiny_recipe: Literal["default", "arith", "context", "arith_context", "keydoor_context"] = Field(
        "default", description="built-in tiny model recipe (when path is None); arith: 2- and "
        "3-digit addition only; context: reads blocks (solutions, feedback, lessons) before a "
        "task; arith_context, keydoor_context: the same for 3-digit sums and keydoor runs"
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bf16 on CUDA, fp32 on CPU"
    )


class TaskConfig(_Section):
    name: str = Field("addition", description="built-in task or adapter name")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword args of the task")


class RolloutConfig(_Section):
    prompts: int = Field(16, ge=1, description="prompts (groups) per iteration")
    group_size: int = Field(8, ge=1, description="G: episodes sampled per prompt")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_action_tokens: int | None = Field(None, ge=1, description="override the task's cap")
    max_turns: int | None = Field(None, ge=1, description="override the env's turn limit")
    reuse_cache: bool = Field(
        True, description="keep each episode's KV cache between turns (prefill only the new "
        "tokens); turn off for models with sliding-window attention"
    )
    step_timeout_s: float | None = Field(
        30.0, gt=0, description="an env step or verifier running longer ends its episode with "
        "reward 0 and an error (as one that raises or returns NaN does); None: no limit")
    engine: str = Field("hf", description="rollout engine (clicker.rollout.engine; hf: the "
                        "built-in KV-cache sampler)")
    engine_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="sample on a replica in this dtype (weights copied each iteration; "
        "see update.mismatch)")
    engine_device: str | None = Field(None, description="sample on a replica on this device")
    shards: int = Field(0, ge=0, description="cut each iteration's prompts into this many "
                        "shards, each sampled with its own seed, so that episodes do not depend "
                        "on which process samples them (0: one batch, the loop's generator)")
    ray: str | None = Field(None, description="sample on Ray rollout workers: auto (join this "
                            "machine's cluster or start a local one), local, or an address")
    workers: int = Field(2, ge=1, description="ray: rollout worker actors")
    worker_threads: int = Field(1, ge=1, description="ray: torch threads per worker")


class UpdateConfig(_Section):
    lr: float = Field(2e-5, gt=0, description="AdamW lr (small: Adam moves each weight ~lr a step)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    clip_low: float = Field(0.2, ge=0, description="PPO clip epsilon below 1")
    clip_high: float = Field(0.28, ge=0, description="PPO clip epsilon above 1 (DAPO clip-higher)")
    kl_coef: float = Field(0.0, ge=0, description="k3 KL weight to the initial policy (0 = none)")
    aggregation: Literal["token", "sequence", "constant"] = Field(
        "token", description="loss aggregation over tokens (constant = Dr.GRPO)"
    )
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    epochs: int = Field(1, ge=1, description="passes over each batch")
    minibatches: int = Field(1, ge=1, description="optimizer steps per epoch")
    micro_batch: int = Field(0, ge=0, description="episodes per forward pass (0 = whole minibatch)")
    skip_zero_advantage: bool = Field(
        True, description="leave episodes with advantage 0 on every token out of the forward and "
        "backward passes (same gradient, less compute; off when a KL term applies)"
    )
    share_prefix: bool = Field(
        True, description="run each group's common prompt once in the training forward and "
        "repeat its KV cache to the group's rows (same logits and gradient, less compute)"
    )
    length_buckets: int = Field(
        2, ge=1, description="share_prefix: run the completions in this many passes of rows of "
        "similar length, each cut to its longest row (less padding, one more pass each)"
    )
    mismatch: Literal["none", "token", "sequence"] = Field(
        "none", description="rollout/trainer mismatch: recompute the sampled tokens' log-probs "
        "with the trainer before the update, take the PPO ratio against them, and weight each "
        "token (or sequence) by the truncated ratio trainer/sampler (an engine other than the "
        "trainer, bf16 sampling); mismatch/* metrics"
    )
    mismatch_cap: float = Field(2.0, gt=0, description="mismatch: truncation of the weights")


class TrainConfig(_Section):
    iterations: int = Field(50, ge=0, description="rollout-credit-update iterations")
    world_token_budget: int | None = Field(None, ge=1, description="stop once this many used")
    seed: int = Field(0, description="seed of sampling, prompt order and initialisation")
    eval_every: int = Field(10, ge=0, description="held-out eval every N iterations (0 = never)")
    eval_problems: int = Field(64, ge=1, description="held-out problems per evaluation")
    eval_temperature: float = Field(0.0, ge=0, description="eval sampling temperature (0 = greedy)")
    checkpoint_every: int = Field(10, ge=0, description="checkpoint every N iterations (0 = end)")
    keep_checkpoints: int = Field(2, ge=1, description="how many checkpoints to keep")
    fsdp: bool = Field(
        False, description="under torchrun: shard the policy's weights, gradients and optimizer "
        "state over the processes (FSDP2); sampling runs on a full replica")
    max_skipped_updates: int = Field(
        5, ge=0, description="stop the run (with a checkpoint) after this many updates in a row "
        "skipped for a non-finite loss or gradient (0 = never)")
    run_dir: str | None = Field(None, description="run directory (default runs/<time>-<task>)")
    progress: bool = Field(True, description="show a live progress bar")


class LessonsConfig(_Section):
    """`lessons`: reflection. A reviewer turns mixed groups into gated edits of a lesson book
    that is put before rollout prompts (or distilled into the weights)."""

    enabled: bool = Field(False, description="keep a lesson book for this run")
    book: str | None = Field(None, description="SQLite book path (default <run_dir>/lessons.db)")
    inject: bool = Field(True, description="put the book before every rollout and eval prompt; "
                         "false: a lesson-free student (distil it with credit.distill.context)")
    review: bool = Field(True, description="review groups and edit the book (false: frozen book)")
    every: int = Field(1, ge=1, description="review every N iterations")
    reviewer: Literal["policy", "hf", "http"] = Field(
        "policy", description="policy: the live policy; hf: a local HF model (reviewer_model); "
        "http: an OpenAI-compatible endpoint (base_url, model)")
    reviewer_model: str | None = Field(None, description="hf: local model directory")
    base_url: str | None = Field(None, description="http: e.g. http://127.0.0.1:8000/v1")
    model: str | None = Field(None, description="http: the endpoint's model name")
    api_key_env: str | None = Field(
        None, description="http: NAME of the environment variable holding the API key (the key "
        "itself is never written anywhere)")
    timeout_s: float = Field(30.0, gt=0, description="http: seconds per reviewer call")
    retries: int = Field(2, ge=0, description="http: retries on timeouts and 5xx")
    style: Literal["auto", "chat", "compact"] = Field(
        "auto", description="reviewer prompt; auto: compact for the policy, chat otherwise")
    max_groups: int = Field(4, ge=1, description="mixed groups shown per review")
    per_group: int = Field(2, ge=1, description="successes (and as many failures) per group")
    max_edits: int = Field(3, ge=1, description="edits gated per review")
    reply_tokens: int = Field(64, ge=1, description="reviewer reply length cap")
    temperature: float = Field(0.7, ge=0, description="reviewer sampling temperature")
    token_budget: int = Field(128, ge=1, description="the book's size cap, in policy tokens")
    gate_problems: int = Field(64, ge=1, description="validation problems scoring each edit")
    gate_margin: float = Field(0.02, description="an edit must raise validation reward this much")
    decay: float = Field(0.05, ge=0, lt=1, description="worth lost per iteration (extinction)")
    retire_below: float = Field(0.2, description="a lesson whose worth falls below is retired")
    revalidate_every: int = Field(5, ge=0, description="ablate the weakest lesson every N (0 off)")
    dedup: bool = Field(True, description="an add paraphrasing a lesson becomes a merge")
    dedup_threshold: float = Field(0.71, gt=0, le=1, description="cosine similarity of a paraphrase")

    @model_validator(mode="after")
    def _check(self) -> LessonsConfig:
        if self.enabled and self.reviewer == "hf" and not self.reviewer_model:
            raise ValueError("lessons.reviewer=hf needs lessons.reviewer_model (a model directory)")
        if self.enabled and self.reviewer == "http" and not (self.base_url and self.model):
            raise ValueError("lessons.reviewer=http needs lessons.base_url and lessons.model")
        return self


class DreamConfig(_Section):
    """`dream`: a world model trained online on real transcripts lets the policy try actions in
    imagination: dream-testing at decision points (`plan`) and imagined episodes in the training
    batch (`dyna`). Imagined tokens are counted apart and never as world tokens."""

    plan: bool = Field(False, description="dream-test candidate actions before acting for real")
    dyna: bool = Field(False, description="imagined episodes join each training batch")
    oracle: bool = Field(False, description="the real env answers the dreams (a perfect world "
                         "model: an upper bound for measuring, not for training runs)")
    wm_lr: float = Field(3e-4, gt=0, description="world model AdamW lr")
    wm_epochs: int = Field(1, ge=1, description="world model passes over its buffer per iteration")
    wm_steps: int = Field(16, ge=1, description="world model minibatch steps per iteration (cap)")
    wm_batch: int = Field(32, ge=1, description="transitions per world model minibatch")
    wm_buffer: int = Field(4096, ge=1, description="recent real transitions kept to train on")
    wm_eval: int = Field(64, ge=1, description="new real transitions scored before training on "
                         "them (held-out accuracy over training)")
    wm_reward_weight: float = Field(1.0, ge=1, description="world model loss weight of the "
                                    "replies that carry a reward or end the episode (rare "
                                    "events: the goal step is ~3% of keydoor transitions)")
    wm_event_share: float = Field(0.0, ge=0, le=1, description="share of the world model's "
                                  "minibatch draws taken from episodes holding such a reply "
                                  "(prioritised replay of the rare events)")
    wm_augment: float = Field(0.0, ge=0, le=1, description="share of the world model's "
                              "minibatch episodes renamed by a random symmetry of the world "
                              "(keydoor: compass rotations and reflections, room labels), so "
                              "it learns rules rather than names; needs a world with "
                              "`symmetry(rng)`")
    wm_temperature: float = Field(0.0, ge=0, description="world model replies in dreams: 0 "
                                  "greedy (its most likely reply), 1 sampled (hidden state, "
                                  "such as an unseen room, dreamed as often as the model "
                                  "believes it); its accuracy metrics are always greedy")
    wm_event_threshold: float = Field(0.0, ge=0, le=1, description="a dreamed reply that "
                                      "claims a reward or an end is kept only when the world "
                                      "model gave its header this probability; otherwise it "
                                      "is written again as a rewardless one (0: off; "
                                      "clicker.dream.quiet)")
    wm_members: int = Field(1, ge=1, description="world models in an ensemble: the first writes "
                            "the dreams, all judge them (clicker.dream.ensemble); each trains "
                            "as one model does")
    wm_init: list[str] = Field(default_factory=list, description="where each world model "
                               "starts, one entry per member: policy (a copy of the policy's "
                               "LM), tiny:SEED[:RECIPE] (a built-in tiny model), words or "
                               "words:LAYERSxHIDDEN (a fresh LM that reads the world's words), "
                               "or a model directory (any tokenizer with an EOS token); "
                               "empty: all policy (clicker.dream.members)")
    min_agreement: float = Field(0.0, ge=0, le=1, description="dyna: drop dreams with a reward "
                                 "or an end whose header some ensemble member gives a "
                                 "probability below this (needs wm_members >= 2); 0: off")
    judge: Literal["events", "steps"] = Field(
        "events", description="dyna: which headers of a dream the ensemble judges against "
        "min_agreement: its events' (rewards, ends), or, with doubt: cut, every step's, so a "
        "goal some member believes the dream missed is doubted too")
    warmup_iterations: int = Field(2, ge=0, description="real iterations before any dream is used")
    candidates: int = Field(4, ge=2, description="plan: actions sampled at a decision point (K)")
    horizon: int = Field(1, ge=1, description="plan: turns each candidate is dreamed forward (H)")
    when: Literal["always", "uncertain"] = Field(
        "uncertain", description="plan: at every decision, or only when the sampled action's "
        "probability is below `uncertainty`")
    uncertainty: float = Field(0.5, gt=0, le=1, description="plan/uncertain: probability bound")
    margin: float = Field(0.05, ge=0, description="plan: act on another candidate only when its "
                          "dream scores this much above the policy's own draw")
    dyna_prompts: int = Field(4, ge=1, description="dyna: imagined prompts per iteration (x G)")
    dyna_problems: Literal["seen", "fresh"] = Field(
        "seen", description="dyna: dream the problems this iteration's real rollouts just played "
        "(the world model has just read their transcripts), or problems no rollout draws")
    dyna_weight: float = Field(0.5, gt=0, description="dyna: advantage weight of imagined episodes")
    dyna_updates: int = Field(0, ge=0, description="dyna: extra policy updates per real iteration "
                              "on imagined episodes only (Dyna's planning steps; each dreams a "
                              "new batch with the policy as it now is)")
    min_confidence: float = Field(0.5, ge=0, le=1, description="dyna: drop dreams whose least "
                                  "confident predicted step is below this")
    doubt: Literal["drop", "cut"] = Field(
        "drop", description="dyna: what becomes of a dream with a doubted step (one below "
        "min_confidence, an event below min_agreement, a malformed reply): drop the whole dream, "
        "or cut it before that step and bootstrap its return from the value model "
        "(clicker.dream.cut; needs the value credit source)")
    branch: int = Field(0, ge=0, description="branched dreams: real decision states per "
                        "iteration from which `candidates` actions are dreamed `horizon` turns "
                        "and scored (reward + V); one more policy update on them with advantage "
                        "score - the state's mean (clicker.dream.branch); 0: off")
    branch_weight: float = Field(1.0, gt=0, description="branch: advantage weight")
    branch_min_std: float = Field(0.02, ge=0, description="branch: advantages are divided by "
                                  "their std, never by less than this (a flat V's spread is "
                                  "noise, not signal)")
    min_event_recall: float = Field(0.0, ge=0, le=1, description="dyna/branch: dream only while the "
                                    "world model's held-out recall of rewards and ends (over "
                                    "its last 5 iterations) is at least this; 0: always")
    max_false_rewards: float = Field(1.0, ge=0, le=1, description="dyna/branch: and only while the "
                                     "share of held-out rewardless steps it gives a reward is "
                                     "at most this (a 20-turn dream compounds it); 1: always")
    max_outcome_gap: float | None = Field(
        None, gt=0, description="dyna: each iteration's first Dyna batch is a probe: when the "
        "mean reward its dreams predicted (a cut's bootstrap left out) differs from the mean "
        "real reward of the same problems by more than this (pooled over gap_window "
        "iterations), it is dropped and Dyna's planning steps skip the iteration "
        "(clicker.dream.probe); None: off (the gap is still logged)")
    gap_window: int = Field(1, ge=1, description="dyna/max_outcome_gap: iterations pooled")
    replay_episodes: int = Field(0, ge=0, description="replay check: real episodes per "
                                 "iteration whose actions the world model replays, before it "
                                 "trains on them, to compare the dream's outcome with the real "
                                 "one (dream/wm/replay_*; clicker.dream.replay); 0: off")
    min_replay_match: float = Field(0.0, ge=0, le=1, description="dyna/branch: dream only while "
                                    "the share of replayed real episodes whose dream ends at "
                                    "the same turn with the same return is at least this, "
                                    "among the paid ones and among the unpaid ones; 0: always")
    replay_window: int = Field(1, ge=1, description="replay check: iterations pooled")

    @property
    def enabled(self) -> bool:
        return self.plan or self.dyna or self.branch > 0

    @property
    def in_process(self) -> bool:
        """Whether dreaming needs the policy in the trainer's process (planning, Dyna's
        planning steps, branched dreams, cut dreams, which V bootstraps): Ray's world-model
        worker does Dyna only."""
        return (self.plan or self.dyna_updates > 0 or self.branch > 0
                or (self.dyna and self.doubt == "cut"))

    @model_validator(mode="after")
    def _dyna_updates_need_dyna(self) -> DreamConfig:
        if self.dyna_updates and not self.dyna:
            raise ValueError("dream.dyna_updates dreams with Dyna: set dream.dyna=true too")
        if self.max_outcome_gap is not None and not self.dyna:
            raise ValueError("dream.max_outcome_gap compares Dyna's dreams with real play: set "
                             "dream.dyna=true too")
        if self.min_agreement and (self.wm_members < 2 or self.oracle):
            raise ValueError("dream.min_agreement is the agreement of a learned world model "
                             "ensemble: set dream.wm_members >= 2 (and dream.oracle false)")
        if self.min_replay_match and not self.replay_episodes:
            raise ValueError("dream.min_replay_match gates dreams on replayed real episodes: "
                             "set dream.replay_episodes > 0 too")
        if self.judge == "steps" and not (self.min_agreement and self.doubt == "cut"):
            raise ValueError("dream.judge=steps judges every step of a dream against "
                             "dream.min_agreement and cuts it at the first doubted one: set "
                             "dream.min_agreement > 0 and dream.doubt=cut (dropping whole "
                             "dreams on any doubted step keeps the short ones: the seventh "
                             "round in docs/dreaming_rounds.md)")
        if self.wm_init:
            from clicker.dream.members import parse_init

            if self.oracle:
                raise ValueError("dream.wm_init is where learned world models start: the oracle "
                                 "(dream.oracle) has none")
            if len(self.wm_init) != self.wm_members:
                raise ValueError(f"dream.wm_init names where each learned world model starts: "
                                 f"give {self.wm_members} entries (dream.wm_members), got "
                                 f"{len(self.wm_init)}")
            for init in self.wm_init:
                parse_init(init)
        return self


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    credit: CreditConfig = Field(default_factory=CreditConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    lessons: LessonsConfig = Field(default_factory=LessonsConfig)
    dream: DreamConfig = Field(default_factory=DreamConfig)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if "lessons" in self.credit.distill.context and "distill" in self.credit.sources \
                and not self.lessons.enabled:
            raise ValueError("credit.distill.context has 'lessons' but lessons.enabled is false")
        batch = self.rollout.prompts * self.rollout.group_size
        if self.update.minibatches > batch:
            raise ValueError(
                f"update.minibatches={self.update.minibatches} exceeds the batch of {batch} "
                "episodes (rollout.prompts * rollout.group_size); lower it"
            )
        if not self.credit.sources:
            raise ValueError("credit.sources is empty; name at least one source, e.g. {grpo: 1.0}")
        if self.dream.dyna and self.dream.doubt == "cut" and "value" not in self.credit.sources:
            raise ValueError("dream.doubt=cut bootstraps a cut dream's return from the value "
                             "model: add value to credit.sources (or use dream.doubt=drop)")
        return self


def _one_line(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "config"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    got = f"; got {e['input']!r}" if "input" in e and not isinstance(e["input"], dict) else ""
    return f"config field '{where}': {e['msg']}{got}{more}"


def set_path(data: dict, dotted: str, value: Any) -> None:
    """Set data['a']['b'] = value for dotted 'a.b', creating sections as needed."""
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section")
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def build_config(data: dict | None = None, overrides: list[str] = ()) -> Config:
    data = dict(data or {})
    for item in overrides:
        set_path(data, *parse_override(item))
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"cannot read YAML {p}: {first}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping, not {type(data).__name__}")
    return build_config(data, overrides)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
