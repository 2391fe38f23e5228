"""Tests for the adapters, against the real reasoning-gym, datasets and gymnasium packages
(all generate or build their data locally: nothing is downloaded)."""

from __future__ import annotations

import random
import re
import sys

import pytest
from datasets import Dataset

from clicker.tasks import DatasetTask, GymnasiumWorld, ReasoningGymTask, make_world
from clicker.tasks.adapters import env_seed
from clicker.tasks.base import SingleTurnWorld, Task, World, as_world

# --- reasoning-gym ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def arith() -> ReasoningGymTask:
    return ReasoningGymTask("basic_arithmetic", size=300, seed=0)


def test_rg_problems_and_verify(arith: ReasoningGymTask) -> None:
    assert isinstance(arith, Task) and arith.name == "rg-basic_arithmetic"
    p = arith.problem("train", 0)
    entry = arith.entries[p.meta["row"]]
    assert p.prompt == entry["question"].rstrip() + "\nA: " and p.reference == entry["answer"]
    assert arith.verify(p, p.reference + "\n").reward == 1.0
    assert arith.verify(p, str(int(p.reference) + 1) + "\n").reward == 0.0
    assert arith.verify(p, "no idea\n").reward == 0.0
    assert arith.stop == ("\n",) and arith.max_new_tokens >= len(p.reference)


def test_rg_split_and_determinism(arith: ReasoningGymTask) -> None:
    train = {arith.problem("train", i).prompt for i in range(2000)}
    test = {arith.problem("test", i).prompt for i in range(2000)}
    assert len(train) > 150 and len(test) > 20 and not train & test
    again = ReasoningGymTask("basic_arithmetic", size=300, seed=0)
    assert [again.problem("test", i) for i in range(20)] == [arith.problem("test", i) for i in range(20)]
    other = ReasoningGymTask("basic_arithmetic", size=300, seed=1)
    assert other.problem("train", 0).prompt != arith.problem("train", 0).prompt


def test_rg_warmup(arith: ReasoningGymTask) -> None:
    rng, right = random.Random(0), 0
    for i in range(300):
        p = arith.problem("train", i)
        text = arith.warmup_text(i, rng)
        assert text.startswith(p.prompt) and text.endswith("\n")
        right += arith.verify(p, text[len(p.prompt) :]).reward == 1.0
    assert 0.2 < right / 300 < 0.5


def test_rg_leg_counting_via_make_world() -> None:
    w = make_world("reasoning_gym", dataset="leg_counting", size=50, seed=3, max_animals=4)
    assert isinstance(w, SingleTurnWorld) and w.name == "rg-leg_counting"
    env = w.make("test", 0)
    assert "legs" in env.reset()
    assert env.step(w.reference("test", 0) + "\n").reward == 1.0
    with pytest.raises(ValueError, match="accepted: min_animals, max_animals"):
        make_world("reasoning_gym", dataset="leg_counting", legs=3)
    with pytest.raises(ValueError, match="missing a required argument: 'dataset'"):
        make_world("reasoning_gym")


# --- datasets + TRL-style reward functions ------------------------------------------------------


def correctness(completions: list[str], answer: list[str], **kwargs: object) -> list[float]:
    """A TRL-style reward function, as users write them."""
    return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer, strict=True)]


def short(completions: list[str], **kwargs: object) -> list[float]:
    return [1.0 if len(c) <= 3 else 0.0 for c in completions]


@pytest.fixture(scope="module")
def rows() -> dict[str, list]:
    n = 400
    return {
        "prompt": [f"Q: {i}*2=?\nA: " for i in range(n)],
        "answer": [str(2 * i) for i in range(n)],
        "level": [i % 3 for i in range(n)],
    }


def test_dataset_task_with_trl_reward_funcs(rows: dict[str, list]) -> None:
    seen: dict[str, object] = {}

    def spy(completions: list[str], prompts: list[str], level: list[int], **kw: object) -> list:
        seen.update(completions=completions, prompts=prompts, level=level, **kw)
        return [None]

    task = DatasetTask(
        Dataset.from_dict(rows), [correctness, short, spy], reference_column="answer",
        reward_weights=[1.0, 0.5, 3.0],
    )
    assert isinstance(task, Task)
    p = task.problem("train", 5)
    row = p.meta["row"]
    assert p.prompt == rows["prompt"][row] and p.reference == rows["answer"][row]
    v = task.verify(p, p.reference + "\n")
    assert v.reward == (1.5 if len(p.reference) <= 3 else 1.0) and v.error is None
    assert seen == {
        "completions": [p.reference], "prompts": [p.prompt], "level": [rows["level"][row]],
        "answer": [p.reference],
    }
    assert "correctness=1.0" in v.feedback and "spy=None" in v.feedback
    assert task.verify(p, "12345\n").reward == 0.0


def test_dataset_task_split_warmup_and_lists(rows: dict[str, list]) -> None:
    as_list = [dict(zip(rows, vals, strict=True)) for vals in zip(*rows.values(), strict=True)]
    a = DatasetTask(Dataset.from_dict(rows), correctness, reference_column="answer")
    b = DatasetTask(as_list, correctness, reference_column="answer")
    train = {a.problem("train", i).prompt for i in range(1000)}
    test = {a.problem("test", i).prompt for i in range(1000)}
    assert len(train) + len(test) == 400 and not train & test and len(test) > 40
    assert [a.problem("test", i) for i in range(50)] == [b.problem("test", i) for i in range(50)]
    rng, right = random.Random(0), 0
    for i in range(300):
        p, text = a.problem("train", i), a.warmup_text(i, rng)
        assert text.startswith(p.prompt) and text.endswith("\n")
        right += a.verify(p, text[len(p.prompt) :]).reward == 1.0
    assert 0.2 < right / 300 < 0.5
    with pytest.raises(ValueError, match="reference_column"):
        DatasetTask(as_list, correctness).warmup_text(0, rng)


def test_dataset_task_errors(rows: dict[str, list]) -> None:
    def broken(completions: list[str], **kw: object) -> list[float]:
        raise KeyError("oops")

    task = DatasetTask(Dataset.from_dict(rows), [correctness, broken])
    v = task.verify(task.problem("train", 0), "0\n")
    assert v.reward == 0.0 and v.error is not None and "broken raised" in v.error
    nan = DatasetTask(Dataset.from_dict(rows), lambda completions, **kw: [float("nan")])
    assert nan.verify(nan.problem("train", 0), "x\n").error is not None
    with pytest.raises(ValueError, match="no column 'question'"):
        DatasetTask(Dataset.from_dict(rows), correctness, prompt_column="question")
    chat = Dataset.from_dict({"prompt": [[{"role": "user", "content": "hi"}]]})
    with pytest.raises(TypeError, match="plain-text"):
        DatasetTask(chat, correctness)
    with pytest.raises(ValueError, match="reward_weights"):
        DatasetTask(Dataset.from_dict(rows), correctness, reward_weights=[1.0, 2.0])


# --- gymnasium ----------------------------------------------------------------------------------

MOVES = {"left": 0, "down": 1, "right": 2, "up": 3}
NAMES = {v: k for k, v in MOVES.items()}


def frozen_lake(max_turns: int = 12) -> GymnasiumWorld:
    return GymnasiumWorld(
        "FrozenLake-v1",
        render=lambda s: f"at {s // 4},{s % 4}\n> ",
        parse=MOVES.get,
        max_turns=max_turns,
        action_text=NAMES.__getitem__,
        intro="Reach 3,3 on the ice.\n",
        is_slippery=False,
    )


def play(world: GymnasiumWorld, actions: list[str]) -> list:
    env = world.make("train", 0)
    assert env.reset() == "Reach 3,3 on the ice.\nat 0,0\n> "
    return [env.step(a + "\n") for a in actions]


def test_gymnasium_solves_frozen_lake() -> None:
    w = frozen_lake()
    assert isinstance(w, World) and as_world(w) is w and w.name == "FrozenLake-v1"
    steps = play(w, ["down", "down", "right", "right", "down", "right"])
    assert [s.observation for s in steps[:2]] == ["at 1,0\n> ", "at 2,0\n> "]
    assert [s.reward for s in steps] == [0.0] * 5 + [1.0]
    assert [s.done for s in steps] == [False] * 5 + [True] and steps[-1].observation == ""


def test_gymnasium_hole_invalid_and_limit() -> None:
    fell = play(frozen_lake(), ["right", "down"])
    assert fell[-1].done and fell[-1].reward == 0.0 and "terminated" in fell[-1].feedback
    steps = play(frozen_lake(max_turns=3), ["jump", "left", "fly"])
    assert steps[0].observation == "invalid action.\nat 0,0\n> " and steps[0].reward == 0.0
    assert "invalid action" in steps[0].feedback and not steps[1].done
    assert steps[2].done and steps[2].observation == "" and "out of turns" in steps[2].feedback
    env = frozen_lake().make("test", 1)
    env.reset()
    assert env.step("5\n").observation.startswith("invalid action.")  # parse -> None
    w = GymnasiumWorld("FrozenLake-v1", str, lambda t: 7, max_turns=2)
    e = w.make("train", 0)
    e.reset()
    assert e.step("x\n").observation.startswith("invalid action.")  # outside the action space


def test_gymnasium_seeds_and_warmup() -> None:
    train = {env_seed(0, "train", i) for i in range(2000)}
    test = {env_seed(0, "test", i) for i in range(2000)}
    assert len(train) == len(test) == 2000 and not train & test
    assert all(0 <= s < 2**32 for s in train | test)
    assert frozen_lake().make("test", 3).reset_seed == env_seed(0, "test", 3)
    rng = random.Random(0)
    texts = [frozen_lake().warmup_text(i, rng) for i in range(20)]
    for t in texts:
        assert t.startswith("Reach 3,3 on the ice.\nat 0,0\n> ")
        actions = re.findall(r"> (\S*)\n", t)
        assert actions and set(actions) <= set(MOVES) and len(actions) <= 12
    assert len(set(texts)) > 1
    with pytest.raises(ValueError, match="action_text"):
        GymnasiumWorld("FrozenLake-v1", str, MOVES.get, max_turns=3).warmup_text(0, rng)


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gymnasium", None)
    with pytest.raises(ImportError, match=r"clicker-rl\[adapters\]"):
        GymnasiumWorld("CartPole-v1", str, int, max_turns=5)
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)
    with pytest.raises(ImportError, match=r"pip install 'clicker-rl\[adapters\]'"):
        ReasoningGymTask("basic_arithmetic")
