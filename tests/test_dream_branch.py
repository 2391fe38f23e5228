"""Branched dreams (`dream.branch`): K candidate actions dreamed one decision deep from real
states, scored by reward + V, and one more policy update on them (issue 7)."""

from __future__ import annotations

import copy
import dataclasses
import json
import random

import pytest
import torch

from clicker.core.config import build_config
from clicker.core.types import Batch
from clicker.dream.branch import (
    branch_advantages,
    branch_state,
    branched_update,
    decision_points,
    dream_branches,
    sample_candidates,
)
from clicker.dream.dreamer import Dreamer
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.keydoor import KeyDoor
from clicker.train.loop import train
from clicker.train.update import trainer_logprobs
from tests.test_dream_planner import oracle_value


@pytest.fixture(scope="module")
def real(policy):
    world = KeyDoor(rooms=2)
    eps = run_episodes(policy, world, "train", [0, 1, 2], RolloutSettings(group_size=2),
                       generator=torch.Generator().manual_seed(0))
    return world, eps


def test_branch_advantages_are_score_minus_the_states_mean():
    assert branch_advantages([1.0, 0.0, 0.5, 0.2, 0.2], [0, 0, 0, 1, 1]) == pytest.approx(
        [0.5, -0.5, 0.0, 0.0, 0.0])


def test_decision_points_are_real_states_before_an_action(real):
    _, eps = real
    turns = sum(len(e.turns) for e in eps)
    points = decision_points(eps, 5, random.Random(0))
    assert len(points) == len(set(points)) == min(5, turns)
    assert len(decision_points(eps, 10_000, random.Random(0))) == turns
    i, t = points[0]
    s = branch_state(eps[i], t, group=7)
    start = eps[i].turns[t].action_span[0]
    assert s.tokens == eps[i].tokens[:start] and len(s.turns) == t and s.group == 7
    assert s.index == eps[i].meta["index"] and s.context_tokens == 0
    imagined = [dataclasses.replace(e, imagined=True) for e in eps]  # dreams are never branched from
    assert decision_points(imagined, 5, random.Random(0)) == []


def _dreamer(policy, world, **dream):
    sets = ["dream.oracle=true", "dream.warmup_iterations=0", "dream.candidates=6",
            "dream.horizon=1", "rollout.group_size=2"]
    cfg = build_config({}, sets + [f"dream.{k}={v}" for k, v in dream.items()])
    return cfg, Dreamer(cfg.dream, cfg.rollout, policy, world,
                        value=oracle_value(policy, world, "train", list(range(3))))


def test_with_an_exact_model_branches_rank_the_candidates_like_the_true_values(policy, real):
    """With the exact world model and V*, a branch's advantage is Q*(s, a) - mean: at every
    informative state the expert's action (when sampled) gets the highest advantage, and every
    branch is flagged imagined, trains only its candidate action and costs no world tokens."""
    world, eps = real
    _, d = _dreamer(policy, world, branch=8)
    branches, adv, m = dream_branches(d, eps, torch.Generator().manual_seed(1), random.Random(0))
    assert branches and len(branches) == len(adv)
    std = m["dream/branch/adv_std"]
    assert std > 0.02  # V* separates the candidates: normalised to unit std, as credit's
    assert sum(a * a for a in adv) / len(adv) == pytest.approx(1.0)
    # a flat scorer (scores all within noise) is not blown up to unit scale: below the floor the
    # advantages are divided by branch_min_std, not by their own tiny spread
    _, flat = _dreamer(policy, world, branch=8)
    score = flat.brancher.score  # every score (reward and V alike) shrunk into noise: with a
    # scaled V alone, a candidate that reaches the goal within the horizon still scores 1
    flat.brancher.score = lambda *a, **k: [1e-4 * x for x in score(*a, **k)]
    _, small, m2 = dream_branches(flat, eps, torch.Generator().manual_seed(1), random.Random(0))
    assert m2["dream/branch/adv_std"] < 1e-3
    assert max(abs(a) for a in small) <= 2e-3 / 0.02
    assert m["dream/branch/informative"] >= 1 and m["dream/branch/imagined_tokens"] > 0
    for e in branches:
        assert e.imagined and e.world_tokens == 0
        span = e.turns[-1].action_span
        assert e.action_mask == [False] * span[0] + [True] * (span[1] - span[0])
    points = decision_points(eps, 8, random.Random(0))  # the states dream_branches drew
    checked = 0
    for g in {e.group for e in branches}:
        rows = [(a, e) for a, e in zip(adv, branches) if e.group == g]
        assert abs(sum(a for a, _ in rows)) < 1e-6  # advantages centre on the state's mean
        i, t = points[g]
        env = world.make("train", eps[i].meta["index"])
        env.reset()
        for turn in eps[i].turns[:t]:
            env.step(turn.action)
        expert = env.expert_action()
        hits = [a for a, e in rows if e.turns[-1].action.strip() == expert]
        if hits:
            checked += 1
            assert hits[0] == pytest.approx(max(a for a, _ in rows))
    assert checked >= 1


def test_the_branch_update_moves_the_policy_toward_the_better_candidates(policy, real):
    world, eps = real
    live = copy.deepcopy(policy)
    cfg, d = _dreamer(live, world, branch=8)
    gen = torch.Generator().manual_seed(1)
    branches, adv, _ = dream_branches(d, eps, gen, random.Random(0))
    batch = Batch.from_episodes(branches, live.pad_id)
    before = trainer_logprobs(live, batch, cfg.update, 1.0).sum(-1)
    opt = torch.optim.AdamW(live.model.parameters(), lr=1e-4)
    m = branched_update(d, eps, live, opt, cfg, 0, torch.Generator().manual_seed(1))
    assert m["dream/branch/updated"] == 1.0 and m["dream/branch/gated"] == 0.0
    # branched_update drew the same states and candidates (same rng and generator seeds)
    after = trainer_logprobs(live, batch, cfg.update, 1.0).sum(-1)
    a = torch.tensor(adv)
    assert float((a * (after - before)).sum()) > 0
    assert d.imagined_tokens == m["dream/branch/imagined_tokens"] > 0


def test_branch_scores_discount_v_by_the_value_sources_gamma(policy, real):
    """score = r + gamma * V(s'): with V = 1 everywhere and gamma 0.5, a candidate whose dream
    goes on scores 0.5, one that reaches the goal 1 and one that runs out of turns 0."""
    world, eps = real
    cfg = build_config({}, ["dream.oracle=true", "dream.warmup_iterations=0", "dream.branch=8",
                            "dream.candidates=4", "rollout.group_size=2"])
    d = Dreamer(cfg.dream, cfg.rollout, policy, world, value=lambda seqs: [1.0] * len(seqs),
                gamma=0.5)
    states = [branch_state(eps[i], t, g)
              for g, (i, t) in enumerate(decision_points(eps, 8, random.Random(0)))]
    cands = sample_candidates(d, states, torch.Generator().manual_seed(1))
    settings = RolloutSettings(1, 1.0, 1.0, None, cfg.rollout.max_turns, reuse_cache=False)
    scores = d.brancher.score("train", states, cands, settings, torch.Generator().manual_seed(1))
    assert len(scores) == len(cands) and set(scores) <= {0.0, 0.5, 1.0}
    assert 0.5 in scores


def test_branches_in_the_loop_count_no_world_tokens(tmp_path, tiny_dir, monkeypatch):
    sets = ["task.name=keydoor", "task.args={rooms: 2}", "rollout.prompts=2",
            "rollout.group_size=4", "train.iterations=2", "train.eval_every=0",
            "train.progress=false", "train.checkpoint_every=0", "update.lr=1e-4",
            "credit.sources={value: 1.0}", "credit.value.steps=turn", "credit.value.gamma=0.9"]
    gammas = []
    init = Dreamer.__init__

    def spy(self, *args, **kwargs):
        gammas.append(kwargs.get("gamma"))
        init(self, *args, **kwargs)

    monkeypatch.setattr(Dreamer, "__init__", spy)
    runs = {}
    for name, extra in (("plain", []), ("branch", ["dream.branch=6", "dream.oracle=true",
                                                    "dream.warmup_iterations=0"])):
        summary = train(build_config({}, sets + extra), tmp_path / name)
        rows = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").open()]
        runs[name] = summary, rows
    summary, rows = runs["branch"]
    assert gammas == [0.9]  # the branches score with the value source's discount
    assert rows[0]["world/tokens"] == runs["plain"][1][0]["world/tokens"]
    assert all(r["dream/branch/gated"] == 0.0 and r["dream/branch/states"] == 6 for r in rows)
    assert summary["imagined_tokens"] == rows[-1]["dream/imagined_tokens"] == sum(
        r["dream/branch/imagined_tokens"] for r in rows) > 0
    assert summary["world_tokens"] == rows[-1]["world/tokens"]
