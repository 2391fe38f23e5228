"""Probe dreams against real play before learning from them (`dream.max_outcome_gap`).

A Dyna dream teaches the policy through its outcome: which of a group's dreams reached a reward.
If the world model dreams outcomes the real env would not give, Dyna's updates teach the policy
the model's errors, and on keydoor_long both kinds were measured (README, issue 7): a model that
has not learned the goal yet dreams failures where real play succeeds (the first Dyna iteration
cut 14 of 16 dreams, none reached the goal while real play succeeded 16-28%, and held-out success
fell after it in 8 of 10 runs of the tenth round), and a model that has learned it dreams goals
real play does not reach (dream success 0.4-0.75 against real 0.2-0.3 late in training).

Per-transition accuracy on held-out real steps (`dream.min_event_recall`) did not bound that
error: one wrong reply in a 20-turn dream decides its outcome. So the probe compares outcomes
directly, on the iteration's own data, without spending a world token. With `dyna_problems:
seen` the first Dyna batch of an iteration dreams the problems the real rollouts just played,
with the policy that played them; the mean reward its dreams predicted (a cut dream's V
bootstrap left out: an outcome the dream did not reach is not one it reproduced) minus the mean
real reward of the same problems is the *outcome gap*. When its mean over the last
`gap_window` iterations is above `max_outcome_gap` in size, the probe batch is dropped and
Dyna's planning steps skip the iteration; otherwise the probe joins the batch as usual. The
probe dreams before the iteration's update, so with a perfect world model dreams and real
episodes are draws of one distribution and the gap is pure noise: its standard deviation is
about 0.14 for 16 of each at success 0.2 (0.17 at 0.4), so a tolerance of 0.15 shuts a
perfect model out of about 3 iterations in 10; `gap_window` trades that for a slower
reaction.

This is a necessary condition, not a sufficient one: dreams can match real play's success rate
and still credit the wrong actions.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from clicker.core.types import Episode
from clicker.dream.cut import dream_reward


class OutcomeGap:
    """The outcome gap of each iteration's probe dreams (see the module doc) and whether it
    shuts Dyna for the iteration. `tolerance` None: always open (the gap is still measured)."""

    def __init__(self, tolerance: float | None, window: int = 1):
        if window < 1:
            raise ValueError(f"OutcomeGap window must be >= 1, got {window}")
        self.tolerance = tolerance
        self.gaps: deque[float] = deque(maxlen=window)
        self.real: dict[int, list[float]] = {}  # this iteration's real rewards by problem
        self.shut = False

    def observe(self, episodes: Sequence[Episode]) -> None:
        """The iteration's real episodes (imagined ones are ignored): the probe's reference."""
        self.real = {}
        for e in episodes:
            if not e.imagined:
                self.real.setdefault(int(e.meta.get("index", -1)), []).append(e.reward)

    def measure(self, dreams: Sequence[Episode]) -> dict[str, float]:
        """Score this iteration's probe dreams against the real episodes of their problems (all
        real episodes when none played them: `dyna_problems: fresh`), update `shut`, and return
        `dream/dyna/outcome_*` metrics. No dreams (all dropped): nothing measured, `shut` is
        left to the window."""
        if not dreams or not self.real:
            self.shut = self._decide()
            return {"dream/dyna/outcome_gated": float(self.shut)}
        problems = {int(e.meta.get("index", -1)) for e in dreams}
        real = [r for p in problems for r in self.real.get(p, [])]
        if not real:
            real = [r for rs in self.real.values() for r in rs]
        dreamed = sum(dream_reward(e) for e in dreams) / len(dreams)
        actual = sum(real) / len(real)
        self.gaps.append(dreamed - actual)
        self.shut = self._decide()
        return {"dream/dyna/outcome_dreamed": dreamed, "dream/dyna/outcome_real": actual,
                "dream/dyna/outcome_gap": dreamed - actual,
                "dream/dyna/outcome_gap_pooled": self.pooled or 0.0,
                "dream/dyna/outcome_gated": float(self.shut)}

    @property
    def pooled(self) -> float | None:
        return sum(self.gaps) / len(self.gaps) if self.gaps else None

    def _decide(self) -> bool:
        pooled = self.pooled
        return self.tolerance is not None and pooled is not None and abs(pooled) > self.tolerance

    def state_dict(self) -> dict:
        return {"gaps": list(self.gaps), "shut": self.shut}

    def load_state_dict(self, state: dict) -> None:
        self.gaps.clear()
        self.gaps.extend(float(g) for g in state.get("gaps", []))
        self.shut = bool(state.get("shut", False))
