"""VinePPO Monte-Carlo credit: the step-advantage math against hand numbers, replay of real
states from a cut, exact values in worlds whose outcome is fixed before the cut, and world-token
accounting of the continuations."""

from __future__ import annotations

import random

import pytest
import torch

from clicker.core.config import CreditConfig, MCConfig
from clicker.core.types import Batch
from clicker.credit import CreditContext, make_credit
from clicker.credit.mc import MCCredit, mc_advantages, step_advantages, step_rewards
from clicker.rollout.continuation import (
    continuation_episodes,
    continuation_values,
    future_reward,
)
from clicker.rollout.runner import RolloutSettings, _stop_end, run_episodes
from clicker.tasks.base import Step


def _first_char_even(action: str) -> float:
    return float(bool(action) and ord(action[0]) % 2 == 0)


class FirstTurnEnv:
    """Three turns; the first action decides the reward (1 iff its first character has an even
    code point), paid at the end; observations name the turn."""

    def __init__(self, index: int, turns: int):
        self.index, self.turns, self.t, self.hit = index, turns, 0, 0.0

    def reset(self) -> str:
        return f"go {self.index}\n> "

    def step(self, action: str) -> Step:
        self.t += 1
        if self.t == 1:
            self.hit = _first_char_even(action)
        done = self.t >= self.turns
        return Step("" if done else f"obs{self.t}\n> ", self.hit if done else 0.0, done)


class FirstTurnWorld:
    name, stop, max_action_tokens = "first", ("\n",), 6

    def __init__(self, turns: int = 3):
        self.max_turns = turns

    def make(self, split, index):
        return FirstTurnEnv(index, self.max_turns)

    def reference(self, split, index):
        return ""

    def warmup_text(self, index, rng: random.Random):
        return "go 0\n> b\n"


def _rollout(policy, world, seed=0, G=2, n=4, max_turns=None):
    gen = torch.Generator().manual_seed(seed)
    settings = RolloutSettings(group_size=G, max_turns=max_turns)
    return run_episodes(policy, world, "train", list(range(n)), settings, gen)


# --- pure math -----------------------------------------------------------------------------------


def test_step_advantages_by_hand():
    # row 0: single turn, action tokens 2..9, steps at 2, 5, 8, reward 1 on the last token
    # row 1: two turns (actions 2-3 and 6-7, observation 4-5), rewards 0.5 and 1.0, pad 8-9
    # row 2: no steps
    T = 10
    mask = torch.zeros(3, T, dtype=torch.bool)
    mask[0, 2:] = True
    mask[1, 2:4] = mask[1, 6:8] = True
    rewards = torch.zeros(3, T)
    rewards[0, 9] = 1.0
    rewards[1, 3], rewards[1, 7] = 0.5, 1.0
    starts = [[2, 5, 8], [2, 6], []]
    values = [[0.5, 0.8, 1.0], [0.25, 0.75], []]
    assert step_rewards(rewards[1], [2, 6]) == [0.5, 1.0]
    # A_j = r_j + V(s_{j+1}) - V(s_j): row 0 -> 0.3, 0.2, 0.0; row 1 -> 1.0, 0.25
    assert step_advantages([0.0, 0.0, 1.0], [0.5, 0.8, 1.0]) == pytest.approx([0.3, 0.2, 0.0])
    want = torch.tensor([
        [0, 0, 0.3, 0.3, 0.3, 0.2, 0.2, 0.2, 0.0, 0.0],
        [0, 0, 1.0, 1.0, 0.0, 0.0, 0.25, 0.25, 0.0, 0.0],
        [0] * T,
    ])
    adv = mc_advantages(rewards, mask, starts, values)
    assert torch.allclose(adv, want)
    # telescoping: an episode's step advantages sum to R - V(s_0)
    assert sum(step_advantages([0.5, 1.0], [0.25, 0.75])) == pytest.approx(1.5 - 0.25)
    with pytest.raises(ValueError):
        step_advantages([0.0], [0.1, 0.2])


def test_stop_string_straddling_the_cut_ends_the_action(random_policy):
    enc = random_policy.encode
    assert _stop_end(random_policy, enc("ab\n"), enc("\ncd"), ("\n\n",)) == 1
    assert _stop_end(random_policy, enc("ab"), enc("\ncd"), ("\n\n",)) == 3


# --- continuations -------------------------------------------------------------------------------


def test_replay_reproduces_the_state_and_counts_world_tokens(random_policy):
    world = FirstTurnWorld()
    eps = _rollout(random_policy, world)
    cuts = [[t.action_span[0] for t in e.turns[1:]] for e in eps]  # turns 2 and 3
    assert all(len(c) == 2 for c in cuts)
    k = 3
    conts = continuation_episodes(random_policy, world, eps, cuts, k, RolloutSettings(),
                                  torch.Generator().manual_seed(1))
    total = new = 0
    for e, cs, per_cut in zip(eps, cuts, conts):
        assert len(per_cut) == len(cs)
        for cut, group in zip(cs, per_cut):
            assert len(group) == k
            for c in group:
                assert c.tokens[:cut] == e.tokens[:cut]
                assert c.action_mask[:cut] == e.action_mask[:cut]
                assert c.logprobs[:cut] == e.logprobs[:cut]
                n = c.meta["replayed"]
                assert c.meta["cut"] == cut and c.meta["index"] == e.meta["index"]
                assert c.turns[:n] == e.turns[:n] and len(c.turns) == 3  # turn limit: whole episode
                a, b = c.turns[n].action_span
                assert a == cut and random_policy.decode(c.tokens[a:b]) == c.turns[n].action
                assert c.world_tokens == len(c.tokens) > cut
                total += c.world_tokens
                new += len(c.tokens) - cut
    values, tokens = continuation_values(random_policy, world, eps, cuts, k, RolloutSettings(),
                                         torch.Generator().manual_seed(1), count_replay=True)
    assert tokens == total > 0
    _, restored = continuation_values(random_policy, world, eps, cuts, k, RolloutSettings(),
                                      torch.Generator().manual_seed(1))
    assert restored == new < total  # by default only tokens after the cut are counted
    assert values == [[sum(future_reward(c) for c in g) / k for g in per] for per in conts]


def test_values_are_exact_once_the_outcome_is_decided(random_policy):
    world = FirstTurnWorld()
    eps = _rollout(random_policy, world, seed=2, G=2, n=6)
    rewards = [e.reward for e in eps]
    assert 0.0 < sum(rewards) < len(eps)  # both outcomes occur, so the check can fail
    cuts = [[t.action_span[0] for t in e.turns[1:]] for e in eps]
    values, _ = continuation_values(random_policy, world, eps, cuts, 2, RolloutSettings(),
                                    torch.Generator().manual_seed(0))
    assert values == [[r, r] for r in rewards]
    # from the prompt the outcome is still open: the k continuations disagree somewhere
    v0, _ = continuation_values(random_policy, world, eps, [[e.turns[0].action_span[0]]
                                                           for e in eps], 8, RolloutSettings(),
                                torch.Generator().manual_seed(0))
    assert any(0.0 < v[0] < 1.0 for v in v0)


def test_continuations_respect_the_episode_turn_limit(random_policy):
    world = FirstTurnWorld(turns=3)
    eps = _rollout(random_policy, world, max_turns=2, n=2)
    assert all(e.truncated and len(e.turns) == 2 for e in eps)
    cuts = [[e.turns[1].action_span[0]] for e in eps]
    conts = continuation_episodes(random_policy, world, eps, cuts, 2,
                                  RolloutSettings(max_turns=2), torch.Generator().manual_seed(0))
    for per in conts:
        for c in per[0]:
            assert len(c.turns) == 2 and c.truncated and future_reward(c) == 0.0


def test_single_turn_cut_inside_an_action_keeps_the_prefix(random_policy):
    world = FirstTurnWorld(turns=1)
    eps = _rollout(random_policy, world, seed=3, n=6)
    eps = [e for e in eps if e.num_action_tokens >= 3]
    assert eps and 0.0 < sum(e.reward for e in eps) < len(eps)
    cuts = [[e.turns[0].action_span[0] + 2] for e in eps]  # two action tokens already chosen
    conts = continuation_episodes(random_policy, world, eps, cuts, 3, RolloutSettings(),
                                  torch.Generator().manual_seed(0))
    for e, (cut,), (group,) in zip(eps, cuts, conts):
        s = e.turns[0].action_span[0]
        for c in group:
            assert c.meta["replayed"] == 0 and len(c.turns) == 1
            a, b = c.turns[0].action_span
            assert a == s and c.tokens[:cut] == e.tokens[:cut] and b > cut
            assert b - a <= world.max_action_tokens  # the prefix counts against the cap
            assert c.turns[0].action == random_policy.decode(c.tokens[a:b])
            assert c.turns[0].action.startswith(random_policy.decode(e.tokens[s:cut]))
            # the env judged the whole action, prefix included: the outcome is the original's
            assert future_reward(c) == e.reward


# --- the credit source ---------------------------------------------------------------------------


def test_mc_credit_multi_turn_uses_siblings_for_the_prompt_value(random_policy):
    world = FirstTurnWorld()
    eps = _rollout(random_policy, world, seed=2, G=2, n=6)
    batch = Batch.from_episodes(eps, random_policy.pad_id)
    ctx = CreditContext(random_policy, world, RolloutSettings(), torch.Generator().manual_seed(0))
    out = MCCredit(MCConfig(k=2), ctx)(batch)
    assert out.advantages.shape == batch.shape
    assert out.world_tokens > 0
    assert out.metrics["credit/mc/continuations"] == len(eps) * 2 * 2  # turns 2, 3; k = 2
    assert out.metrics["credit/mc/world_tokens"] == out.world_tokens
    for b, e in enumerate(eps):
        sibling = eps[b ^ 1]  # groups of two: 0-1, 2-3, ...
        s0, e0 = e.turns[0].action_span
        # turn 1 decides everything: A_0 = V(s_1) - V_loo(s_0), later steps carry no credit
        assert torch.allclose(out.advantages[b, s0:e0], torch.tensor(e.reward - sibling.reward))
        assert out.advantages[b, e0:].abs().sum() == 0
        assert not out.advantages[b, ~batch.action_mask[b]].any()
    # V(s_0) mean is the mean sibling reward = mean reward
    assert out.metrics["credit/mc/value_s0_mean"] == pytest.approx(float(batch.rewards.mean()))


def test_mc_credit_by_name_single_turn_group_of_one(random_policy):
    world = FirstTurnWorld(turns=1)
    eps = _rollout(random_policy, world, seed=3, G=1, n=6)
    batch = Batch.from_episodes(eps, random_policy.pad_id)
    ctx = CreditContext(random_policy, world, RolloutSettings(), torch.Generator().manual_seed(0))
    cfg = CreditConfig(sources={"mc": 1.0}, mc=MCConfig(k=2, step_tokens=2, max_steps=2))
    out = make_credit(cfg, ctx)(batch)
    starts = [MCCredit(cfg.mc, ctx).starts(e) for e in eps]
    assert all(len(s) <= 2 for s in starts) and sum(len(s) == 2 for s in starts) >= 3
    # a group of one: the prompt state gets continuations too
    assert out.metrics["credit/mc/continuations"] == sum(len(s) for s in starts) * 2
    assert out.world_tokens > 0 and out.metrics["credit/world_tokens"] == out.world_tokens
    for b, (e, st) in enumerate(zip(eps, starts)):
        if len(st) == 2:  # the tail (from token 2 of the action on) is one merged last step
            # V(s_1) is exact (first character chosen), so the last step gets r - V(s_1) = 0
            assert out.advantages[b, st[1]:].abs().sum() == 0
            a0 = out.advantages[b, st[0]]
            assert 0.0 <= e.reward - a0 <= 1.0  # A_0 = R - V_mc(s_0), V in [0, 1]
            assert torch.all(out.advantages[b, st[0]:st[1]] == a0)
