"""The multi-turn episode runner: token-in-token-out rollouts in a `World`.

Each turn, every unfinished episode's exact token context goes to the batched sampler; the
sampled tokens are appended as they are (never re-tokenized), the decoded action goes to the env,
and the env's observation is tokenized and appended with `action_mask` False, so observation
tokens are never trained on. The G episodes of a group start from one prompt, whose prefill the
sampler shares. Every token exchanged with the real env (prompt, actions, observations) is
counted as a world token.

Single-turn tasks are Worlds with max_turns=1 (`SingleTurnWorld`), so one runner serves both.
A world with `imagined = True` (`clicker.dream.DreamWorld`) gives imagined episodes: no world
tokens, `meta["imagined_tokens"]` instead; a world with `step_many(envs, actions)` is stepped once
per turn for the whole batch (one batched world-model call) instead of env by env.
The turn loop (`play`) works on any list of live states, so Monte-Carlo continuations
(`clicker.rollout.continuation`) reuse it from replayed mid-episode states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import torch

from clicker.core.types import Episode, Turn
from clicker.models.policy import Policy
from clicker.rollout.sampler import Sampler, Samples
from clicker.tasks.base import Env, Split, World
from clicker.tasks.guard import guarded

if TYPE_CHECKING:
    from clicker.dream.planner import Planner


@dataclass
class LiveEpisode:
    """An episode in progress. The last `prefix` tokens (if any) are a forced start of the next
    action (a state cut inside an action): the sampler continues them and the action is their
    decoded whole."""

    env: Env
    group: int
    index: int
    tokens: list[int]
    action_mask: list[bool]
    logprobs: list[float]
    prompt: str
    reference: str
    turns: list[Turn] = field(default_factory=list)
    done: bool = False
    truncated: bool = False
    prefix: int = 0
    meta: dict = field(default_factory=dict)
    context_tokens: int = 0  # leading tokens of our own context (lessons), not the env's
    imagined: bool = False  # stepped in a world model (a DreamWorld), not the real env

    def freeze(self, split: str) -> Episode:
        # every token here but our own leading context came from or went to the env
        exchanged = len(self.tokens) - self.context_tokens
        meta = {"index": self.index, "split": split, **self.meta}
        if self.imagined:  # the env was a world model: imagined tokens, not world tokens
            meta["imagined_tokens"] = exchanged
            meta["dream_confidence"] = self.env.min_confidence  # type: ignore[attr-defined]
            meta["dream_confidences"] = list(getattr(self.env, "confidences", ()))
            meta["dream_malformed"] = bool(getattr(self.env, "malformed", False))
        return Episode(
            tokens=self.tokens,
            action_mask=self.action_mask,
            logprobs=self.logprobs,
            turns=tuple(self.turns),
            prompt=self.prompt,
            reference=self.reference,
            group=self.group,
            world_tokens=0 if self.imagined else exchanged,
            imagined=self.imagined,
            truncated=self.truncated,
            meta=meta,
        )


@dataclass(frozen=True)
class RolloutSettings:
    group_size: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_action_tokens: int | None = None  # None: the world's own cap
    max_turns: int | None = None  # None: the world's own limit
    reuse_cache: bool = True  # multi-turn: keep KV caches between turns (a sampler Session)
    step_timeout_s: float | None = 30.0  # an env step (verifier) running longer fails (guard)


def run_episodes(
    policy: Policy,
    world: World,
    split: Split,
    indices: list[int],
    settings: RolloutSettings,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
    group_offset: int = 0,
    context: Callable[[Split, int], str] | None = None,
    planner: Planner | None = None,
) -> list[Episode]:
    """Roll out G episodes for each problem index; episodes of index k share group id k+offset.

    `context(split, index)`: text placed before that problem's prompt (the lessons book). Its
    tokens are the policy's input but not world tokens: the env never saw them. `planner`:
    dream-testing (`clicker.dream.planner.Planner`) picks each action among candidates tried in
    a dream.
    """
    G = settings.group_size
    live: list[LiveEpisode] = []
    encoded: dict[str, list[int]] = {}  # a group's G prompts are one text: tokenize it once
    for gi, idx in enumerate(indices):
        reference = world.reference(split, idx)
        block = context(split, idx) if context is not None else ""
        for _ in range(G):
            env = world.make(split, idx)
            prompt = env.reset()
            for text in (block, prompt):
                if text not in encoded:
                    encoded[text] = policy.encode(text) if text else []
            ids = encoded[block] + encoded[prompt]
            meta = {"context": block} if block else {}
            live.append(
                LiveEpisode(env, gi + group_offset, idx, ids, [False] * len(ids),
                            [0.0] * len(ids), prompt, reference, meta=meta,
                            context_tokens=len(encoded[block]))
            )
    play(policy, world, live, settings, generator, sampler, share=G,
         planner=partial(planner, split) if planner is not None else None)
    return [e.freeze(split) for e in live]


def play(
    policy: Policy,
    world: World,
    live: list[LiveEpisode],
    settings: RolloutSettings,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
    share: int = 1,
    planner: Callable[..., Samples] | None = None,
) -> None:
    """Advance every live state turn by turn, in place, until the env is done or the state has
    `settings.max_turns or world.max_turns` turns (counting turns it already had); a state still
    running then, or out of context room, is marked truncated. Context room is per state: one
    state near the model's max length ends alone instead of capping the others' actions.

    On the first round, consecutive runs of `share` states must hold identical tokens: each run's
    prompt is prefilled once and sampled `share` times (a group's G episodes, or the k
    continuations of one cut).

    `planner(states, samples, budgets, settings, generator)`, if given, may replace each state's
    sampled action by another candidate before it is sent (dream-testing).
    """
    sampler = sampler or Sampler(policy.model, policy.tokenizer)
    max_turns = settings.max_turns or world.max_turns
    # Turn after turn, a session keeps each state's KV cache and prefills only the new tokens
    # (the last action's tail and the observation) instead of the whole transcript.
    session = sampler.session() if max_turns > 1 and settings.reuse_cache else None
    row_of: dict[int, int] = {}  # id(state) -> its session row
    max_new = settings.max_action_tokens or world.max_action_tokens
    limit = policy.max_length
    long_stop = any(len(s) > 1 for s in world.stop)
    step_many = getattr(world, "step_many", None)  # a batch-stepped world (a world model)
    if getattr(world, "imagined", False):  # run_episodes' states and replayed ones alike
        for e in live:
            e.imagined = True
    first = True
    while True:
        active = []
        budgets = []  # new tokens each state may sample this turn
        for e in live:
            if e.done or len(e.turns) >= max_turns:
                continue
            budget = min(max_new - e.prefix, limit - len(e.tokens))
            if budget <= 0:  # out of context room (or a forced prefix already fills the cap)
                e.done = e.truncated = True
                continue
            active.append(e)
            budgets.append(budget)
        if not active:
            break
        n = share if first else 1
        if len(active) % n:
            raise ValueError(f"first-round states come in runs of {n} identical states")
        # One call for all states; a row is cut to its own budget afterwards, which samples the
        # same distribution as capping it there (its first m tokens do not depend on the cap).
        kw = {"max_new_tokens": max(budgets), "temperature": settings.temperature,
              "top_p": settings.top_p, "stop": world.stop, "generator": generator}
        if session is None:
            samples = sampler.sample(
                [active[k].tokens for k in range(0, len(active), n)], num_samples=n, **kw
            )
        elif first:
            samples = session.sample(
                [active[k].tokens for k in range(0, len(active), n)], num_samples=n, **kw
            )
            row_of = {id(e): r for r, e in enumerate(active)}
        else:
            samples = session.sample(
                [e.tokens for e in active], rows=[row_of[id(e)] for e in active], **kw
            )
        first = False
        if planner is not None:
            samples = planner(active, samples, budgets, settings, generator)
        spans, actions = [], []
        for e, budget, toks, lps in zip(active, budgets, samples.tokens, samples.logprobs):
            toks, lps = toks[:budget], lps[:budget]
            if e.prefix and long_stop:
                m = _stop_end(policy, e.tokens[len(e.tokens) - e.prefix:], toks, world.stop)
                toks, lps = toks[:m], lps[:m]
            start = len(e.tokens) - e.prefix
            e.tokens.extend(toks)
            e.action_mask.extend([True] * len(toks))
            e.logprobs.extend(lps)
            end, e.prefix = len(e.tokens), 0
            spans.append((start, end))
            actions.append(policy.decode(e.tokens[start:end]))
        if step_many is not None:
            steps = step_many([e.env for e in active], actions)
        else:  # the user's env or verifier: failures end the episode, not the run
            steps = [guarded(partial(e.env.step, a), settings.step_timeout_s)
                     for e, a in zip(active, actions)]
        for e, (start, end), action, step in zip(active, spans, actions, steps):
            if step.error is not None:
                e.meta["verifier_error"] = step.error
            obs_ids = policy.encode(step.observation) if not step.done else []
            e.tokens.extend(obs_ids)
            e.action_mask.extend([False] * len(obs_ids))
            e.logprobs.extend([0.0] * len(obs_ids))
            e.turns.append(
                Turn(action, step.observation, float(step.reward), step.feedback, (start, end))
            )
            if step.done:
                e.done = True
    for e in live:
        if not e.done:
            e.truncated = True


def _stop_end(policy: Policy, prefix: list[int], toks: list[int], stop: tuple[str, ...]) -> int:
    """How many of `toks` to keep after a forced `prefix`: up to the first token that completes a
    stop string begun inside the prefix (the sampler only sees the new tokens, so it misses a
    stop string that straddles the cut), else all of them."""
    window = max(len(s) for s in stop) + 4
    for m in range(1, len(toks) + 1):
        text = policy.decode((prefix + toks[:m])[-window:])
        if any(s in text for s in stop):
            return m
    return len(toks)
