"""The `judge` credit source: treat schedule, frozen judge, learning, retraining, KL to the
initial policy, report and checkpoint round-trip."""

from __future__ import annotations

import json
import random

import torch

from clicker.core.advantages import grpo_advantages
from clicker.core.config import CreditConfig, JudgeConfig
from clicker.core.types import Batch, Episode, Turn
from clicker.credit import CREDITS, CreditContext
from clicker.credit.judge import JudgeCredit, judge_phase
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.base import Step


def _episode(policy, completion: str, reward: float, group: int) -> Episode:
    prompt = f"q{group}:"
    p, c = policy.encode(prompt), policy.encode(completion)
    tokens = p + c
    turn = Turn(completion, "", reward, action_span=(len(p), len(tokens)))
    return Episode(tokens, [False] * len(p) + [True] * len(c), [0.0] * len(p) + [-1.0] * len(c),
                   (turn,), prompt, group=group)


def _marker_batch(policy, n_groups: int, seed: int, rewards=None) -> Batch:
    """Groups of 4: two completions with the marker 'Z' (reward 1), two without (reward 0)."""
    rng = random.Random(seed)
    eps = []
    for g in range(n_groups):
        for k in range(4):
            letters = [rng.choice("abcdefgh") for _ in range(rng.randint(3, 6))]
            if k % 2 == 0:
                letters.insert(rng.randrange(len(letters) + 1), "Z")
            r = float(k % 2 == 0) if rewards is None else rewards[4 * g + k]
            eps.append(_episode(policy, "".join(letters), r, g))
    return Batch.from_episodes(eps, policy.pad_id)


def _weights(src: JudgeCredit) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in src.judge.parameters()])


def test_treat_schedule_by_hand():
    got = [judge_phase(i, 2, 3) for i in range(9)]
    assert got == ["warmup", "warmup", "frozen", "frozen", "treat", "frozen", "frozen", "treat",
                   "frozen"]
    assert [judge_phase(i, 0, 1) for i in range(3)] == ["treat"] * 3
    assert [judge_phase(i, 0, 2) for i in range(4)] == ["frozen", "treat", "frozen", "treat"]


def test_registered_and_frozen_outside_warmup_and_treats(random_policy):
    ctx = CreditContext(random_policy)
    src = CREDITS["judge"](CreditConfig(judge=JudgeConfig(warmup_iterations=1, treat_every=3,
                                                           epochs=1, lr=1e-3)), ctx)
    assert isinstance(src, JudgeCredit) and src.name == "judge"
    batch = _marker_batch(random_policy, 2, seed=0)
    w0 = _weights(src)
    ctx.iteration = 0  # warm-up: trains, and the policy sees the real rewards
    out = src(batch)
    w1 = _weights(src)
    assert not torch.equal(w0, w1)
    real_adv = grpo_advantages(batch.rewards, batch.groups)
    assert torch.allclose(out.advantages, real_adv[:, None] * batch.action_mask)
    n_buffer = len(src.buffer)
    assert n_buffer == batch.shape[0]
    for it in (1, 2):  # frozen: no training, no labels, advantages from the judge's scores
        ctx.iteration = it
        out = src(_marker_batch(random_policy, 2, seed=it, rewards=[1.0] * 8))
        assert torch.equal(_weights(src), w1)
        assert len(src.buffer) == n_buffer
        assert out.metrics["credit/judge/treat"] == 0.0
        assert "credit/judge/accuracy" not in out.metrics


def test_advantages_are_grpo_on_scores_and_zero_off_the_action_mask(random_policy):
    ctx = CreditContext(random_policy)
    src = JudgeCredit(JudgeConfig(warmup_iterations=1, treat_every=100, epochs=2, lr=3e-3), ctx)
    batch = _marker_batch(random_policy, 3, seed=1)
    src(batch)
    ctx.iteration = 1
    out = src(batch)
    adv = out.advantages
    assert adv.shape == batch.shape and torch.isfinite(adv).all()
    assert (adv[~batch.action_mask] == 0).all() and adv.abs().sum() > 0
    s = src.scores(batch.input_ids, batch.attention_mask)
    want = grpo_advantages(s, batch.groups)[:, None] * batch.action_mask
    assert torch.allclose(adv, want, atol=1e-5)
    assert abs(out.metrics["credit/judge/proxy"] - float(s.mean())) < 1e-6
    # the score is read at each row's last real token: padding the batch does not change it
    alone = torch.cat([src.scores(batch.input_ids[i:i + 1, :n], batch.attention_mask[i:i + 1, :n])
                       for i, n in enumerate(batch.attention_mask.sum(1).tolist())])
    assert torch.allclose(s, alone, atol=1e-5) and s.std() > 1e-3
    assert out.metrics["credit/judge/real"] == 0.5


def test_judge_learns_a_marker(random_policy):
    ctx = CreditContext(random_policy)
    src = JudgeCredit(JudgeConfig(warmup_iterations=10, epochs=6, lr=3e-3, buffer=64), ctx)
    test = _marker_batch(random_policy, 6, seed=99)  # unseen completions, 'Z' anywhere
    before = src.scores(test.input_ids, test.attention_mask)
    assert torch.allclose(before, torch.full_like(before, 0.5))  # zero head: no opinion yet
    for it in range(4):
        ctx.iteration = it
        out = src(_marker_batch(random_policy, 4, seed=10 + it))
    assert out.metrics["credit/judge/train_loss"] < 0.5
    s = src.scores(test.input_ids, test.attention_mask)
    good, bad = s[test.rewards > 0.5], s[test.rewards < 0.5]
    assert float(good.mean() - bad.mean()) > 0.5, (good, bad)
    assert float(((s > 0.5) == (test.rewards > 0.5)).float().mean()) >= 0.85


def test_retrains_only_when_the_proxy_runs_ahead(random_policy):
    # an untrained judge (zero head) scores exactly 0.5; every batch is a treat
    ctx = CreditContext(random_policy)
    src = JudgeCredit(JudgeConfig(warmup_iterations=0, treat_every=1, retrain_gap=0.15,
                                  epochs=1, lr=1e-3), ctx)
    w0 = _weights(src)
    for it, real_mean in enumerate((1.0, 0.5, 0.375)):  # gaps -0.5, 0, 0.125: all within
        ctx.iteration = it
        rewards = [1.0] * round(8 * real_mean) + [0.0] * (8 - round(8 * real_mean))
        out = src(_marker_batch(random_policy, 2, seed=it, rewards=rewards))
        assert abs(out.metrics["credit/judge/gap"] - (0.5 - real_mean)) < 1e-6
        assert out.metrics["credit/judge/retrains"] == 0.0 and src.retrains == 0
        assert torch.equal(_weights(src), w0)
        assert out.metrics["credit/judge/treat"] == 1.0 and len(src.buffer) == 8 * (it + 1)
    ctx.iteration = 3  # gap 0.5 - 0.25 = 0.25 > 0.15: retrain on the buffer
    out = src(_marker_batch(random_policy, 2, seed=3, rewards=[1.0, 1.0] + [0.0] * 6))
    assert src.retrains == 1 and out.metrics["credit/judge/retrains"] == 1.0
    assert not torch.equal(_weights(src), w0)
    assert "credit/judge/train_loss" in out.metrics


class OneShotEnv:
    def reset(self) -> str:
        return "say Z: "

    def step(self, action: str) -> Step:
        return Step("", float("Z" in action), True)


class OneShotWorld:
    name, stop, max_turns, max_action_tokens = "oneshot", ("\n",), 1, 8

    def make(self, split, index):
        return OneShotEnv()

    def reference(self, split, index):
        return "Z"

    def warmup_text(self, index, rng):
        return "say Z: Z\n"


def test_kl_to_initial_policy(random_policy):
    ctx = CreditContext(random_policy, settings=RolloutSettings(group_size=4, temperature=0.7))
    src = JudgeCredit(JudgeConfig(warmup_iterations=0, treat_every=100), ctx)
    gen = torch.Generator().manual_seed(0)
    eps = run_episodes(random_policy, OneShotWorld(), "train", [0, 1], ctx.settings, gen)
    batch = Batch.from_episodes(eps, random_policy.pad_id)
    # sampled by the initial policy itself: the log-ratio is ~0 token by token
    assert abs(src(batch).metrics["credit/judge/kl_init"]) < 1e-3
    # move the policy away from the initial one: the sampled tokens' log-ratio sum grows
    with torch.no_grad():
        random_policy.model.lm_head.weight.mul_(3.0)
    eps = run_episodes(random_policy, OneShotWorld(), "train", [0, 1], ctx.settings, gen)
    out = src(Batch.from_episodes(eps, random_policy.pad_id))
    assert out.metrics["credit/judge/kl_init"] > 0.05
    assert src.history[-1]["sqrt_kl"] > 0.2


def test_report_and_state_dict_round_trip(random_policy):
    cfg = JudgeConfig(warmup_iterations=1, treat_every=2, retrain_gap=0.0, epochs=1, lr=1e-3)
    ctx = CreditContext(random_policy)
    src = JudgeCredit(cfg, ctx)
    for it in range(3):  # warm-up, frozen, treat
        ctx.iteration = it
        src(_marker_batch(random_policy, 2, seed=it, rewards=[0.0] * 8))
    files = src.report()
    assert files["judge_overoptimisation.png"].startswith(b"\x89PNG")
    hist = json.loads(files["judge_history.json"])
    assert [e["phase"] for e in hist["history"]] == ["warmup", "frozen", "treat"]
    assert {"iteration", "sqrt_kl", "proxy", "real"} <= set(hist["history"][0])

    state = src.state_dict()
    clone = JudgeCredit(cfg, CreditContext(random_policy))
    clone.load_state_dict(state)
    assert torch.equal(_weights(clone), _weights(src))
    assert list(clone.buffer) == list(src.buffer) and clone.history == src.history
    assert (clone.retrains, clone.trainings) == (src.retrains, src.trainings)
    # a resumed run continues identically: the next treat retrains both the same way
    batch = _marker_batch(random_policy, 2, seed=7, rewards=[0.0] * 8)
    outs = []
    for s in (src, clone):
        s.ctx.iteration = 4
        outs.append(s(batch))
    assert src.retrains == clone.retrains == 2
    assert torch.equal(_weights(clone), _weights(src))
    assert torch.equal(outs[0].advantages, outs[1].advantages)
