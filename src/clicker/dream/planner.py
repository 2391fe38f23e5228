"""Dream-testing: try candidate actions in the world model before acting for real.

At a decision point the policy samples K candidate actions (the one it drew anyway plus K - 1
more). Each distinct candidate is stepped in the `DreamWorld` and rolled H turns forward there
with the policy acting; its score is the predicted reward collected in the dream plus, when the
dream has not ended, the value model's V at the dreamed state (WebDreamer's recipe with a
learned world model instead of an LLM simulator). The best candidate is executed for real when
it beats the policy's own draw by more than `margin`; otherwise (ties included) the draw is
kept. A margin matters early in a run: a keydoor_long smoke run (5 iterations, value_turn with
plan and dyna) switched 59% of decisions on score gaps of 0.01 from a V still learning, and
its rollout success fell from 0.19 to 0.03.

The executed action keeps the log-probs it was sampled with. Choosing the best of K makes the
behaviour policy differ from the policy being trained; the update's importance ratio is taken
against those sampling log-probs, as everywhere, so the correction is the usual PPO one and not
exact for best-of-K: a known, documented bias of planning-as-acting.

Everything a dream produces (the world model's observations and the policy's dreamed actions)
is counted in `imagined_tokens`, never as world tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from clicker.core.types import Turn
from clicker.models.policy import Policy
from clicker.rollout.runner import LiveEpisode, RolloutSettings, play
from clicker.rollout.sampler import Sampler, Samples

# V(s) for token lists that each end where the next action starts
ValueFn = Callable[[list[list[int]]], list[float]]


@dataclass
class PlanStats:
    decisions: int = 0  # decision points seen
    dreamed: int = 0  # decision points dream-tested
    changed: int = 0  # dream-tested decisions where another candidate won
    imagined_tokens: int = 0
    score_gap: list[float] = field(default_factory=list)  # best minus the policy's own draw

    def metrics(self) -> dict[str, float]:
        gap = sum(self.score_gap) / len(self.score_gap) if self.score_gap else 0.0
        return {"dream/plan/decisions": float(self.decisions),
                "dream/plan/dreamed_fraction": self.dreamed / max(1, self.decisions),
                "dream/plan/changed_fraction": self.changed / max(1, self.dreamed),
                "dream/plan/score_gap": gap,
                "dream/plan/imagined_tokens": float(self.imagined_tokens)}


class Planner:
    """Picks, at each decision of a real rollout, the candidate action that scores best in a
    dream. Call it through `run_episodes(..., planner=planner)`."""

    def __init__(self, policy: Policy, dream_world, *, candidates: int = 4, horizon: int = 2,
                 when: str = "always", uncertainty: float = 0.5, value: ValueFn | None = None,
                 margin: float = 0.0, gamma: float = 1.0, sampler: Sampler | None = None):
        if candidates < 2:
            raise ValueError(f"planning needs at least 2 candidates, got {candidates}")
        if horizon < 1:
            raise ValueError(f"planning horizon must be >= 1, got {horizon}")
        if when not in ("always", "uncertain"):
            raise ValueError(f"plan when must be 'always' or 'uncertain', got {when!r}")
        self.policy, self.world = policy, dream_world
        self.k, self.h, self.when, self.uncertainty = candidates, horizon, when, uncertainty
        self.value, self.gamma, self.margin = value, gamma, margin
        self.sampler = sampler or Sampler(policy.model, policy.tokenizer)
        self.stats = PlanStats()

    def reset_stats(self) -> PlanStats:
        stats, self.stats = self.stats, PlanStats()
        return stats

    def _wants(self, lps: list[float]) -> bool:
        return self.when == "always" or math.exp(sum(lps)) < self.uncertainty

    def __call__(self, split: str, states: list[LiveEpisode], samples: Samples,
                 budgets: list[int], settings: RolloutSettings,
                 generator: torch.Generator | None) -> Samples:
        """`samples` with the action of each dream-tested state replaced by the best candidate."""
        self.stats.decisions += len(states)
        chosen = [i for i, (e, lps) in enumerate(zip(states, samples.logprobs))
                  if e.prefix == 0 and self._wants(lps)]
        if not chosen:
            return samples
        track = getattr(self.world.predictor, "track", None)
        if track is not None:  # a learned model keeps the real states' KV cache between turns
            track([id(e) for e in states], [e.tokens[e.context_tokens:] for e in states])
        extra = self.sampler.sample(
            [states[i].tokens for i in chosen], num_samples=self.k - 1,
            max_new_tokens=max(budgets[i] for i in chosen), temperature=settings.temperature,
            top_p=settings.top_p, stop=self.world.stop, generator=generator)
        tokens, logprobs = list(samples.tokens), list(samples.logprobs)
        finished = list(samples.finished)
        # every distinct candidate of every chosen state, dreamed in one batch
        cands: list[tuple[int, list[int], list[float], bool]] = []  # (state, toks, lps, fin)
        owner: list[list[int]] = []  # per chosen state: indices into cands
        for c, i in enumerate(chosen):
            seen: dict[str, int] = {}
            mine = []
            rows = [(samples.tokens[i], samples.logprobs[i], samples.finished[i])]
            rows += [(extra.tokens[r], extra.logprobs[r], extra.finished[r])
                     for r in range(c * (self.k - 1), (c + 1) * (self.k - 1))]
            for toks, lps, fin in rows:
                toks, lps = toks[:budgets[i]], lps[:budgets[i]]
                text = self.policy.decode(toks)
                if text not in seen:
                    seen[text] = len(cands)
                    cands.append((i, toks, lps, fin))
                mine.append(seen[text])
            owner.append(sorted(set(mine)))
        scores = self.score(split, states, cands, settings, generator)
        self.stats.dreamed += len(chosen)
        for c, i in enumerate(chosen):
            own = owner[c][0]  # the policy's own draw is the first candidate
            best = max(owner[c], key=lambda j: (scores[j], j == own))
            self.stats.score_gap.append(scores[best] - scores[own])
            if best != own and scores[best] - scores[own] > self.margin:
                self.stats.changed += 1
                _, tokens[i], logprobs[i], finished[i] = cands[best]
        return Samples(tokens, logprobs, finished)

    def score(self, split: str, states: list[LiveEpisode],
              cands: list[tuple[int, list[int], list[float], bool]],
              settings: RolloutSettings, generator: torch.Generator | None) -> list[float]:
        """Predicted reward over the candidate's step and H - 1 more dreamed turns, plus V at
        the last dreamed state when the dream has not ended."""
        dreams: list[LiveEpisode] = []
        for i, toks, lps, _ in cands:
            s = states[i]
            env = self.world.resume(split, s.index, s.tokens[s.context_tokens:],
                                    [t.action for t in s.turns], base=id(s))
            dreams.append(LiveEpisode(
                env, s.group, s.index, list(s.tokens) + list(toks),
                list(s.action_mask) + [True] * len(toks), list(s.logprobs) + list(lps),
                s.prompt, s.reference, turns=list(s.turns), meta=dict(s.meta),
                context_tokens=s.context_tokens))
        start = [len(d.tokens) - len(c[1]) for d, c in zip(dreams, cands)]
        # the candidate's own step, in one batched world-model call
        actions = [self.policy.decode(c[1]) for c in cands]
        steps = self.world.step_many([d.env for d in dreams], actions)
        for d, c, a, st, s0 in zip(dreams, cands, actions, steps, start):
            obs = self.policy.encode(st.observation) if not st.done else []
            d.tokens.extend(obs)
            d.action_mask.extend([False] * len(obs))
            d.logprobs.extend([0.0] * len(obs))
            d.turns.append(Turn(a, st.observation, float(st.reward), st.feedback,
                                (s0, s0 + len(c[1]))))
            d.done = st.done
        # then H - 1 more turns with the policy acting inside the dream (play's turn limit
        # counts the turns a state already has, so states are grouped by their limit)
        if self.h > 1:
            by_limit: dict[int, list[LiveEpisode]] = {}
            for d in dreams:
                if not d.done:
                    by_limit.setdefault(len(d.turns) + self.h - 1, []).append(d)
            for limit, group in by_limit.items():
                more = RolloutSettings(1, settings.temperature, settings.top_p,
                                       settings.max_action_tokens, limit, reuse_cache=False)
                play(self.policy, self.world, group, more, generator, self.sampler)
        n_real = [len(states[c[0]].tokens) for c in cands]
        self.stats.imagined_tokens += sum(len(d.tokens) - n for d, n in zip(dreams, n_real))
        scores = []
        open_ = [j for j, d in enumerate(dreams) if not d.done]
        values = self.value([dreams[j].tokens for j in open_]) if (self.value and open_) else []
        v_of = dict(zip(open_, values))
        for j, d in enumerate(dreams):
            rewards = [t.reward for t in d.turns[len(states[cands[j][0]].turns):]]
            ret = sum(r * self.gamma ** k for k, r in enumerate(rewards))
            if j in v_of:
                ret += self.gamma ** len(rewards) * v_of[j]
            scores.append(ret)
        return scores
