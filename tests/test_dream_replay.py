"""The replay check (`dream.replay_episodes`, `dream.min_replay_match`): real episodes' actions
replayed in the dream, their outcomes compared with the real ones, and dreams gated on the
share that match (issue 7)."""

from __future__ import annotations

import json

import pytest
import torch

from clicker.core.config import DreamConfig, build_config
from clicker.core.types import Episode, Turn
from clicker.dream.dreamer import Dreamer
from clicker.dream.replay import ReplayCheck, Replayed, replay
from clicker.dream.transcript import FAILED, Prediction
from clicker.dream.world import DreamWorld, OracleModel
from clicker.tasks.keydoor import KeyDoor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _play(world: KeyDoor, index: int, actions: list[str], policy) -> Episode:
    """A real episode of `actions` (until the env ends it) on train problem `index`, tokenized
    as the runner would (a world model trains on its tokens)."""
    env = world.make("train", index)
    prompt = env.reset()
    tokens = list(policy.encode(prompt))
    mask, turns = [False] * len(tokens), []
    for a in actions:
        s = env.step(a + "\n")
        act, obs = policy.encode(a + "\n"), policy.encode(s.observation) if s.observation else []
        turns.append(Turn(a + "\n", s.observation, s.reward,
                          action_span=(len(tokens), len(tokens) + len(act))))
        tokens += act + obs
        mask += [True] * len(act) + [False] * len(obs)
        if s.done:
            break
    return Episode(tokens, mask, [0.0] * len(tokens), tuple(turns), prompt,
                   world_tokens=len(tokens), meta={"index": index, "split": "train"})


def _episodes(world: KeyDoor, policy) -> list[Episode]:
    """Two that reach the goal (expert play), two that wander until the env's turn limit."""
    return [_play(world, i, world.optimal_actions("train", i), policy) for i in (0, 1)] + [
        _play(world, i, ["take"] * world.max_turns, policy) for i in (2, 3)]


class _Constant:
    def __init__(self, p: Prediction):
        self.p = p

    def predict(self, requests):
        return [self.p] * len(requests)


def test_an_exact_model_replays_every_real_outcome(random_policy):
    world = KeyDoor(rooms=3, max_turns=8)
    eps = _episodes(world, random_policy)
    assert [e.reward for e in eps] == [1.0, 1.0, 0.0, 0.0] and len(eps[2].turns) == 8
    seen = []
    done = replay(DreamWorld(world, OracleModel(world), random_policy), eps,
                  watch=lambda i, t, s, env: seen.append((i, t, s.observation)))
    assert all(r.match for r in done)
    # the watcher saw every dreamed step, each as the real env answered it
    assert sorted(seen) == sorted((i, t, turn.observation) for i, e in enumerate(eps)
                                  for t, turn in enumerate(e.turns))
    assert [r.dream_end for r in done] == [len(e.turns) for e in eps]
    assert [r.dream_return for r in done] == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="imagined"):
        replay(DreamWorld(world, OracleModel(world), random_policy),
               [Episode([], [], [], (), "p", imagined=True, meta={"index": 0})])


def test_a_model_that_misses_or_invents_the_goal_does_not_match(random_policy):
    world = KeyDoor(rooms=3, max_turns=8)
    eps = _episodes(world, random_policy)
    calm = replay(DreamWorld(world, _Constant(Prediction("R1: exits n.\n> ", 0.0, False, 1.0)),
                             random_policy), eps)
    # the goal is missed; the wanderers end at the turn limit in the dream too (the DreamEnv's)
    assert [r.match for r in calm] == [False, False, True, True]
    assert [r.dream_end for r in calm] == [None, None, 8, 8]
    eager = replay(DreamWorld(world, _Constant(Prediction("", 1.0, True, 1.0)), random_policy), eps)
    assert [r.dream_end for r in eager] == [1] * 4 and not any(r.match for r in eager)
    broken = replay(DreamWorld(world, _Constant(FAILED), random_policy), eps)
    assert [r.dream_return for r in broken] == [0.0] * 4 and not any(r.match for r in broken)
    # a real episode the runner cut short (truncated) only needs the dream not to end earlier
    assert Replayed(0.0, 0.0, 5, None, env_ended=False).match
    assert not Replayed(0.0, 0.0, 5, 3, env_ended=False).match


def test_the_check_pools_iterations_and_gates(random_policy):
    world = KeyDoor(rooms=3, max_turns=8)
    eps = _episodes(world, random_policy)
    exact = DreamWorld(world, OracleModel(world), random_policy)
    calm = DreamWorld(world, _Constant(Prediction("R1: exits n.\n> ", 0.0, False, 1.0)),
                      random_policy)
    check = ReplayCheck(episodes=4, threshold=0.75, window=2)
    assert not check.open  # nothing replayed yet
    m = check.measure(calm, eps)
    assert m["dream/wm/replay_match"] == 0.5 and m["dream/wm/replay_missed_reward"] == 0.5
    assert m["dream/wm/replay_false_reward"] == 0.0 and m["dream/wm/replay_return_error"] == 0.5
    assert m["dream/wm/replay_rewarded_match"] == 0.0  # neither goal episode replayed right
    assert not check.open
    m = check.measure(exact, eps)  # pooled: 6 of 8 in all, but only 2 of the 4 paid ones
    assert m["dream/wm/replay_match_pooled"] == 0.75 and not check.open
    assert m["dream/wm/replay_rewarded_match"] == 1.0
    assert m["dream/wm/replay_rewarded_match_pooled"] == 0.5
    check.measure(exact, eps)  # the calm model's iteration leaves the window
    assert check.pooled() == check.pooled(paid=True) == check.pooled(paid=False) == 1.0
    assert check.open
    again = ReplayCheck(episodes=4, threshold=0.75, window=2)
    again.load_state_dict(check.state_dict())
    assert again.pooled(paid=True) == 1.0 and again.open
    # a model that never dreams a reward matches every unpaid episode; with no paid episode in
    # the window its rewards are unchecked, and the gate stays shut
    unpaid = ReplayCheck(episodes=4, threshold=0.75)
    m = unpaid.measure(calm, eps[2:])
    assert m["dream/wm/replay_match"] == 1.0 and "dream/wm/replay_rewarded_match" not in m
    assert not unpaid.open
    few = ReplayCheck(episodes=2)
    assert few.open and len(replay(exact, eps[::2])) == 2
    few.measure(exact, eps)
    assert len(few.results[0]) == 2  # at most `episodes` replayed, spread over the batch
    assert ReplayCheck(episodes=0).measure(exact, eps) == {}
    with pytest.raises(ValueError, match="replay_episodes"):
        ReplayCheck(episodes=0, threshold=0.5)
    with pytest.raises(ValueError, match="replay_episodes"):
        DreamConfig(dyna=True, min_replay_match=0.5)


def test_an_untrained_world_model_is_gated_out_of_dyna(random_policy):
    """A learned world model that has not learned the reply format fails the replay (its
    replies are malformed), so Dyna dreams nothing; the exact model passes and dreams."""
    sets = ["dream.dyna=true", "dream.warmup_iterations=0", "dream.dyna_prompts=1",
            "rollout.prompts=1", "rollout.group_size=2", "dream.replay_episodes=4",
            "dream.min_replay_match=0.9", "dream.wm_steps=1", "dream.min_confidence=0"]
    world = KeyDoor(rooms=3, max_turns=8)
    gen = torch.Generator().manual_seed(0)
    learned = Dreamer(build_config({}, sets).dream, build_config({}, sets).rollout,
                      random_policy, world)
    m = learned.observe(_episodes(world, random_policy))
    assert m["dream/wm/replay_match"] < 0.9 and not learned.trusted()
    dreams, md = learned.imagine(0, 1, gen, seen=[0])
    assert dreams == [] and md == {"dream/dyna/gated": 1.0}
    cfg = build_config({}, [*sets, "dream.oracle=true"])
    exact = Dreamer(cfg.dream, cfg.rollout, random_policy, world)
    assert exact.observe(_episodes(world, random_policy))["dream/wm/replay_match"] == 1.0
    dreams, _ = exact.imagine(0, 1, gen, seen=[0])
    assert len(dreams) == 2 and all(e.imagined for e in dreams)
    assert exact.state_dict()["replay"] == {"results": [[[True, True]] * 2 + [[True, False]] * 2]}


def test_the_replay_check_in_the_loop(tmp_path, tiny_dir):
    """In training every iteration logs its replay match, measured on real episodes only; the
    exact model matches them all, so Dyna runs in every iteration with a paid episode."""
    from clicker.train.loop import train

    sets = ["task.name=keydoor", "task.args={rooms: 2}", "rollout.prompts=2",
            "rollout.group_size=4", "train.iterations=2", "train.eval_every=0",
            "train.progress=false", "train.checkpoint_every=0", "update.lr=1e-4",
            "dream.dyna=true", "dream.oracle=true", "dream.warmup_iterations=0",
            "dream.dyna_prompts=1", "dream.replay_episodes=8", "dream.min_replay_match=1.0"]
    train(build_config({}, sets), tmp_path / "replay")
    rows = [json.loads(line) for line in (tmp_path / "replay" / "metrics.jsonl").open()]
    assert len(rows) == 2
    for r in rows:
        assert r["dream/wm/replay_match"] == 1.0 and r["dream/wm/replay_return_error"] == 0.0
        paid = "dream/wm/replay_rewarded_match" in r  # the gate needs a paid episode to check
        assert r["dream/dyna/episodes"] == (4 if paid else 0) and r["world/tokens"] > 0
    assert any("dream/wm/replay_rewarded_match" in r for r in rows)
