"""Rollout/trainer mismatch correction (issue 8): truncated importance weights, worked by hand,
and the update that uses them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from clicker.core.mismatch import mismatch_weights


def test_token_weights_by_hand():
    train = torch.tensor([[-1.0, -2.0, -0.5, 0.0]])
    sample = torch.tensor([[-1.5, -1.0, -0.5, -9.0]])
    mask = torch.tensor([[True, True, True, False]])
    w, st = mismatch_weights(train, sample, mask, level="token", cap=1.5)
    # exp(0.5) = 1.6487 > 1.5 -> 1.5; exp(-1) = 0.3679; exp(0) = 1; masked -> 0
    assert w.tolist()[0] == pytest.approx([1.5, math.exp(-1.0), 1.0, 0.0])
    assert st["mismatch/kl"] == pytest.approx((-0.5 + 1.0 + 0.0) / 3)
    assert st["mismatch/abs_logp_diff"] == pytest.approx(1.5 / 3)
    assert st["mismatch/abs_logp_diff_max"] == pytest.approx(1.0)
    assert st["mismatch/truncated"] == pytest.approx(1 / 3)
    assert st["mismatch/weight_mean"] == pytest.approx((1.5 + math.exp(-1) + 1) / 3)


def test_sequence_weights_by_hand():
    train = torch.tensor([[-1.0, -2.0, 0.0], [-0.1, -0.1, -0.1]])
    sample = torch.tensor([[-1.5, -1.0, 0.0], [-1.0, -1.0, -5.0]])
    mask = torch.tensor([[True, True, False], [True, True, False]])
    w, st = mismatch_weights(train, sample, mask, level="sequence", cap=2.0)
    # row 0: 0.5 - 1.0 = -0.5 -> exp(-0.5); row 1: 0.9 + 0.9 = 1.8 -> exp(1.8) = 6.05 > 2 -> 2
    assert w[0].tolist() == pytest.approx([math.exp(-0.5)] * 2 + [0.0])
    assert w[1].tolist() == pytest.approx([2.0, 2.0, 0.0])
    assert st["mismatch/truncated"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="level"):
        mismatch_weights(train, sample, mask, level="tokens")


def test_no_mismatch_means_weight_one():
    lp = torch.randn(3, 5)
    mask = torch.rand(3, 5) > 0.3
    for level in ("token", "sequence"):
        w, st = mismatch_weights(lp, lp.clone(), mask, level=level)
        assert torch.equal(w, mask.float()) and st["mismatch/kl"] == 0.0


def _case(random_policy, noise: float):
    from clicker.core.config import UpdateConfig
    from clicker.core.types import Batch
    from clicker.rollout.runner import RolloutSettings, run_episodes
    from clicker.tasks import make_world

    episodes = run_episodes(random_policy, make_world("addition"), "train", [0, 1],
                            RolloutSettings(group_size=3), torch.Generator().manual_seed(1))
    batch = Batch.from_episodes(episodes, random_policy.pad_id)
    g = torch.Generator().manual_seed(2)
    old = batch.old_logprobs + noise * torch.randn(batch.old_logprobs.shape, generator=g) \
        * batch.action_mask
    batch = dataclasses.replace(batch, old_logprobs=old)
    adv = torch.tensor([1.0, -0.5, 0.3, -1.0, 0.8, -0.2])[:, None] * batch.action_mask
    return batch, adv, UpdateConfig


def test_update_recomputes_old_logprobs_and_weights_tokens(random_policy):
    """With a sampler whose log-probs are off by noise, the corrected update takes its PPO ratio
    against the trainer's own log-probs (1 on the first step: nothing clipped) and logs the
    mismatch; with no noise the weights are 1 and the step is the uncorrected one."""
    import copy

    from clicker.train.update import policy_update

    def step(policy, batch, adv, cfg):
        opt = torch.optim.SGD(policy.model.parameters(), lr=0.5)
        r = policy_update(policy, opt, batch, adv, cfg, generator=torch.Generator().manual_seed(0))
        return r.metrics, [p.detach().clone() for p in policy.model.parameters()]

    batch, adv, Cfg = _case(random_policy, noise=0.3)
    m_tis, _ = step(copy.deepcopy(random_policy), batch, adv, Cfg(mismatch="token"))
    m_raw, _ = step(copy.deepcopy(random_policy), batch, adv, Cfg())
    assert m_tis["policy/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert m_tis["policy/clip_frac"] == 0.0 < m_raw["policy/clip_frac"]
    assert m_tis["mismatch/abs_logp_diff"] == pytest.approx(0.3 * math.sqrt(2 / math.pi), rel=0.3)
    assert "mismatch/kl" not in m_raw
    exact, adv, _ = _case(random_policy, noise=0.0)
    for level in ("token", "sequence"):
        m, p_tis = step(copy.deepcopy(random_policy), exact, adv, Cfg(mismatch=level))
        _, p_raw = step(copy.deepcopy(random_policy), exact, adv, Cfg())
        assert m["mismatch/abs_logp_diff_max"] < 1e-4 and m["mismatch/truncated"] == 0.0
        for a, b in zip(p_tis, p_raw):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
