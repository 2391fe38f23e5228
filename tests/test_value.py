"""The clicker: value learning propagates reward back along a chain, goes extinct when the reward
stops, and feeds potential-shaped advantages to the update."""

from __future__ import annotations

import pytest
import torch

from clicker.core.config import ValueConfig
from clicker.core.types import Batch, Episode, Turn
from clicker.credit import CreditContext
from clicker.credit.value import ValueCredit, extinction_updates

PROMPT = [3, 4, 5]


def chain(actions: list[int], reward: float, group: int = 0) -> Episode:
    """A one-turn episode: a fixed prompt, then `actions`, reward on the last action token."""
    n = len(PROMPT) + len(actions)
    return Episode(tokens=PROMPT + actions, action_mask=[False] * len(PROMPT) + [True] * len(actions),
                   logprobs=[0.0] * n, prompt="p", group=group,
                   turns=(Turn("x", "", reward, action_span=(len(PROMPT), n)),))


def chains(reward_a: float) -> Batch:
    """Path A (tokens 10..15) earns reward_a, path B (20..25) earns 0; they differ from step 0."""
    a = chain(list(range(10, 16)), reward_a)
    b = chain(list(range(20, 26)), 0.0)
    return Batch.from_episodes([a, b, a, b], pad_id=0)


def make_credit(policy, **kw) -> ValueCredit:
    torch.manual_seed(0)
    cfg = ValueConfig(**({"lr": 3e-3, "epochs": 1, "whiten": False} | kw))
    return ValueCredit(cfg, CreditContext(policy))


def test_td0_propagates_value_back_to_the_first_state(random_policy):
    """Only the last step is rewarded; with lambda = 0 every earlier state learns its value from
    its successor's (bootstrapping), so value reaches the first state of the rewarded path."""
    credit = make_credit(random_policy, lam_critic=0.0)
    batch = chains(1.0)
    first = len(PROMPT)
    early = None
    for i in range(150):
        credit(batch)
        v = credit.values(batch)
        if early is None and v[0, -1] > 0.5:
            early = (float(v[0, first + 1]), float(v[0, -1]))
    v = credit.values(batch)
    assert early is not None and early[0] < early[1], "value should arrive at the end first"
    assert float(v[0, first + 1]) > 0.8, v[0]  # first state after the path's first token
    assert float(v[1, first + 1]) < 0.2, v[1]  # same depth on the unrewarded path
    assert float(v[0, first + 1:].min()) > 0.7


def test_extinction_value_falls_when_reward_is_removed(random_policy):
    credit = make_credit(random_policy, lam_critic=1.0)
    batch = Batch.from_episodes([chain(list(range(10, 16)), 1.0)] * 2, pad_id=0)
    for _ in range(60):
        credit(batch)
    before = float(credit.values(batch)[0, len(PROMPT)])
    assert before > 0.8
    n, trace = extinction_updates(credit, batch, max_updates=100)
    assert n is not None and 1 <= n <= 100, trace
    assert trace[n] <= trace[0] / 2 and trace[0] == pytest.approx(before, abs=1e-5)


def test_advantages_are_potential_shaped_and_masked(random_policy):
    credit = make_credit(random_policy, lam_critic=1.0, lam_actor=0.0)
    batch = chains(1.0)
    for _ in range(30):
        credit(batch)
    v = credit.values(batch)
    out = credit(batch)
    m = batch.action_mask
    assert (out.advantages[~m] == 0).all() and torch.isfinite(out.advantages).all()
    # lam_actor = 0, gamma = 1: each advantage is a click r + V(s') - V(s); they telescope
    first = len(PROMPT)
    total = out.advantages.sum(1)
    expect = batch.rewards - v[:, first]
    assert total.tolist() == pytest.approx(expect.tolist(), abs=1e-4)
    assert out.parts["value/click"].shape == batch.shape
    for k in ("credit/value/explained_variance", "credit/value/loss", "credit/value/v_s0"):
        assert k in out.metrics


def test_warmup_trains_value_but_gives_no_advantage(random_policy):
    credit = make_credit(random_policy, warmup_iterations=2)
    batch = chains(1.0)
    w0 = [p.detach().clone() for p in credit.model.parameters()]
    out = credit(batch)
    assert (out.advantages == 0).all() and out.metrics["credit/value/warmup"] == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(w0, credit.model.parameters()))
    credit.ctx.iteration = 2
    assert credit(batch).advantages.abs().sum() > 0


def test_head_variant_never_moves_the_policy_and_state_round_trips(random_policy):
    credit = make_credit(random_policy, model="head")
    before = {n: p.detach().clone() for n, p in random_policy.model.named_parameters()}
    credit(chains(1.0))
    for n, p in random_policy.model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert all(not k.startswith("_policy") for k in credit.model.state_dict())
    again = make_credit(random_policy, model="head")
    again.load_state_dict(credit.state_dict())
    assert torch.equal(again.values(chains(1.0)), credit.values(chains(1.0)))


def test_turn_steps_share_one_advantage_per_step_and_telescope(random_policy):
    """steps=turn: V lives at step starts (every 2 action tokens here, a single-turn world); all
    tokens of a step share its click, and the clicks of an episode sum to R - V(s_0)."""
    credit = make_credit(random_policy, lam_critic=1.0, lam_actor=0.0, steps="turn",
                         step_tokens=2)
    batch = chains(1.0)
    starts = credit.step_starts(batch)
    first = len(PROMPT)
    assert starts[0].nonzero().flatten().tolist() == [first, first + 2, first + 4]
    for _ in range(40):
        out = credit(batch)
    v = credit.values(batch)
    # s_0 is shared by both paths (V = 1/2); the paths differ from the second step on
    assert float(v[0, first]) == pytest.approx(0.5, abs=0.15)
    assert float(v[0, first + 2]) > 0.8 and float(v[1, first + 2]) < 0.2
    out = credit(batch)
    a = out.advantages[0, first:first + 6].view(3, 2)
    assert torch.allclose(a[:, 0], a[:, 1])  # one advantage per step
    expect = batch.rewards - v[:, first]
    assert (out.advantages.sum(1) / 2).tolist() == pytest.approx(expect.tolist(), abs=1e-4)
    assert (out.advantages[~batch.action_mask] == 0).all()


def test_replay_fits_older_batches_and_survives_a_checkpoint(random_policy):
    """replay=3: a batch of rewarded path A keeps being fit while batches of path B arrive, so V
    learns A's value faster than with replay=0 (one fit); after 3 more batches A leaves the
    buffer. The buffer round-trips through state_dict."""
    a = Batch.from_episodes([chain(list(range(10, 16)), 1.0)] * 2, pad_id=0)
    b = Batch.from_episodes([chain(list(range(20, 26)), 0.0)] * 2, pad_id=0)
    first = len(PROMPT)
    va = {}
    for replay in (0, 3):
        credit = make_credit(random_policy, replay=replay, epochs=1)
        credit(a)
        for _ in range(3):
            credit(b)
        va[replay] = float(credit.values(a)[0, first + 1])
    assert va[3] > va[0] + 0.2, va
    assert len(credit.replay) == 3 and all(torch.equal(x["input_ids"], b.input_ids)
                                           for x in credit.replay)
    other = make_credit(random_policy, replay=3)
    other.load_state_dict(credit.state_dict())
    assert [torch.equal(x["token_rewards"], y["token_rewards"])
            for x, y in zip(other.replay, credit.replay)] == [True] * 3


def test_learn_dreams_false_fits_v_on_real_episodes_only(random_policy):
    """With learn_dreams false, V's update on a batch mixing real and imagined episodes is its
    update on the real ones alone; a batch of dreams only leaves V and its replay untouched, and
    dreams still get advantages. By default (Dyna) the dreams train V too."""
    from dataclasses import replace

    real = chain(list(range(10, 16)), 1.0)
    dream = replace(chain(list(range(20, 26)), 1.0, group=1), imagined=True)
    mixed = Batch.from_episodes([real, dream, real, dream], pad_id=0)
    grounded = make_credit(random_policy, learn_dreams=False, replay=2)
    reference = make_credit(random_policy, replay=2)
    dyna = make_credit(random_policy, replay=2)
    out = grounded(mixed)
    reference(Batch.from_episodes([real, real], pad_id=0))
    dyna(mixed)
    params = lambda c: torch.cat([p.detach().flatten() for p in c.model.parameters()])
    assert torch.allclose(params(grounded), params(reference), atol=1e-6)
    assert not torch.allclose(params(dyna), params(reference), atol=1e-6)
    assert out.advantages[1].abs().sum() > 0  # the dream still gets credit

    before, replayed = params(grounded), len(grounded.replay)
    dreams_only = grounded(Batch.from_episodes([dream, dream], pad_id=0))
    assert torch.equal(params(grounded), before) and len(grounded.replay) == replayed
    assert "credit/value/loss" not in dreams_only.metrics
    assert dreams_only.advantages.abs().sum() > 0


def test_whiten_dreams_false_scales_a_dream_batch_by_the_last_real_one(random_policy):
    """A batch of dreams alone is whitened to unit std by default; with whiten_dreams false it
    is divided by the std of the last real batch's (raw) advantages instead, and that scale
    survives a checkpoint."""
    from dataclasses import replace

    real = Batch.from_episodes([chain(list(range(10, 16)), 1.0), chain(list(range(20, 26)), 0.0)],
                               pad_id=0)
    dream = replace(chain(list(range(20, 26)), 0.0, group=1), imagined=True)
    dreams = Batch.from_episodes([dream, replace(dream, group=2)], pad_id=0)
    mask = dreams.action_mask.bool()
    raw, scaled, default = (make_credit(random_policy, **kw) for kw in (
        {"whiten": False}, {"whiten": True, "whiten_dreams": False}, {"whiten": True}))
    raw_real = raw(real).advantages
    for c in (scaled, default):
        c(real)
    assert scaled.real_scale == pytest.approx(float(raw_real[real.action_mask.bool()].std()),
                                              rel=1e-4)
    raw_dream = raw(dreams).advantages
    ours, whitened = scaled(dreams).advantages, default(dreams).advantages
    assert torch.allclose(ours, raw_dream / scaled.real_scale, atol=1e-5)
    assert float(whitened[mask].std()) == pytest.approx(1.0, rel=1e-3)
    # failed dreams: V's noise, smaller than real credit, stays smaller
    assert 0 < float(ours[mask].abs().mean()) < float(whitened[mask].abs().mean())
    fresh = make_credit(random_policy, whiten_dreams=False)
    fresh.load_state_dict(scaled.state_dict())
    assert fresh.real_scale == scaled.real_scale
