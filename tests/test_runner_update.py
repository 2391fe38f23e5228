"""Runner properties (token-in-token-out, observation masking, world tokens) and one update."""

from __future__ import annotations

import random

import pytest
import torch

from clicker.core.config import CreditConfig, UpdateConfig
from clicker.core.types import Batch
from clicker.credit import CreditContext, make_credit
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.base import Step
from clicker.train.update import policy_update


class EchoEnv:
    """Three turns; the observation names the turn; reward 1 if the first action has a 'z'."""

    def __init__(self, index: int):
        self.index, self.t, self.hit = index, 0, 0.0

    def reset(self) -> str:
        return f"start {self.index}\n> "

    def step(self, action: str) -> Step:
        self.t += 1
        if self.t == 1:
            self.hit = float("z" in action)
        done = self.t >= 3
        return Step(f"obs{self.t}\n> ", self.hit if done else 0.0, done, f"turn {self.t}")


class EchoWorld:
    name, stop, max_turns, max_action_tokens = "echo", ("\n",), 5, 6

    def make(self, split, index):
        return EchoEnv(index)

    def reference(self, split, index):
        return "z"

    def warmup_text(self, index, rng: random.Random):
        return "start 0\n> z\n"


def _episodes(policy, seed=0, G=4):
    gen = torch.Generator().manual_seed(seed)
    return run_episodes(policy, EchoWorld(), "train", [0, 1, 2], RolloutSettings(group_size=G),
                        gen)


def test_observation_tokens_are_never_actions(random_policy):
    eps = _episodes(random_policy)
    assert len(eps) == 12 and [e.group for e in eps] == [0] * 4 + [1] * 4 + [2] * 4
    for e in eps:
        assert len(e.turns) == 3
        prompt_len = len(random_policy.encode(e.prompt))
        assert not any(e.action_mask[:prompt_len])
        spans = [t.action_span for t in e.turns]
        acted = {i for a, b in spans for i in range(a, b)}
        assert acted == {i for i, m in enumerate(e.action_mask) if m}
        for t in e.turns:  # token in, token out: the action text is the sampled tokens decoded
            a, b = t.action_span
            assert random_policy.decode(e.tokens[a:b]) == t.action
            assert 1 <= b - a <= EchoWorld.max_action_tokens
        # observations sit between actions, unmasked, exactly as the env said them
        for t, nxt in zip(e.turns, e.turns[1:]):
            between = e.tokens[t.action_span[1]: nxt.action_span[0]]
            assert random_policy.decode(between) == t.observation
        assert e.world_tokens == len(e.tokens)
        assert all(lp == 0.0 for lp, m in zip(e.logprobs, e.action_mask) if not m)
        assert all(lp < 0.0 for lp, m in zip(e.logprobs, e.action_mask) if m)


def test_same_seed_same_episodes(random_policy):
    a, b = _episodes(random_policy, 3), _episodes(random_policy, 3)
    assert [e.tokens for e in a] == [e.tokens for e in b]
    assert [e.tokens for e in a] != [e.tokens for e in _episodes(random_policy, 4)]


def test_every_parameter_changes_and_loss_is_finite(random_policy):
    eps = _episodes(random_policy, G=4)
    # force a learning signal: alternate rewards inside each group via the credit of a copy
    eps = [e.__class__(**{**e.__dict__, "turns": e.turns[:-1] + (
        e.turns[-1].__class__(**{**e.turns[-1].__dict__, "reward": float(i % 2)}),)})
        for i, e in enumerate(eps)]
    batch = Batch.from_episodes(eps, random_policy.pad_id)
    adv = make_credit(CreditConfig(sources={"grpo": 1.0}), CreditContext(random_policy))(batch)
    adv = adv.advantages
    assert adv.abs().sum() > 0
    before = {n: p.detach().clone() for n, p in random_policy.model.named_parameters()}
    opt = torch.optim.AdamW(random_policy.model.parameters(), lr=1e-3)
    res = policy_update(random_policy, opt, batch, adv, UpdateConfig(kl_coef=0.0, micro_batch=5))
    assert not res.skipped
    assert torch.isfinite(torch.tensor(res.metrics["loss/policy"]))
    for name, p in random_policy.model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(before[name], p.detach()), f"{name} did not change"
    assert res.metrics["policy/approx_kl"] < 1e-4  # on-policy: ratio ~ 1 at the first step


def test_microbatching_matches_full_batch(random_policy):
    import copy

    eps = _episodes(random_policy, G=4)
    batch = Batch.from_episodes(eps, random_policy.pad_id)
    adv = torch.randn(batch.shape) * batch.action_mask
    grads = []
    for micro in (0, 5):
        pol = copy.deepcopy(random_policy)
        opt = torch.optim.SGD(pol.model.parameters(), lr=0.0)
        policy_update(pol, opt, batch, adv, UpdateConfig(micro_batch=micro, max_grad_norm=1e9))
        grads.append(torch.cat([p.grad.flatten() for p in pol.model.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("aggregation", ["token", "sequence", "constant"])
def test_tied_groups_are_skipped_with_the_same_gradient(random_policy, aggregation):
    """Episodes with zero advantage everywhere leave the forward/backward, not the normaliser."""
    import copy

    eps = _episodes(random_policy, G=4)
    batch = Batch.from_episodes(eps, random_policy.pad_id)
    adv = torch.randn(batch.shape) * batch.action_mask
    adv[::2] = 0.0  # half the episodes carry no signal (a tied GRPO group)
    grads, metrics = [], []
    for skip in (False, True):
        pol = copy.deepcopy(random_policy)
        opt = torch.optim.SGD(pol.model.parameters(), lr=0.0)
        cfg = UpdateConfig(max_grad_norm=1e9, aggregation=aggregation, micro_batch=3,
                           skip_zero_advantage=skip)
        res = policy_update(pol, opt, batch, adv, cfg)
        grads.append(torch.cat([p.grad.flatten() for p in pol.model.parameters()]))
        metrics.append(res.metrics)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-4)
    assert metrics[1]["loss/policy"] == pytest.approx(metrics[0]["loss/policy"], rel=1e-4)
    # every row tied: a zero gradient (momentum and weight decay still step, as before)
    pol = copy.deepcopy(random_policy)
    opt = torch.optim.SGD(pol.model.parameters(), lr=0.0)
    policy_update(pol, opt, batch, torch.zeros(batch.shape), UpdateConfig())
    assert all(p.grad is not None and not p.grad.any() for p in pol.model.parameters())


def test_kl_to_reference_is_logged_and_pulls_back(random_policy):
    import copy

    eps = _episodes(random_policy, G=4)
    batch = Batch.from_episodes(eps, random_policy.pad_id)
    reference = copy.deepcopy(random_policy.model).eval()
    with torch.no_grad():  # move the policy away from its reference
        for p in random_policy.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    zero = torch.zeros(batch.shape)
    opt = torch.optim.SGD(random_policy.model.parameters(), lr=1.0)
    cfg = UpdateConfig(kl_coef=1.0, max_grad_norm=1e9)
    first = policy_update(random_policy, opt, batch, zero, cfg, reference=reference)
    second = policy_update(random_policy, opt, batch, zero, cfg, reference=reference)
    assert first.metrics["loss/kl_ref"] > 0
    assert second.metrics["loss/kl_ref"] < first.metrics["loss/kl_ref"]  # the k3 term pulls back


@pytest.mark.parametrize("buckets", [1, 2, 5])
@pytest.mark.parametrize("next_token_only", [False, True])
def test_shared_prefix_forward_equals_the_plain_one(random_policy, buckets, next_token_only):
    """Each distinct prompt runs once and its KV cache is repeated to its rows: the logits and the
    gradient equal those of the plain forward over every row (prompts of different lengths, rows
    padded differently, groups interleaved), whatever the number of length buckets. With
    next_token_only, every logit that predicts a token of its row is still exact."""
    from clicker.models.shared_prefix import shared_prefix_logits

    model = random_policy.model.train()
    torch.manual_seed(0)
    prompts = [[5, 6, 7, 8], [5, 6, 9, 8, 10], [11, 12, 13, 14]]
    rows = [prompts[i % 3] + torch.randint(20, 40, (2 + i % 4,)).tolist() for i in range(9)]
    T = max(map(len, rows))
    ids = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    att = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows])
    needed = att.bool().clone()
    if next_token_only:  # the logits after a row's last token predict nothing
        needed[torch.arange(len(rows)), att.sum(1) - 1] = False
    logits, grads = [], []
    for prefix in (0, 4):  # 0: the plain forward; 4: the shortest prompt
        model.zero_grad()
        out = shared_prefix_logits(model, ids, att, prefix, buckets,
                                   next_token_only=next_token_only)
        out[needed].logsumexp(-1).sum().backward()
        logits.append(out[needed].detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)


def test_update_with_shared_prefix_gives_the_same_gradient(random_policy):
    import copy

    eps = _episodes(random_policy, G=4)
    batch = Batch.from_episodes(eps, random_policy.pad_id)
    adv = torch.randn(batch.shape) * batch.action_mask
    grads = []
    for share in (False, True):
        pol = copy.deepcopy(random_policy)
        opt = torch.optim.SGD(pol.model.parameters(), lr=0.0)
        policy_update(pol, opt, batch, adv, UpdateConfig(share_prefix=share, max_grad_norm=1e9))
        grads.append(torch.cat([p.grad.flatten() for p in pol.model.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)
