"""`Dreamer`: what the training loop holds when a run dreams (config section `dream`).

Each iteration the loop hands it the real episodes (`observe`: the world model is scored on
them before it trains on them, so its accuracy over training is held out); from
`warmup_iterations` on it gives the loop a `Planner` for the real rollouts (`plan`) and
imagined episodes for the batch (`imagine`, Dyna). Imagined episodes are flagged, carry no world
tokens, and get their advantages scaled by `dyna_weight` (`weigh`); dreams whose least confident
predicted step is below `min_confidence` are dropped before they reach the batch (with `doubt:
cut`, cut before that step, V bootstrapping the rest: `clicker.dream.cut`), and no dream is
made while the world model's held-out recall of rewards and ends is below `min_event_recall` or
the share of rewardless steps it gives a reward above `max_false_rewards` (`trusted`). With
`wm_members` > 1 the world model is an ensemble (`clicker.dream.ensemble`) and Dyna dreams with a
reward or an end some member gives less than `min_agreement` are dropped too. Each
iteration's first Dyna batch is also a probe (`clicker.dream.probe`): with `max_outcome_gap`,
when its dreams' outcomes stray too far from real play on the same problems, it is dropped and
Dyna's planning steps skip the iteration. With `replay_episodes`, each iteration's real
episodes are also replayed in the dream before the model trains on them (`clicker.dream.replay`),
and `min_replay_match` keeps Dyna and branching shut while too few dreams end as real play did.
With `branch`, `clicker.dream.branch` dreams K candidate actions one decision deep from real states
(`brancher` scores them) for one more policy update.

All imagined tokens (Dyna episodes and the planner's dreams) are counted in
`dream/imagined_tokens`, beside, never inside, `world/tokens`.
"""

from __future__ import annotations

import torch

from clicker.core.config import DreamConfig, RolloutConfig
from clicker.core.types import Batch, Episode
from clicker.dream.cut import cut_dreams, dream_reward, first_doubted
from clicker.dream.ensemble import WorldModelEnsemble, lowest
from clicker.dream.planner import Planner, ValueFn
from clicker.dream.probe import OutcomeGap
from clicker.dream.replay import ReplayCheck
from clicker.dream.world import DreamWorld, OracleModel
from clicker.dream.world_model import WorldModel, WorldModelConfig
from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.rollout.sampler import Sampler
from clicker.tasks.base import World

DYNA_INDEX_OFFSET = 2**41  # imagined problems: train-split indices real rollouts never draw


def weigh_dreams(batch: Batch, advantages: torch.Tensor, weight: float) -> torch.Tensor:
    """Advantages with imagined rows scaled by `weight` (dyna_weight: a positive scale of A
    scales that row's clipped policy-gradient loss by the same factor)."""
    imagined = torch.tensor([e.imagined for e in batch.episodes], dtype=torch.bool)
    if not imagined.any():
        return advantages
    scale = torch.where(imagined, weight, 1.0).to(advantages)
    return advantages * scale[:, None]


class Dreamer:
    def __init__(self, cfg: DreamConfig, rollout: RolloutConfig, policy: Policy, world: World,
                 *, seed: int = 0, value: ValueFn | None = None, gamma: float = 1.0):
        self.cfg, self.rollout, self.policy, self.seed = cfg, rollout, policy, seed
        if cfg.dyna and cfg.doubt == "cut" and value is None:
            raise ValueError("dream.doubt=cut bootstraps cut dreams from the value model, and "
                             "this run has none: add value to credit.sources")
        self.value, self.gamma = value, gamma
        max_turns = rollout.max_turns or world.max_turns
        self.model: WorldModel | WorldModelEnsemble | None = None
        if cfg.oracle:
            predictor = OracleModel(world)
        else:
            symmetry = getattr(world, "symmetry", None)
            if cfg.wm_augment > 0 and symmetry is None:
                raise ValueError(f"dream.wm_augment: the world {world.name!r} declares no "
                                 "symmetries (a `symmetry(rng)` method, as keydoor's)")
            inits = cfg.wm_init or ["policy"] * cfg.wm_members
            members = [WorldModel.from_policy(policy, WorldModelConfig(
                lr=cfg.wm_lr, steps=cfg.wm_steps, epochs=cfg.wm_epochs, batch_size=cfg.wm_batch,
                micro_batch=cfg.wm_batch, buffer=cfg.wm_buffer, eval_max=cfg.wm_eval,
                reward_weight=cfg.wm_reward_weight, event_share=cfg.wm_event_share,
                augment=cfg.wm_augment, temperature=cfg.wm_temperature,
                event_threshold=cfg.wm_event_threshold, seed=seed + i),
                max_turns=max_turns, symmetry=symmetry, init=init, world=world)
                for i, init in enumerate(inits)]
            self.model = members[0] if len(members) == 1 else WorldModelEnsemble(members)
            predictor = self.model
        self.world = DreamWorld(world, predictor, policy)
        self.sampler = Sampler(policy.model, policy.tokenizer)
        self.planner = Planner(policy, self.world, candidates=cfg.candidates, horizon=cfg.horizon,
                               when=cfg.when, uncertainty=cfg.uncertainty, value=value,
                               margin=cfg.margin, gamma=gamma,
                               sampler=self.sampler) if cfg.plan else None
        # branched dreams (clicker.dream.branch) score candidates with the planner's scorer
        self.brancher = Planner(policy, self.world, candidates=cfg.candidates,
                                horizon=cfg.horizon, value=value, gamma=gamma,
                                sampler=self.sampler) if cfg.branch else None
        self.imagined_tokens = 0  # over the run: Dyna episodes and planner dreams
        self.iterations = 0  # iterations observed (dreams start after cfg.warmup_iterations)
        self.probe = OutcomeGap(cfg.max_outcome_gap, cfg.gap_window)  # dreams vs real outcomes
        # real episodes replayed in the dream (clicker.dream.replay)
        self.replay = ReplayCheck(cfg.replay_episodes, cfg.min_replay_match, cfg.replay_window)

    @property
    def ready(self) -> bool:
        return self.iterations >= self.cfg.warmup_iterations

    def trusted(self) -> bool:
        """Whether Dyna (and branching) may dream now: the world model's held-out event recall
        (rewards and ends of the last iterations' real transitions, scored before it trained
        on them) is at least `min_event_recall` and the share of held-out rewardless steps it
        gives a reward at most `max_false_rewards`, and its replay match (real episodes' actions
        replayed in the dream: `clicker.dream.replay`) at least `min_replay_match`. A model that
        never dreams the goal makes every dream a failure: training on them teaches the policy
        (and a value model) that nothing pays; one that dreams goals where there are none
        teaches it to farm them."""
        cfg, m = self.cfg, self.model
        if not self.replay.open:
            return False
        if m is None:
            return True
        if cfg.min_event_recall > 0:
            recall = m.event_recall
            if recall is None or recall < cfg.min_event_recall:
                return False
        if cfg.max_false_rewards < 1:
            false = m.false_reward_rate
            if false is None or false > cfg.max_false_rewards:
                return False
        return True

    def plan(self) -> Planner | None:
        """The planner for this iteration's real rollouts (None before the warm-up is over)."""
        return self.planner if self.ready else None

    def observe(self, episodes: list[Episode]) -> dict[str, float]:
        """Score the world model on these real episodes, then train it on them."""
        self.iterations += 1
        real = [e for e in episodes if not e.imagined]
        self.probe.observe(real)
        metrics = self.replay.measure(self.world, real)  # held out: before the model trains
        return metrics | (self.model.observe(real) if self.model is not None else {})

    def imagine(self, iteration: int, group_offset: int, generator: torch.Generator | None,
                seen: list[int] | None = None, round: int = 0
                ) -> tuple[list[Episode], dict[str, float]]:
        """Dyna: `dyna_prompts` x G imagined episodes, the confident ones. Their problems are
        the first `dyna_prompts` of `seen` (this iteration's real train problems, whose
        transcripts the world model has just read: classic Dyna, new action sequences from
        visited starts) when `dyna_problems` is "seen" and `seen` is given, else train problems
        no real rollout draws. Their group ids start at `group_offset` (they never share a group
        with real episodes: a baseline mixes no real and imagined returns). `round` numbers
        the batches dreamed in one iteration (0: the real batch's; 1.. `imagined_updates`'):
        fresh problems differ by round."""
        if not (self.cfg.dyna and self.ready):
            return [], {}
        if not self.trusted() or (round > 0 and self.probe.shut):
            return [], {"dream/dyna/gated": 1.0}
        r = self.rollout
        settings = RolloutSettings(r.group_size, r.temperature, r.top_p, r.max_action_tokens,
                                   r.max_turns, reuse_cache=r.reuse_cache)
        if self.cfg.dyna_problems == "seen" and seen:
            indices = [seen[j % len(seen)] for j in range(self.cfg.dyna_prompts)]
        else:
            rounds = self.cfg.dyna_updates + 1
            base = (DYNA_INDEX_OFFSET + ((self.seed * 10_000_019 + iteration) * rounds + round)
                    * self.cfg.dyna_prompts)
            indices = [base + j for j in range(self.cfg.dyna_prompts)]
        dreams = run_episodes(self.policy, self.world, "train", indices, settings, generator,
                              self.sampler, group_offset=group_offset)
        tokens = sum(e.meta["imagined_tokens"] for e in dreams)
        self.imagined_tokens += tokens
        kept, extra = (self._cut if self.cfg.doubt == "cut" else self._drop)(dreams)
        if round == 0:  # the iteration's probe (clicker.dream.probe)
            extra |= self.probe.measure(kept)
        used = [] if self.probe.shut else kept
        metrics = extra | {
            "dream/dyna/episodes": float(len(used)),
            "dream/dyna/dropped": float(len(dreams) - len(used)),  # any gate
            "dream/dyna/success": sum(dream_reward(e) > 0.5 for e in kept) / max(1, len(kept)),
            "dream/dyna/confidence": sum(e.meta["dream_confidence"] for e in dreams)
            / max(1, len(dreams)),
            "dream/dyna/imagined_tokens": float(tokens),
            "dream/dyna/gated": float(self.probe.shut),
        }
        return used, metrics

    def _drop(self, dreams: list[Episode]) -> tuple[list[Episode], dict[str, float]]:
        """`doubt: drop`: the dreams with no step below min_confidence and (ensemble) no event
        below min_agreement."""
        kept = [e for e in dreams if e.meta["dream_confidence"] >= self.cfg.min_confidence]
        extra: dict[str, float] = {}
        if isinstance(self.model, WorldModelEnsemble):
            agree = self.model.agreement(kept)
            extra["dream/dyna/agreement"] = sum(agree) / max(1, len(agree))
            extra["dream/dyna/disagreed"] = float(sum(a < self.cfg.min_agreement for a in agree))
            kept = [e for e, a in zip(kept, agree) if a >= self.cfg.min_agreement]
        return kept, extra

    def _cut(self, dreams: list[Episode]) -> tuple[list[Episode], dict[str, float]]:
        """`doubt: cut`: every dream cut before its first doubted step, V bootstrapping its
        return (clicker.dream.cut); those doubted at their first step are dropped."""
        cfg, extra = self.cfg, {}
        if isinstance(self.model, WorldModelEnsemble):
            events = self.model.event_agreements(dreams, steps=cfg.judge == "steps")
            lows = [lowest(g) for g in events]
            extra["dream/dyna/agreement"] = sum(lows) / max(1, len(lows))
            extra["dream/dyna/disagreed"] = float(sum(a < cfg.min_agreement for a in lows))
        else:
            events = [[] for _ in dreams]
        turns = [first_doubted(e, cfg.min_confidence, ev, cfg.min_agreement)
                 for e, ev in zip(dreams, events)]
        kept = cut_dreams(dreams, turns, self.value, self.gamma)
        cut = [e.meta for e in kept if "cut" in e.meta]
        extra["dream/dyna/cut"] = float(len(cut))
        extra["dream/dyna/bootstrap"] = sum(m["bootstrap"] for m in cut) / max(1, len(cut))
        extra["dream/dyna/cut_turn"] = sum(m["cut"] for m in cut) / max(1, len(cut))
        return kept, extra

    def weigh(self, batch: Batch, advantages: torch.Tensor) -> torch.Tensor:
        return weigh_dreams(batch, advantages, self.cfg.dyna_weight)

    def plan_metrics(self) -> dict[str, float]:
        if self.planner is None:
            return {}
        stats = self.planner.reset_stats()
        self.imagined_tokens += stats.imagined_tokens
        return stats.metrics()

    def state_dict(self) -> dict:
        state = {"imagined_tokens": self.imagined_tokens, "iterations": self.iterations,
                 "probe": self.probe.state_dict(), "replay": self.replay.state_dict()}
        if self.model is not None:
            state["world_model"] = self.model.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.imagined_tokens = int(state.get("imagined_tokens", 0))
        self.iterations = int(state.get("iterations", 0))
        self.probe.load_state_dict(state.get("probe", {}))
        self.replay.load_state_dict(state.get("replay", {}))
        if self.model is not None and "world_model" in state:
            self.model.load_state_dict(state["world_model"])
