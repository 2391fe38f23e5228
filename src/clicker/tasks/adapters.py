"""Adapters: other libraries' problems and environments as clicker Tasks and Worlds.

Why: so users bring what they already have. `ReasoningGymTask` wraps any procedural
`reasoning_gym` dataset (its `score_answer` is the verifier); `DatasetTask` wraps a Hugging Face
`datasets.Dataset` (or a list of dicts) plus TRL-style reward functions, which work unchanged;
`GymnasiumWorld` wraps any `gymnasium` environment given a text renderer and an action parser.

Optional dependencies are imported lazily, inside the adapter that needs them, and a missing one
raises an ImportError naming the `clicker-rl[adapters]` extra.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from clicker.core.types import Verdict
from clicker.tasks.base import Problem, Split, Step, split_of

P_CORRECT_WARMUP = 0.35


def _require(module: str, package: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(
            f"this adapter needs the '{package}' package: pip install 'clicker-rl[adapters]'"
        ) from e


def _strip_stop(completion: str, stop: Sequence[str]) -> str:
    for s in stop:
        if s and completion.endswith(s):
            return completion[: -len(s)]
    return completion


def _checked(reward: float, feedback: str) -> Verdict:
    if not math.isfinite(reward):
        return Verdict(0.0, feedback, error=f"non-finite reward {reward}")
    return Verdict(reward, feedback)


class ReasoningGymTask:
    """A `reasoning_gym` dataset as a Task. Prompt: the question then "\\nA: "; reward:
    `score_answer`. Entries are split into train and test by `split_of` on the question, and
    `problem(split, i)` cycles through that split's entries."""

    def __init__(self, dataset: str, size: int = 1000, seed: int = 0, **dataset_kwargs: Any):
        rg = _require("reasoning_gym", "reasoning-gym")
        try:
            self.data = rg.create_dataset(dataset, size=size, seed=seed, **dataset_kwargs)
        except TypeError as e:
            config_cls = importlib.import_module("reasoning_gym.factory").DATASETS[dataset][1]
            fields = ", ".join(f for f in config_cls.__dataclass_fields__ if f not in ("size", "seed"))
            raise ValueError(
                f"bad arguments for reasoning_gym '{dataset}' ({e}); accepted: {fields}"
            ) from e
        self.name = f"rg-{dataset}"
        self.entries = [self.data[i] for i in range(len(self.data))]
        self._split_rows: dict[str, list[int]] = {"train": [], "test": []}
        for i, e in enumerate(self.entries):
            self._split_rows[split_of(f"rg:{dataset}:{e['question']}")].append(i)
        answers = [str(e["answer"]) for e in self.entries]
        self.stop: tuple[str, ...] = ("\n\n",) if any("\n" in a for a in answers) else ("\n",)
        self.max_new_tokens = max(len(a) for a in answers) + 16

    def _row(self, split: Split, index: int) -> int:
        rows = self._split_rows[split]
        if not rows:
            raise ValueError(f"{self.name}: no {split} entries; use a larger size")
        return rows[index % len(rows)]

    def problem(self, split: Split, index: int) -> Problem:
        row = self._row(split, index)
        e = self.entries[row]
        return Problem(
            prompt=e["question"].rstrip() + "\nA: ",
            reference=str(e["answer"]),
            id=f"{self.name}/{row}",
            meta={"row": row},
        )

    def verify(self, problem: Problem, completion: str) -> Verdict:
        entry = self.entries[problem.meta["row"]]
        answer = _strip_stop(completion, self.stop).strip()
        try:
            score = float(self.data.score_answer(answer, entry))
        except Exception as e:  # noqa: BLE001 - a verifier failure is data, not a crash
            return Verdict(0.0, "", error=f"score_answer raised {e!r}")
        return _checked(score, f"score {score:.2f}; expected {problem.reference[:40]}")

    def warmup_text(self, index: int, rng: random.Random) -> str:
        p = self.problem("train", index)
        answer = p.reference
        if rng.random() >= P_CORRECT_WARMUP:
            for _ in range(20):
                other = str(rng.choice(self.entries)["answer"])
                if other != p.reference:
                    answer = other
                    break
        return p.prompt + answer + self.stop[0]


RewardFunc = Callable[..., list]


class DatasetTask:
    """Rows of a `datasets.Dataset` (or a list of dicts) plus TRL-style reward functions.

    Each reward function is called as TRL calls it, with single-element lists:
    `f(prompts=[prompt], completions=[completion], **{column: [value]})` for every column but
    the prompt column, and must return a list with one float (None counts as 0, as TRL's
    nansum does). The reward is the weighted sum. Plain-text prompts only: TRL's conversational
    format (lists of messages) is not supported, nor are `completion_ids` / `trainer_state`
    arguments or reward models given by name. The completion is passed without its stop string.
    Rows are split into train and test by `split_of` on the prompt text.
    """

    def __init__(
        self,
        dataset: Iterable[dict],
        reward_funcs: RewardFunc | Sequence[RewardFunc],
        prompt_column: str = "prompt",
        reference_column: str | None = None,
        test_fraction: float = 0.2,
        name: str = "dataset",
        reward_weights: Sequence[float] | None = None,
        stop: tuple[str, ...] = ("\n",),
        max_new_tokens: int = 64,
    ):
        to_list = getattr(dataset, "to_list", None)
        self.rows: list[dict] = list(to_list()) if callable(to_list) else [dict(r) for r in dataset]
        if not self.rows:
            raise ValueError("DatasetTask needs at least one row")
        for col in (prompt_column, reference_column):
            if col is not None and col not in self.rows[0]:
                raise ValueError(f"no column '{col}'; columns: {', '.join(self.rows[0])}")
        if not isinstance(self.rows[0][prompt_column], str):
            raise TypeError("DatasetTask supports plain-text prompts only (not conversations)")
        funcs = [reward_funcs] if callable(reward_funcs) else list(reward_funcs)
        if not funcs or not all(callable(f) for f in funcs):
            raise TypeError("reward_funcs must be one or more callables")
        weights = [1.0] * len(funcs)
        if reward_weights is not None:
            weights = [float(w) for w in reward_weights]
        if len(weights) != len(funcs):
            raise ValueError(f"{len(weights)} reward_weights for {len(funcs)} reward_funcs")
        self.reward_funcs, self.reward_weights = funcs, weights
        self.prompt_column, self.reference_column = prompt_column, reference_column
        self.name, self.stop, self.max_new_tokens = name, tuple(stop), max_new_tokens
        self._split_rows: dict[str, list[int]] = {"train": [], "test": []}
        for i, r in enumerate(self.rows):
            self._split_rows[split_of(r[prompt_column], test_fraction)].append(i)

    def problem(self, split: Split, index: int) -> Problem:
        rows = self._split_rows[split]
        if not rows:
            raise ValueError(f"{self.name}: no {split} rows")
        row = rows[index % len(rows)]
        r = self.rows[row]
        ref = "" if self.reference_column is None else str(r[self.reference_column])
        return Problem(r[self.prompt_column], ref, id=f"{self.name}/{row}", meta={"row": row})

    def verify(self, problem: Problem, completion: str) -> Verdict:
        r = self.rows[problem.meta["row"]]
        columns = {k: [v] for k, v in r.items() if k != self.prompt_column}
        text = _strip_stop(completion, self.stop)
        total, parts = 0.0, []
        for f, w in zip(self.reward_funcs, self.reward_weights, strict=True):
            fname = getattr(f, "__name__", type(f).__name__)
            try:
                out = f(prompts=[problem.prompt], completions=[text], **columns)
                value = out[0]
            except Exception as e:  # noqa: BLE001 - a verifier failure is data, not a crash
                return Verdict(0.0, "; ".join(parts), error=f"{fname} raised {e!r}")
            if value is not None:
                total += w * float(value)
            parts.append(f"{fname}={value if value is None else round(float(value), 4)}")
        return _checked(total, "; ".join(parts))

    def warmup_text(self, index: int, rng: random.Random) -> str:
        if self.reference_column is None:
            raise ValueError(f"{self.name}: warmup_text needs a reference_column")
        p = self.problem("train", index)
        answer = p.reference
        if rng.random() >= P_CORRECT_WARMUP:
            for _ in range(20):
                other = str(rng.choice(self.rows)[self.reference_column])
                if other != p.reference:
                    answer = other
                    break
        return p.prompt + answer + self.stop[0]


def env_seed(seed: int, split: Split, index: int) -> int:
    """A per-(split, index) reset seed below 2**32; even for train, odd for test."""
    h = int.from_bytes(hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=4).digest(), "big")
    return (h >> 1) * 2 + (1 if split == "test" else 0)


class GymnasiumEnv:
    """One gymnasium episode behind clicker's Env interface."""

    def __init__(self, world: GymnasiumWorld, reset_seed: int):
        self.world, self.reset_seed = world, reset_seed
        self.env = world.factory()
        self.obs: Any = None
        self.turns, self.done = 0, True

    def reset(self) -> str:
        self.obs, _ = self.env.reset(seed=self.reset_seed)
        self.turns, self.done = 0, False
        return self.world.intro + self.world.render(self.obs)

    def step(self, action: str) -> Step:
        if self.done:
            raise RuntimeError("step() after the episode ended; call reset()")
        self.turns += 1
        text = _strip_stop(action, self.world.stop).strip()
        parsed = self.world.parse(text)
        if parsed is None or not self.env.action_space.contains(parsed):
            reward, ended, feedback = 0.0, False, f"invalid action {text[:20]!r}"
            observation = self.world.invalid_text + self.world.render(self.obs)
        else:
            self.obs, r, terminated, truncated, _ = self.env.step(parsed)
            reward, ended = float(r), bool(terminated or truncated)
            feedback = f"action {parsed!r}, reward {reward:g}"
            if terminated:
                feedback += ", terminated"
            elif truncated:
                feedback += ", truncated"
            observation = self.world.render(self.obs)
        if not ended and self.turns >= self.world.max_turns:
            ended, feedback = True, feedback + "; out of turns"
        if ended:
            self.done, observation = True, ""
            self.env.close()
        return Step(observation, reward, ended, feedback)


class GymnasiumWorld:
    """A gymnasium environment as a World.

    `env_id_or_factory` is a registered id (made with `gymnasium.make(id, **env_kwargs)`) or a
    no-argument callable returning an env. `render(obs)` turns an observation into text (ending
    with the action cue); `parse(text)` turns action text into an action or None. Each (split,
    index) resets with its own seed, disjoint between train and test. An unparseable action
    gets reward 0, the observation `invalid_text` + the current state, and costs a turn.
    `action_text(action)` (the inverse of `parse`) enables `warmup_text`: random-action
    transcripts. There is no reference solution (`reference` returns "").
    """

    def __init__(
        self,
        env_id_or_factory: str | Callable[[], Any],
        render: Callable[[Any], str],
        parse: Callable[[str], Any | None],
        max_turns: int,
        name: str | None = None,
        action_text: Callable[[Any], str] | None = None,
        intro: str = "",
        invalid_text: str = "invalid action.\n",
        stop: tuple[str, ...] = ("\n",),
        max_action_tokens: int = 16,
        seed: int = 0,
        **env_kwargs: Any,
    ):
        if isinstance(env_id_or_factory, str):
            gym = _require("gymnasium", "gymnasium")
            env_id = env_id_or_factory
            self.factory: Callable[[], Any] = lambda: gym.make(env_id, **env_kwargs)
            self.name = name or env_id
        else:
            if env_kwargs:
                raise ValueError(f"env kwargs {sorted(env_kwargs)} need an env id, not a factory")
            self.factory = env_id_or_factory
            self.name = name or getattr(env_id_or_factory, "__name__", "gymnasium")
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        self.render, self.parse, self.action_text = render, parse, action_text
        self.max_turns, self.intro, self.invalid_text = max_turns, intro, invalid_text
        self.stop, self.max_action_tokens, self.seed = tuple(stop), max_action_tokens, seed

    def make(self, split: Split, index: int) -> GymnasiumEnv:
        return GymnasiumEnv(self, env_seed(self.seed, split, index))

    def reference(self, split: Split, index: int) -> str:
        return ""

    def warmup_text(self, index: int, rng: random.Random) -> str:
        if self.action_text is None:
            raise ValueError(f"{self.name}: warmup_text needs action_text (action -> text)")
        env = self.make("train", index)
        text = env.reset()
        space = env.env.action_space
        space.seed(rng.randrange(2**31))
        while not env.done:
            a = self.action_text(space.sample()) + self.stop[0]
            text += a + env.step(a).observation
        return text
