"""Replay check: real episodes' actions replayed in the dream, outcomes compared (issue 7).

Per-transition accuracy (`dream/wm/obs_exact`, event recall) does not bound what Dyna learns
from: one wrong reply in a 20-turn dream decides its outcome (`clicker.dream.probe`). The
outcome probe compares mean rewards, which a model can match while crediting the wrong
episodes. The replay check asks the question a dream's credit rests on, per episode: given the
actions a real episode took, does the dream end where the real env ended, with the reward it
gave?

Each iteration, before the world model trains on them (so they are held out), up to
`dream.replay_episodes` of the real episodes are replayed open loop: the dream starts from the
episode's real prompt and the world model answers each of its real actions in turn, writing its
own observations (the actions stay the real ones even where the dream's observations stray). An
episode *matches* when the dream's return equals the real one (within 0.5) and the dream ends at
the same turn (a real episode the env ended at turn n; one cut short by the runner's turn limit
must not be ended earlier). With `dream.min_replay_match`, Dyna and branched dreams are made
only while the share of matches, pooled over the last `replay_window` iterations, is at least
that among the paid episodes and among the unpaid ones (`ReplayCheck`): a model that cannot
replay real play's outcomes on layouts it has not trained on must not dream new ones. No world
token is spent: the episodes were played already.

For keydoor's fresh layouts this is the direct test: the replayed episodes come from layouts
the model has not read (each iteration draws new ones), which is what `dyna_problems: fresh`
dreams.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from clicker.core.types import Episode
from clicker.dream.world import DreamEnv, DreamWorld
from clicker.tasks.base import Step


@dataclass(frozen=True)
class Replayed:
    """One real episode replayed in the dream."""

    real_return: float
    dream_return: float
    real_turns: int  # turns the real episode took
    dream_end: int | None  # turn (1-based) at which the dream ended; None: still running
    env_ended: bool  # the real env ended the episode (not the runner's limit)

    @property
    def match(self) -> bool:
        if abs(self.dream_return - self.real_return) >= 0.5:
            return False
        if self.env_ended:
            return self.dream_end == self.real_turns
        return self.dream_end is None or self.dream_end >= self.real_turns


def replay(world: DreamWorld, episodes: Sequence[Episode],
           watch: Callable[[int, int, Step, DreamEnv], None] | None = None) -> list[Replayed]:
    """Replay each real episode's actions in `world` (all episodes stepped together, one
    predictor call per turn). `watch(i, t, step, env)` sees each dreamed step (episode i, turn
    t from 0) as it is made (`benchmarks/wm_episode_replay.py` finds where a dream first
    strays). Imagined episodes are refused: a dream replayed in a dream checks nothing."""
    if any(e.imagined for e in episodes):
        raise ValueError("replay: imagined episodes cannot be checked against a dream")
    envs = [world.make(e.meta.get("split", "train"), int(e.meta["index"])) for e in episodes]
    for env in envs:
        env.reset()
    returns = [0.0] * len(episodes)
    ends: list[int | None] = [None] * len(episodes)
    longest = max((len(e.turns) for e in episodes), default=0)
    for t in range(longest):
        live = [i for i, e in enumerate(episodes) if t < len(e.turns) and ends[i] is None]
        if not live:
            break
        steps = world.step_many([envs[i] for i in live],
                                [episodes[i].turns[t].action for i in live])
        for i, s in zip(live, steps):
            returns[i] += s.reward
            if s.done:
                ends[i] = t + 1
            if watch is not None:
                watch(i, t, s, envs[i])
    return [Replayed(e.reward, r, len(e.turns), end, not e.truncated)
            for e, r, end in zip(episodes, returns, ends)]


class ReplayCheck:
    """The replay match of each iteration (see the module doc), pooled over `window`
    iterations, and whether it lets dreams be made (`open`).

    The gate asks for `threshold` among the paid episodes (the real return was positive) and
    among the unpaid ones separately, each pooled over the window: where real play rarely
    succeeds, a model that never dreams a reward matches nearly every episode (on keydoor_long
    15 of 16 once, with 0 of the paid one right: the fifteenth round, docs/dreaming_rounds.md),
    and those are the dreams that teach nothing pays. A window without a paid episode keeps the
    gate shut (the model's rewards are unchecked)."""

    def __init__(self, episodes: int, threshold: float = 0.0, window: int = 1):
        if episodes < 0:
            raise ValueError(f"replay episodes must be >= 0, got {episodes}")
        if window < 1:
            raise ValueError(f"replay window must be >= 1, got {window}")
        if threshold > 0 and episodes == 0:
            raise ValueError("a replay threshold needs replayed episodes: set replay_episodes > 0")
        self.episodes, self.threshold = episodes, threshold
        self.results: deque[list[tuple[bool, bool]]] = deque(maxlen=window)  # (match, paid)

    def measure(self, world: DreamWorld, real: Sequence[Episode]) -> dict[str, float]:
        """Replay up to `episodes` of these real episodes (spread evenly over them) and return
        `dream/wm/replay_*` metrics."""
        real = [e for e in real if not e.imagined]
        if self.episodes == 0 or not real:
            return {}
        stride = max(1, len(real) // self.episodes)
        chosen = real[::stride][: self.episodes]
        done = replay(world, chosen)
        self.results.append([(r.match, r.real_return > 0) for r in done])
        n = len(done)
        false = sum(r.dream_return > r.real_return + 0.5 for r in done)
        missed = sum(r.dream_return < r.real_return - 0.5 for r in done)
        rewarded = [r for r in done if r.real_return > 0]
        extra = ({"dream/wm/replay_rewarded_match": sum(r.match for r in rewarded)
                  / len(rewarded)} if rewarded else {})
        return extra | {
            "dream/wm/replay_match": sum(r.match for r in done) / n,
            "dream/wm/replay_match_pooled": self.pooled() or 0.0,
            "dream/wm/replay_rewarded_match_pooled": self.pooled(paid=True) or 0.0,
            "dream/wm/replay_false_reward": false / n,
            "dream/wm/replay_missed_reward": missed / n,
            "dream/wm/replay_return_error": sum(abs(r.dream_return - r.real_return)
                                                for r in done) / n}

    def pooled(self, paid: bool | None = None) -> float | None:
        """The share of matches over the window: of all replayed episodes (None), of the paid
        ones (True) or of the unpaid ones (False); None when there are none."""
        flat = [m for ms in self.results for m, p in ms if paid is None or p == paid]
        return sum(flat) / len(flat) if flat else None

    @property
    def open(self) -> bool:
        if self.threshold <= 0:
            return True
        shares = (self.pooled(paid=True), self.pooled(paid=False))
        return all(x is not None and x >= self.threshold for x in shares)

    def state_dict(self) -> dict:
        return {"results": [[list(r) for r in ms] for ms in self.results]}

    def load_state_dict(self, state: dict) -> None:
        self.results.clear()
        self.results.extend([(bool(m), bool(p)) for m, p in ms]
                            for ms in state.get("results", []))
