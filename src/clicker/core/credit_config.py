"""Typed settings of the credit sources (config section `credit`), one pydantic model each;
`clicker.core.config` assembles them with the other sections and re-exports them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from clicker.core.section import Section as _Section


class ValueConfig(_Section):
    """`value`: the clicker, a TD(lambda)-learned V(prefix) used as a potential (Ng et al. 1999)."""

    model: Literal["separate", "head"] = Field(
        "separate", description="separate = own copy of the initial policy + scalar head; "
        "head = scalar head on the live policy's (detached) last hidden state"
    )
    lr: float = Field(1e-4, gt=0, description="value model AdamW lr")
    epochs: int = Field(2, ge=1, description="value optimisation passes over each batch")
    gamma: float = Field(1.0, gt=0, le=1, description="discount over action tokens")
    lam_critic: float = Field(1.0, ge=0, le=1, description="TD(lambda) of the value targets")
    lam_actor: float = Field(0.95, ge=0, le=1, description="GAE lambda of the advantages")
    steps: Literal["token", "turn"] = Field(
        "token", description="time axis of TD and GAE: token = every action token; turn = one "
        "V per turn, read when the turn starts (multi-turn worlds; single-turn: every "
        "step_tokens action tokens), and every token of a turn shares its advantage"
    )
    step_tokens: int = Field(8, ge=1, description="single-turn worlds, steps=turn: tokens per step")
    replay: int = Field(
        0, ge=0, description="also fit V on the last N batches (targets recomputed with the "
        "current V; Monte-Carlo returns of slightly older policies): more data per real token"
    )
    vapo_alpha: float = Field(
        0.0, ge=0, description="> 0: length-adaptive actor lambda 1 - 1/(alpha*len) (VAPO)"
    )
    warmup_iterations: int = Field(
        0, ge=0, description="first N iterations train V on Monte-Carlo returns only (policy "
        "frozen: zero advantages), as in VC-PPO's value pre-training"
    )
    whiten: bool = Field(True, description="standardise advantages over the batch's action tokens")
    whiten_dreams: bool = Field(
        True, description="with whiten: standardise a batch of dreams alone (Dyna's planning "
        "steps) over itself; False: divide it by the last real batch's advantage std instead, "
        "so a batch of failed dreams, whose advantages are V's noise, stays noise-sized rather "
        "than being scaled up to the size of real credit"
    )
    learn_dreams: bool = Field(
        True, description="fit V on imagined episodes (Dyna dreams) too, as in Dyna; False: V "
        "learns from real episodes only (dreams still get credit from it), so a learned world "
        "model's errors never reach the clicker"
    )


class MCConfig(_Section):
    """`mc`: VinePPO Monte-Carlo values at step boundaries."""

    k: int = Field(4, ge=1, description="continuations per step boundary (VinePPO uses ~9)")
    step_tokens: int = Field(
        4, ge=1, description="single-turn worlds: a step boundary every N action tokens "
        "(multi-turn worlds: every turn)"
    )
    max_steps: int = Field(8, ge=1, description="at most this many boundaries per episode")
    whiten: bool = Field(False, description="standardise advantages over the batch")
    count_replay: bool = Field(
        False, description="also count the replayed prefix of each continuation as world "
        "tokens (an env without snapshots); default: only tokens after the cut"
    )


class ImplicitPRMConfig(_Section):
    """`implicit_prm`: PRIME's implicit process reward beta * log(pi_phi / pi_ref)."""

    beta: float = Field(0.05, gt=0, description="implicit reward scale")
    lr: float = Field(1e-5, gt=0, description="PRM AdamW lr")
    epochs: int = Field(1, ge=1, description="PRM optimisation passes over each batch")
    accuracy_filter: tuple[float, float] | None = Field(
        None, description="keep only groups whose accuracy is in [lo, hi] (PRIME: [0.2, 0.8])"
    )
    score_after_update: bool = Field(
        True, description="score the batch with the PRM after training on it (PRIME's double "
        "forward, update: before); False = score with the PRM as it was (single forward)"
    )
    normalize: bool = Field(
        True, description="divide process rewards by the batch's largest |return| (PRIME's "
        "prime_norm: batch_norm)"
    )
    whiten: bool = Field(
        True, description="standardise A_outcome + A_process over the kept action tokens (PRIME)"
    )
    micro_batch: int = Field(32, ge=1, description="rows per PRM / reference forward pass")

    @model_validator(mode="after")
    def _check_filter(self) -> ImplicitPRMConfig:
        if self.accuracy_filter is not None:
            lo, hi = self.accuracy_filter
            if not 0.0 <= lo <= hi <= 1.0:
                raise ValueError(f"accuracy_filter {self.accuracy_filter} must satisfy "
                                 "0 <= lo <= hi <= 1, e.g. [0.2, 0.8]")
        return self


class AdjudicatorConfig(_Section):
    """`adjudicator`: blind and privileged judges of incomplete answers."""

    use: Literal["blind", "privileged"] = Field(
        "privileged", description="which judge's potential shapes the reward"
    )
    differential_weight: float = Field(
        0.0, description="weight of the privileged-minus-blind differential as a potential"
    )
    labels: Literal["outcome", "mc"] = Field(
        "outcome", description="train on episode outcomes, or Math-Shepherd soft labels from "
        "k Monte-Carlo continuations per step boundary (counted as world tokens)"
    )
    k: int = Field(4, ge=1, description="continuations per boundary when labels = mc")
    step_tokens: int = Field(4, ge=1, description="single-turn step size in action tokens")
    max_steps: int = Field(8, ge=1, description="at most this many labelled boundaries")
    count_replay: bool = Field(False, description="as mc.count_replay, for labels = mc")
    lr: float = Field(1e-4, gt=0, description="adjudicator AdamW lr")
    epochs: int = Field(2, ge=1, description="optimisation passes over each batch")
    lam_actor: float = Field(0.95, ge=0, le=1, description="GAE lambda of the shaped rewards")
    whiten: bool = Field(True, description="standardise advantages over the batch")
    report_top: int = Field(10, ge=0, description="episodes listed in the disagreement report")


class JudgeConfig(_Section):
    """`judge`: a frozen learned judge as the reward, with treats from the real verifier."""

    warmup_iterations: int = Field(
        5, ge=0, description="first N iterations: judge trains on real rewards (which also "
        "drive the policy), then freezes; with 0 the judge starts untrained (scores 0.5)"
    )
    treat_every: int = Field(5, ge=1, description="every k-th batch is also scored for real")
    retrain_gap: float = Field(
        0.15, ge=0, description="retrain when judge score - real reward exceeds this on a treat"
    )
    lr: float = Field(1e-4, gt=0, description="judge AdamW lr")
    epochs: int = Field(3, ge=1, description="passes over the labelled buffer per (re)training")
    buffer: int = Field(2048, ge=1, description="labelled episodes kept for (re)training")


class RFTConfig(_Section):
    """`rft`: rejection-sampling fine-tuning (STaR / RFT)."""

    threshold: float = Field(0.5, description="keep episodes whose reward exceeds this")


class DistillConfig(_Section):
    """`distill`: self-distillation (SDPO; OPSD): the policy shown privileged context is its own
    per-token teacher."""

    teacher: Literal["ema", "initial"] = Field(
        "ema", description="ema: an EMA of the student's weights; initial: the frozen initial policy"
    )
    ema_rate: float = Field(0.05, gt=0, le=1, description="teacher <- (1 - r) teacher + r student")
    context: list[Literal["sibling", "feedback", "reference", "lessons"]] = Field(
        default_factory=lambda: ["sibling", "feedback"],
        description="teacher context: a successful sibling's transcript (never the episode "
        "itself), the verifier's feedback on a failed attempt, the reference answer (OPSD), the "
        "lessons book (distil it into a lesson-free student)",
    )
    feedback_without_sibling: bool = Field(
        True, description="use feedback only when no sibling succeeded (SDPO's default)"
    )
    success_threshold: float = Field(0.5, description="a sibling with reward >= this succeeded")
    loss: Literal["jsd", "sampled"] = Field(
        "jsd", description="jsd: divergence over the teacher's top-k ids + tail, added to the "
        "update's loss; sampled: advantage log pi_T - log pi_theta at the sampled token"
    )
    alpha: float = Field(0.5, ge=0, le=1, description="jsd: 0 forward KL, 0.5 JSD, 1 reverse KL")
    top_k: int = Field(100, ge=1, description="jsd: teacher ids kept per token (+ a tail bucket)")
    clip: float = Field(5.0, gt=0, description="sampled: |log-ratio advantage| capped at this")
    is_clip: float = Field(2.0, gt=0, description="jsd: per-token weight min(pi/pi_old, is_clip)")
    micro_batch: int = Field(32, ge=1, description="rows per teacher forward pass")


class CreditConfig(_Section):
    sources: dict[str, float] = Field(
        default_factory=lambda: {"grpo": 1.0},
        description="credit source name -> weight; advantages are the weighted sum",
    )
    eps: float = Field(1e-4, gt=0, description="std epsilon of GRPO standardisation")
    on_workers: list[str] = Field(
        default_factory=list, description="sources built in their own Ray actors, with their "
        "models (needs rollout.ray; clicker.credit.remote)")
    value: ValueConfig = Field(default_factory=ValueConfig)
    mc: MCConfig = Field(default_factory=MCConfig)
    implicit_prm: ImplicitPRMConfig = Field(default_factory=ImplicitPRMConfig)
    adjudicator: AdjudicatorConfig = Field(default_factory=AdjudicatorConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    rft: RFTConfig = Field(default_factory=RFTConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)

    @model_validator(mode="after")
    def _check_on_workers(self) -> CreditConfig:
        stray = [n for n in self.on_workers if n not in self.sources]
        if stray:
            raise ValueError(f"credit.on_workers names {', '.join(stray)}, which credit.sources "
                             f"does not ({', '.join(self.sources)})")
        return self
