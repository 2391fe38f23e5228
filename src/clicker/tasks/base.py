"""Task and Env protocols, and the `World` the runner sees.

A `Task` is a single-turn verifiable problem set: `problem(split, index)` gives a prompt and a
reference, `verify(problem, completion)` gives a `Verdict`. An `Env` is a multi-turn text
environment: `reset()` gives the first observation (the prompt), `step(action)` gives the next
observation, reward, done and feedback. The episode runner sees only `World`s: a factory of Envs
by split and index; `SingleTurnWorld` wraps a Task as a World whose envs end after one step.

Text is concatenated as it is exchanged: prompt, action, observation, action, ... Actions end at
one of the world's stop strings (kept in the action). Splits "train" and "test" are disjoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from clicker.core.types import Verdict

Split = Literal["train", "test"]
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class Problem:
    """One single-turn problem: what the policy sees and what the verifier knows."""

    prompt: str
    reference: str
    id: str
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """What an Env answers to one action."""

    observation: str
    reward: float
    done: bool
    feedback: str = ""
    error: str | None = None  # the step failed (raised, hung, bad reward): see tasks.guard


@runtime_checkable
class Task(Protocol):
    name: str
    stop: tuple[str, ...]  # stop strings that end a completion
    max_new_tokens: int  # generous cap on completion length

    def problem(self, split: Split, index: int) -> Problem:
        """The problem at `index` of `split`: the same Problem for the same arguments, every
        call (worlds cache them)."""
        ...

    def verify(self, problem: Problem, completion: str) -> Verdict: ...

    def warmup_text(self, index: int, rng: random.Random) -> str:
        """A training-split transcript in task format, sometimes with a wrong answer, for the
        tiny model's supervised warm start."""
        ...


@runtime_checkable
class Env(Protocol):
    def reset(self) -> str: ...

    def step(self, action: str) -> Step: ...


@runtime_checkable
class World(Protocol):
    """A family of Envs the episode runner can roll out in.

    Optional: `symmetry(rng)`, a random renaming of transcripts (a text map) under which no rule
    of the world changes; a world model trains on renamed copies (`dream.wm_augment`; keydoor's
    is `clicker.tasks.keydoor.KeyDoorSymmetry`)."""

    name: str
    stop: tuple[str, ...]  # stop strings that end one action
    max_turns: int
    max_action_tokens: int

    def make(self, split: Split, index: int) -> Env: ...

    def reference(self, split: Split, index: int) -> str: ...

    def warmup_text(self, index: int, rng: random.Random) -> str: ...


class SingleTurnEnv:
    """A Task problem as a one-step Env."""

    def __init__(self, task: Task, problem: Problem):
        self.task, self.problem = task, problem

    def reset(self) -> str:
        return self.problem.prompt

    def step(self, action: str) -> Step:
        v = self.task.verify(self.problem, action)
        return Step(observation="", reward=v.reward, done=True, feedback=v.feedback,
                    error=v.error)


class SingleTurnWorld:
    """Wraps a Task as a World with max_turns=1."""

    max_turns = 1
    RECENT = 1024  # problems remembered

    def __init__(self, task: Task):
        self.task = task
        self._recent: dict[tuple[str, int], Problem] = {}
        self.name = task.name
        self.stop = tuple(task.stop)
        self.max_action_tokens = task.max_new_tokens

    def make(self, split: Split, index: int) -> SingleTurnEnv:
        return SingleTurnEnv(self.task, self._problem(split, index))

    def reference(self, split: Split, index: int) -> str:
        return self._problem(split, index).reference

    def _problem(self, split: Split, index: int) -> Problem:
        """The task's problem, remembered for the last few indices: a group asks for the same
        problem G + 1 times, and a task may spend real work making one (seeded sampling,
        data-set reads). Problems are pure functions of (split, index)."""
        key = (split, index)
        p = self._recent.get(key)
        if p is None:
            p = self._recent[key] = self.task.problem(split, index)
            if len(self._recent) > self.RECENT:
                self._recent.pop(next(iter(self._recent)))  # the oldest
        return p

    def warmup_text(self, index: int, rng: random.Random) -> str:
        return self.task.warmup_text(index, rng)


def as_world(task_or_world: Task | World) -> World:
    """The runner's view of a Task or World."""
    if isinstance(task_or_world, World):
        return task_or_world
    return SingleTurnWorld(task_or_world)  # type: ignore[arg-type]


def split_of(key: str, test_fraction: float = 0.2) -> Split:
    """Deterministic, seed-free split assignment by content hash, so train and test never share a
    problem however many are drawn."""
    import hashlib

    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return "test" if (h % 10_000) < test_fraction * 10_000 else "train"
