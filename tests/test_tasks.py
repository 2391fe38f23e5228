"""Tests for the built-in tasks (addition, letters, keydoor) and the `make_world` registry."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clicker.tasks import TASKS, Addition, KeyDoor, Letters, make_world
from clicker.tasks.addition import check_integer, wrong_number
from clicker.tasks.base import Env, SingleTurnWorld, Task, World
from clicker.tasks.keydoor import (
    ACTIONS,
    CUE,
    DIRS,
    GOAL_LINE,
    MAX_OBS_CHARS,
    OPPOSITE,
    KeyDoorEnv,
    parse_action,
)

N = 2000


# --- single-turn tasks -------------------------------------------------------------------------


@pytest.mark.parametrize("task", [Addition(), Addition(digits=1), Addition(digits=4), Letters()])
def test_train_test_disjoint(task: Task) -> None:
    train = {task.problem("train", i).prompt for i in range(N)}
    test = {task.problem("test", i).prompt for i in range(N)}
    assert train and test
    assert not train & test


@pytest.mark.parametrize("cls", [Addition, Letters])
def test_deterministic_by_seed(cls: type) -> None:
    a, b, c = cls(seed=1), cls(seed=1), cls(seed=2)
    pa = [a.problem("train", i) for i in range(50)]
    assert pa == [b.problem("train", i) for i in range(50)]
    assert [p.prompt for p in pa] != [c.problem("train", i).prompt for i in range(50)]
    assert [a.problem("train", i).prompt for i in range(50)] == [p.prompt for p in pa]


def test_deterministic_across_processes() -> None:
    code = (
        "from clicker.tasks import Addition, Letters, KeyDoor;"
        "print(repr((Addition(3, 5).problem('test', 7).prompt,"
        " Letters(4).problem('train', 9).prompt, KeyDoor(6, seed=3).layout('train', 11).canonical)))"
    )
    here = (
        Addition(3, 5).problem("test", 7).prompt,
        Letters(4).problem("train", 9).prompt,
        KeyDoor(6, seed=3).layout("train", 11).canonical,
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == repr(here)


def test_addition_format_and_operands() -> None:
    for digits in (1, 2, 3, 5):
        t = Addition(digits=digits)
        assert t.stop == ("\n",) and t.max_new_tokens == digits + 4
        for i in range(200):
            p = t.problem("train", i)
            m = re.fullmatch(r"(\d+)\+(\d+)=", p.prompt)
            assert m, p.prompt
            a, b = int(m.group(1)), int(m.group(2))
            assert p.reference == str(a + b)
            lo = 10 ** (digits - 1) if digits > 1 else 0
            assert lo <= a < 10**digits and lo <= b < 10**digits


def test_addition_verify() -> None:
    t = Addition()
    p = t.problem("train", 0)
    right = p.reference
    assert t.verify(p, right + "\n").reward == 1.0
    assert t.verify(p, "  " + right + " and more").feedback == "correct"
    v = t.verify(p, str(int(right) - 1) + "\n")
    assert v.reward == 0.0 and v.feedback == f"wrong: expected {right}, got {int(right) - 1}"
    g = t.verify(p, "banana\n")
    assert g.reward == 0.0 and g.feedback == "no number found"
    assert t.verify(p, "").reward == 0.0


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_check_integer_roundtrip(n: int) -> None:
    assert check_integer(str(n), f" {n}\n").reward == 1.0
    assert check_integer(str(n), f"{n + 1}\n").reward == 0.0


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=2**32))
def test_wrong_number_is_wrong(n: int, seed: int) -> None:
    w = wrong_number(n, random.Random(seed))
    assert w != n and w >= 0


@pytest.mark.parametrize("task", [Addition(), Letters()])
def test_warmup_has_right_and_wrong_answers(task: Task) -> None:
    rng = random.Random(0)
    right = 0
    for i in range(400):
        text = task.warmup_text(i, rng)
        p = task.problem("train", i)
        assert text.startswith(p.prompt) and text.endswith("\n")
        answer = text[len(p.prompt) : -1]
        assert re.fullmatch(r"\d+", answer), answer
        right += task.verify(p, answer + "\n").reward == 1.0
    assert 0.25 < right / 400 < 0.45


def test_letters_counts_and_format() -> None:
    t = Letters()
    counts = Counter()
    for i in range(N):
        p = t.problem("train", i)
        m = re.fullmatch(r"Q: How many ([a-z]) in ([a-z]+)\?\nA: ", p.prompt)
        assert m, p.prompt
        letter, word = m.groups()
        assert 4 <= len(word) <= 10
        assert p.reference == str(word.count(letter))
        counts[int(p.reference)] += 1
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > 0.08 * N  # a spread, not all zeros
    assert t.verify(t.problem("test", 0), t.problem("test", 0).reference + "\n").reward == 1.0
    assert t.verify(t.problem("test", 0), "many\n").feedback == "no number found"


def test_letters_length_bounds() -> None:
    t = Letters(min_len=8, max_len=9)
    assert all(8 <= len(t.problem("test", i).meta["word"]) <= 9 for i in range(300))
    with pytest.raises(ValueError, match="no words"):
        Letters(min_len=30, max_len=40)


# --- keydoor ------------------------------------------------------------------------------------


def run(env: KeyDoorEnv, actions: list[str]) -> tuple[float, int, bool]:
    env.reset()
    total, n, done = 0.0, 0, False
    for a in actions:
        s = env.step(a + "\n")
        total, n, done = total + s.reward, n + 1, s.done
        if done:
            break
    return total, n, done


@pytest.mark.parametrize("rooms", [2, 3, 5, 10, 27])
def test_keydoor_optimal_succeeds(rooms: int) -> None:
    w = KeyDoor(rooms=rooms)
    for split in ("train", "test"):
        for i in range(40):
            acts = w.optimal_actions(split, i)
            env = w.make(split, i)
            assert env.max_turns == 2 * len(acts) + 4 <= w.max_turns
            total, n, done = run(env, acts)
            assert (total, n, done) == (1.0, len(acts), True)
            assert w.reference(split, i) == " ".join(acts)
            assert set(acts) <= set(ACTIONS) and acts.count("take") == acts.count("open") == 1


def test_keydoor_small_horizons() -> None:
    assert all(len(KeyDoor(rooms=2).optimal_actions("train", i)) == 3 for i in range(50))
    assert all(len(KeyDoor(rooms=3).optimal_actions("train", i)) == 5 for i in range(50))


def test_keydoor_length_grows_with_rooms() -> None:
    means = []
    for rooms in (3, 6, 12, 27):
        w = KeyDoor(rooms=rooms)
        lengths = [len(w.optimal_actions("train", i)) for i in range(100)]
        means.append(sum(lengths) / len(lengths))
    assert means == sorted(means) and means[-1] >= 35
    assert max(len(KeyDoor(rooms=27).optimal_actions("test", i)) for i in range(100)) >= 40


def test_keydoor_three_rooms_are_one_shape_so_replies_follow_from_the_transcript() -> None:
    """keydoor_long (rooms=3) has one shape: the start room is the door room, with the key in
    a dead end on its other side and the goal behind the door. So every reply follows from the
    prompt and the actions except a new room's label (what a world model could learn exactly;
    issue 7, docs/dreaming_rounds.md, "after the fifteenth round"): layouts whose first
    observations are equal up to labels answer any actions alike up to labels."""
    w, rng = KeyDoor(rooms=3, max_turns=20), random.Random(0)
    blind = {}
    for split in ("train", "test"):
        for i in range(100):
            lay = w.layout(split, i)
            key_side = next(nb for d, nb in lay.exits[lay.start].items() if d != lay.door_dir)
            assert lay.start == lay.door_room and len(lay.exits[lay.start]) == 2
            assert lay.key == key_side and len(lay.exits[lay.key]) == 1
            assert lay.goal == lay.exits[lay.start][lay.door_dir] and len(lay.exits[lay.goal]) == 1
            blind.setdefault(re.sub(r"R\d+", "R#", w.make(split, i).reset()), []).append((split, i))
    pairs = [group[:2] for group in blind.values() if len(group) > 1]
    assert len(pairs) >= 10
    for a, b in pairs:
        for _ in range(20):
            acts = [rng.choice(ACTIONS) for _ in range(12)]
            replies = []
            for split, i in (a, b):
                env = w.make(split, i)
                env.reset()
                replies.append([re.sub(r"R\d+", "R#", repr(env.step(x + "\n")))
                                for x in acts if not env.done])
            assert replies[0] == replies[1]


def random_success_rate(rooms: int, n: int) -> float:
    w, rng, wins = KeyDoor(rooms=rooms), random.Random(0), 0.0
    for i in range(n):
        env = w.make("train", i)
        env.reset()
        done = False
        while not done:
            s = env.step(rng.choice(ACTIONS) + "\n")
            wins, done = wins + s.reward, s.done
    return wins / n


def test_keydoor_random_agent_rate() -> None:
    assert 0.03 <= random_success_rate(2, 2000) <= 0.4
    assert 0.01 <= random_success_rate(3, 2000) < random_success_rate(2, 2000)


def test_keydoor_train_test_disjoint_and_deterministic() -> None:
    for rooms in (2, 3, 8):
        w = KeyDoor(rooms=rooms)
        train = {w.layout("train", i).canonical for i in range(N)}
        test = {w.layout("test", i).canonical for i in range(N)}
        assert train and test and not train & test
    a, b = KeyDoor(rooms=6, seed=4), KeyDoor(rooms=6, seed=4)
    assert [a.reference("test", i) for i in range(30)] == [b.reference("test", i) for i in range(30)]
    c = KeyDoor(rooms=6, seed=5)
    assert [a.layout("test", i) for i in range(30)] != [c.layout("test", i) for i in range(30)]


def test_keydoor_text_is_short() -> None:
    rng = random.Random(1)
    for rooms in (2, 4, 12, 40):
        w = KeyDoor(rooms=rooms)
        for i in range(30):
            env = w.make("train", i)
            prompt = env.reset()
            assert prompt.startswith(GOAL_LINE) and prompt.endswith("\n> ")
            assert len(prompt) - len(GOAL_LINE) <= MAX_OBS_CHARS
            done = False
            while not done:
                a = rng.choice(ACTIONS) if rng.random() < 0.5 else env.expert_action()
                s = env.step(a + "\n")
                assert len(s.observation) <= MAX_OBS_CHARS and s.feedback
                assert s.observation.endswith("\n> ") or (s.done and s.observation == "")
                done = s.done


def test_keydoor_invalid_and_useless_actions() -> None:
    w = KeyDoor(rooms=2)
    env = w.make("train", 0)
    env.reset()
    d = w.layout("train", 0).door_dir
    s = env.step("dance\n")
    assert (s.observation, s.reward, s.done) == ("bad action.\n> ", 0.0, False)
    assert "bad action" in s.feedback
    assert env.step(d + "\n").observation == "door locked.\n> "
    assert env.step("open\n").observation == "need key.\n> "
    wall = next(x for x in "nsew" if x != d)
    assert env.step(wall + "\n").observation == f"no exit {wall}.\n> "
    assert env.step("take\n").observation.startswith("got key. ")
    assert env.step("take\n").observation == "no key here.\n> "
    assert env.step("open\n").observation.startswith("door opened. ")
    s = env.step("open\n")  # turn 8 of 10
    assert s.observation == "door already open.\n> " and env.turns == 8
    s = env.step(d + "\n")
    assert (s.reward, s.done, s.observation) == (1.0, True, "")
    with pytest.raises(RuntimeError):
        env.step("n\n")


def test_keydoor_turn_limit() -> None:
    env = KeyDoor(rooms=2).make("test", 3)
    env.reset()
    steps = [env.step("xyz\n") for _ in range(10)]
    assert [s.done for s in steps] == [False] * 9 + [True]
    assert steps[-1].observation == "" and "out of turns" in steps[-1].feedback
    assert sum(s.reward for s in steps) == 0.0
    fixed = KeyDoor(rooms=5, max_turns=7)
    assert fixed.max_turns == 7 and fixed.make("train", 0).max_turns == 7


def test_keydoor_warmup_transcripts() -> None:
    w, rng = KeyDoor(rooms=3), random.Random(0)
    outcomes = []
    for i in range(200):
        text = w.warmup_text(i, rng)
        prompt = w.make("train", i).reset()
        assert text.startswith(prompt)
        actions = re.findall(r"> (\S*)\n", text)
        assert actions and set(actions) <= set(ACTIONS)
        assert len(actions) <= 2 * len(w.optimal_actions("train", i)) + 4
        env = w.make("train", i)  # replaying the actions reproduces the transcript
        replay = env.reset()
        for a in actions:
            replay += a + "\n" + env.step(a + "\n").observation
        assert replay == text
        outcomes.append(run(w.make("train", i), actions)[0])
    assert 0.2 < sum(outcomes) / len(outcomes) < 1.0


@pytest.mark.parametrize("rooms", [2, 3, 12])
def test_keydoor_symmetry_renames_a_play_into_the_renamed_layouts_play(rooms: int) -> None:
    """A renaming is a symmetry: the renamed transcript of any play (moves, aliases, case,
    bad and useless actions) is, token for token, the transcript of the renamed actions in
    the renamed layout, with the same rewards and ends; a prefix at an action's end renames
    to a prefix. The 8 compass maps all occur and keep opposites opposite."""
    w = KeyDoor(rooms=rooms)
    acts = ["n", "s", "e", "w", "take", "open", "north", "East", " W", "N", "jump", "door e ",
            "exits n.", "R3", ""]
    maps = set()
    for i in range(30):
        rng = random.Random(i)
        lay = w.layout("train", i)
        sym = w.symmetry(rng)
        maps.add(tuple(sym.dirs.items()))
        assert all(sym.dirs[OPPOSITE[d]] == OPPOSITE[sym.dirs[d]] for d in "nsew")
        assert sorted(sym.labels.values()) == sorted(sym.labels) == list(range(len(sym.labels)))
        a, b = KeyDoorEnv(lay, 30), KeyDoorEnv(sym.layout(lay), 30)
        ta, tb = a.reset(), b.reset()
        cuts = []
        while not a.done:
            act = (rng.choice(acts) if rng.random() < 0.4 else a.expert_action()) + "\n"
            renamed = sym(CUE + act)[len(CUE):]
            move = parse_action(act)
            assert parse_action(renamed) == sym.dirs[move] if move in DIRS else renamed == act
            sa, sb = a.step(act), b.step(renamed)
            assert (sa.reward, sa.done) == (sb.reward, sb.done)
            ta, tb = ta + act + sa.observation, tb + renamed + sb.observation
            cuts.append(len(ta) - len(sa.observation))
        assert sym(ta) == tb
        assert all(tb.startswith(sym(ta[:c])) for c in cuts)
        assert sym(ta) != ta or sym.dirs == {d: d for d in "nsew"}
    assert len(maps) == 8


def test_keydoor_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        KeyDoor(rooms=1)
    with pytest.raises(ValueError):
        KeyDoor(rooms=3, max_turns=0)


# --- registry and protocols ---------------------------------------------------------------------


def test_protocols() -> None:
    assert isinstance(Addition(), Task) and isinstance(Letters(), Task)
    assert isinstance(KeyDoor(), World) and not isinstance(Addition(), World)
    assert isinstance(KeyDoor().make("train", 0), Env)


def test_make_world() -> None:
    assert set(TASKS) == {"addition", "letters", "keydoor", "reasoning_gym", "code"}
    w = make_world("addition", digits=3)
    assert isinstance(w, SingleTurnWorld) and w.max_turns == 1 and w.max_action_tokens == 7
    env = w.make("train", 0)
    prompt = env.reset()
    assert env.step(w.reference("train", 0) + "\n").reward == 1.0 and prompt.endswith("=")
    k = make_world("keydoor", rooms=4, seed=2)
    assert isinstance(k, KeyDoor) and k.rooms == 4
    with pytest.raises(ValueError, match=r"unknown task 'x'; choose one of: addition, letters"):
        make_world("x")
    with pytest.raises(ValueError, match=r"no argument 'room'; accepted: rooms, max_turns, seed"):
        make_world("keydoor", room=3)
