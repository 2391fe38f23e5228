"""`DreamWorld`: the real world's problems, answered by a world model instead of the env.

A DreamWorld has the real world's name, stop strings, limits and references, and its envs start
from the real prompt (the problem is data, not interaction); every later observation, reward and
done comes from a `Predictor` (a learned `WorldModel`, or `OracleModel`, which replays the
actions in a real env and so gives what a perfect model would). The episode runner rolls out in
it unchanged: it sees `imagined = True` and counts the episode's tokens as imagined, not world,
tokens, and it calls `step_many` once per turn so that the whole batch of dream steps is one
batched generation.

A DreamEnv ends an episode itself at the world's `max_turns` (the model is never taught to guess
the limit; see `world_model.transitions`), and where the predictor's reply is malformed (done,
reward 0). It tracks the lowest confidence of its predicted steps (`min_confidence`), which the
runner records as `meta["dream_confidence"]`: a dream is as trustworthy as its least certain
step. The runner also records each step's confidence (`meta["dream_confidences"]`, those of the
turns a resumed env played) and whether the dream ended on a malformed reply
(`meta["dream_malformed"]`), where `clicker.dream.cut` cuts a dream.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

from clicker.dream.transcript import FAILED, DreamRequest, Prediction, Predictor
from clicker.tasks.base import Split, Step, World


class DreamEnv:
    """One imagined episode of the problem at (split, index). Its history holds the token ids
    of the prompt, the actions and the predicted observations, each encoded on its own as the
    runner encodes prompt and observations. Actions are re-encoded from their text, which gives
    the runner's sampled tokens back wherever decode-then-encode round-trips (the tiny model's
    character tokenizer; a BPE tokenizer may split a sampled action differently)."""

    def __init__(self, world: DreamWorld, split: Split, index: int):
        self.world, self.split, self.index = world, split, index
        self.key = next(world.keys)  # a new one for each episode (see DreamRequest.key)
        self.history: list[int] = []
        self.actions: list[str] = []
        self.turns, self.done, self.min_confidence = 0, False, 1.0
        self.confidences: list[float] = []  # each predicted step's (clicker.dream.cut)
        self.malformed = False  # ended on a malformed reply
        # the real state a planner's dream branches from, and its turn count (resume)
        self.base: int | None = None
        self.base_turn = 0

    def reset(self) -> str:
        prompt = self.world.real.make(self.split, self.index).reset()
        self.key = next(self.world.keys)
        self.history = self.world.encode(prompt)
        self.actions, self.turns, self.done, self.min_confidence = [], 0, False, 1.0
        self.confidences, self.malformed = [], False
        return prompt

    def request(self, action: str) -> DreamRequest:
        """What the predictor gets for `action` (nothing changes until `advance`)."""
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        return DreamRequest(self.history + self.world.encode(action), self.split, self.index,
                            (*self.actions, action), key=self.key, shared=len(self.history),
                            base=self.base if self.turns == self.base_turn else None)

    def advance(self, action: str, p: Prediction) -> Step:
        """Take the predicted answer to `action`: extend the history, count the turn, end the
        episode on done, on a malformed reply or at the turn limit."""
        self.actions.append(action)
        self.turns += 1
        self.min_confidence = min(self.min_confidence, p.confidence)
        self.confidences.append(p.confidence)
        self.malformed = not p.ok
        done = p.done or not p.ok or self.turns >= self.world.max_turns
        obs = "" if done and not p.done else p.observation  # the limit ends it as a real env does
        self.history += self.world.encode(action)
        if not done:
            self.history += self.world.encode(obs)
        self.done = done
        return Step(obs, p.reward if p.ok else 0.0, done)

    def step(self, action: str) -> Step:
        return self.world.step_many([self], [action])[0]


class DreamWorld:
    """The real world's problems with a predictor for an env (see the module docstring).

    `policy` provides the tokenizer the histories are encoded with (the policy's, which the
    world model shares)."""

    imagined = True

    def __init__(self, real_world: World, predictor: Predictor, policy: Any):
        self.real, self.predictor, self.policy = real_world, predictor, policy
        self.name = real_world.name
        self.stop = tuple(real_world.stop)
        self.max_turns = real_world.max_turns
        self.max_action_tokens = real_world.max_action_tokens
        self.keys = itertools.count()

    def encode(self, text: str) -> list[int]:
        return self.policy.encode(text)

    def make(self, split: Split, index: int) -> DreamEnv:
        return DreamEnv(self, split, index)

    def resume(self, split: Split, index: int, history: Sequence[int],
               actions: Sequence[str], base: int | None = None) -> DreamEnv:
        """A DreamEnv at a mid-episode state of a real (or dreamed) episode: `history` is its
        token ids without our own leading context, `actions` the actions taken so far. The
        planner dreams from here; `base` names the state for a predictor that holds it
        (`WorldModel.track`)."""
        env = DreamEnv(self, split, index)
        env.history, env.actions, env.turns = list(history), list(actions), len(actions)
        env.base, env.base_turn = base, len(actions)
        return env

    def reference(self, split: Split, index: int) -> str:
        return self.real.reference(split, index)

    def warmup_text(self, index: int, rng: random.Random) -> str:
        return self.real.warmup_text(index, rng)

    def step_many(self, envs: Sequence[DreamEnv], actions: Sequence[str]) -> list[Step]:
        """Step every env with its action using one predictor call for the whole batch."""
        requests = [env.request(a) for env, a in zip(envs, actions)]
        preds = self.predictor.predict(requests) if requests else []
        if len(preds) != len(requests):
            raise ValueError(f"predictor answered {len(preds)} of {len(requests)} requests")
        return [env.advance(a, p) for env, a, p in zip(envs, actions, preds)]


class OracleModel:
    """An exact Predictor: replays the request's actions in a fresh real env (confidence 1).

    For tests and for measuring what a perfect world model would give. Each request replays its
    episode from the start (quadratic in the turns, which is cheap for text envs)."""

    def __init__(self, real_world: World):
        self.real = real_world

    def predict(self, requests: list[DreamRequest]) -> list[Prediction]:
        return [self._answer(r) for r in requests]

    def _answer(self, r: DreamRequest) -> Prediction:
        env = self.real.make(r.split, r.index)
        env.reset()
        for a in r.actions[:-1]:
            if env.step(a).done:
                return FAILED  # the real env ended before this action: no answer to give
        s = env.step(r.actions[-1])
        return Prediction(s.observation, float(s.reward), s.done, 1.0, True)
