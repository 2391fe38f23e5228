"""Returns, GAE, TD(lambda) and potential-based shaping against numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from clicker.core.returns import (
    calibration_error,
    explained_variance,
    gae,
    returns_to_go,
    shaped_rewards,
    state_values,
    step_starts,
    td_lambda_targets,
    vapo_lambda,
    whiten,
)
from clicker.core.types import Batch, Episode, Turn

# one row: prompt at 0, actions at 1, 2, observation at 3, action at 4, pad at 5
MASK = torch.tensor([[False, True, True, False, True, False]])
R = torch.tensor([[0.0, 0.0, 0.5, 0.0, 1.0, 0.0]])
V = torch.tensor([[0.0, 0.2, 0.4, 9.9, 0.8, 9.9]])  # 9.9 off the mask must be ignored


def test_gae_skips_observations_by_hand():
    g, lam = 0.9, 0.5
    # time axis = action tokens 1, 2, 4 ; V = .2, .4, .8 ; r = 0, .5, 1 ; terminal after 4
    d4 = 1.0 + g * 0 - 0.8
    d2 = 0.5 + g * 0.8 - 0.4
    d1 = 0.0 + g * 0.4 - 0.2
    a4 = d4
    a2 = d2 + g * lam * a4
    a1 = d1 + g * lam * a2
    out = gae(R, V, MASK, g, lam)
    assert out[0].tolist() == pytest.approx([0, a1, a2, 0, a4, 0])
    assert td_lambda_targets(R, V, MASK, g, lam)[0].tolist() == pytest.approx(
        [0, a1 + 0.2, a2 + 0.4, 0, a4 + 0.8, 0])


def test_lambda_one_gives_monte_carlo_returns_and_zero_gives_td_errors():
    g = 0.9
    mc = [0, 0.5 * g + g * g * 1.0, 0.5 + g * 1.0, 0, 1.0, 0]  # discounted return-to-go
    assert returns_to_go(R, MASK, g)[0].tolist() == pytest.approx(mc)
    assert td_lambda_targets(R, V, MASK, g, 1.0)[0].tolist() == pytest.approx(mc)
    assert gae(R, V, MASK, g, 0.0)[0].tolist() == pytest.approx(
        [0, g * 0.4 - 0.2, 0.5 + g * 0.8 - 0.4, 0, 1.0 - 0.8, 0])


def test_potential_shaping_telescopes_to_outcome_minus_phi_s0():
    torch.manual_seed(0)
    mask = torch.rand(4, 12) > 0.3
    rewards = torch.zeros(4, 12)
    last = torch.tensor([max(i for i in range(12) if mask[b, i]) for b in range(4)])
    rewards[torch.arange(4), last] = torch.tensor([1.0, 0.0, 1.0, 0.3])
    phi = torch.randn(4, 12) * mask
    shaped = shaped_rewards(rewards, phi, mask, gamma=1.0)
    first = mask.float().argmax(1)
    expect = rewards.sum(1) - phi[torch.arange(4), first]
    assert (shaped * mask).sum(1).tolist() == pytest.approx(expect.tolist(), abs=1e-5)
    assert (shaped[~mask] == 0).all()


def test_per_row_lambda_and_vapo():
    lam = vapo_lambda(torch.tensor([10, 100, 1]), alpha=0.05)
    assert lam.tolist() == pytest.approx([0.0, 0.8, 0.0])  # 1 - 1/(0.05*len), clamped at 0
    r = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    m = torch.ones(2, 2, dtype=torch.bool)
    v = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    out = gae(r, v, m, 1.0, torch.tensor([0.0, 1.0]))
    assert out[0].tolist() == pytest.approx([0.0, 0.5])  # lam 0: delta_0 = 0 + .5 - .5
    assert out[1].tolist() == pytest.approx([0.5, 0.5])  # lam 1: return - V


def test_state_values_shift_and_whiten():
    out = torch.tensor([[1.0, 2.0, 3.0]])
    assert state_values(out).tolist() == [[0.0, 1.0, 2.0]]
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[True, True, True, False]])
    w = whiten(x, m)
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0]) and w[0, 3] == 0


def test_step_starts():
    mask = [False, False, True, True, True, True, True, False, True]
    # action tokens 2,3,4,5,6,8 -> a step every 2 of them starts at 2, 4, 6
    assert step_starts(mask, [(2, 7)], 2, multi_turn=False) == [2, 4, 6]
    assert step_starts(mask, [(2, 7), (8, 9), (9, 9)], 2, multi_turn=True) == [2, 8]


def test_explained_variance_and_calibration():
    t = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert explained_variance(t, t) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(4), t) == pytest.approx(0.0)
    p = torch.tensor([0.1, 0.1, 0.9, 0.9])
    o = torch.tensor([0.0, 1.0, 1.0, 1.0])
    # bin 1: mean p .1 vs outcome .5 -> .4 ; bin 9: .9 vs 1 -> .1 ; weights .5 each
    assert calibration_error(p, o) == pytest.approx(0.25)


def test_batch_token_rewards_land_on_each_turns_last_action_token():
    e = Episode(tokens=[5, 6, 7, 8, 9, 10], action_mask=[False, True, True, False, True, False],
                logprobs=[0.0] * 6, prompt="p",
                turns=(Turn("ab", "o", 0.25, action_span=(1, 3)),
                       Turn("c", "", 1.0, action_span=(4, 5))))
    b = Batch.from_episodes([e], pad_id=0)
    assert b.token_rewards[0].tolist() == [0, 0, 0.25, 0, 1.0, 0]
    assert float(b.token_rewards.sum()) == pytest.approx(e.reward)


def test_steps_sum_rewards_and_broadcast_back():
    from clicker.core.returns import from_steps, step_index, to_steps

    # row 0: steps start at 1 and 4; row 1: one step at 2; row 2: no step at all
    starts = torch.tensor([[False, True, False, False, True, False],
                           [False, False, True, False, False, False],
                           [False] * 6])
    sid, pos, valid = step_index(starts)
    assert sid[0].tolist() == [0, 0, 0, 0, 1, 1] and sid[1].tolist() == [0] * 6
    assert pos[0].tolist() == [1, 4] and pos[1, 0] == 2
    assert valid.tolist() == [[True, True], [True, False], [False, False]]
    r = torch.tensor([[0.0, 0.0, 0.5, 0.0, 0.0, 1.0], [0, 0, 0, 2.0, 0, 0], [0, 0, 0, 0, 0, 3.0]])
    assert to_steps(r, sid, valid).tolist() == [[0.5, 1.0], [2.0, 0.0], [0.0, 0.0]]
    # GAE on the step axis: V(s_0) = .2, V(s_1) = .6, gamma = 1, lam = 0 -> .5+.6-.2, 1-.6
    adv = gae(to_steps(r, sid, valid), torch.tensor([[0.2, 0.6], [0, 0], [0, 0]]), valid, 1.0, 0.0)
    assert adv[0].tolist() == pytest.approx([0.9, 0.4])
    mask = torch.tensor([[False, True, True, False, True, True]] * 3)
    tok = from_steps(adv, sid, mask)
    assert tok[0].tolist() == pytest.approx([0, 0.9, 0.9, 0, 0.4, 0.4])
