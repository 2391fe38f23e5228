"""Self-distillation (SDPO / OPSD) as a credit source: teacher contexts, the sampled-token
advantage, and the top-k divergence through the shared update."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from clicker.core.config import DistillConfig, UpdateConfig
from clicker.core.types import Batch, DistillTargets, Episode, Turn
from clicker.credit.base import CreditContext
from clicker.credit.distill import DistillCredit, teacher_contexts
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.train.update import policy_update


def _ep(group: int, reward: float, name: str, feedback: str = "") -> Episode:
    return Episode(tokens=[5, 6], action_mask=[False, True], logprobs=[0.0, -1.0], prompt="p",
                   turns=(Turn(name, "", reward, action_span=(1, 2), feedback=feedback),),
                   reference="42", group=group)


def _contexts(eps, kinds=("sibling", "feedback"), without=True, seed=0):
    return teacher_contexts(eps, kinds, threshold=0.5, feedback_without_sibling=without,
                            rng=random.Random(seed), transcript=lambda e: e.completion)


def test_a_sibling_is_never_its_own_teacher():
    # group 0: only episode 0 succeeded; group 1: two winners
    eps = [_ep(0, 1.0, "A"), _ep(0, 0.0, "b", "wrong"), _ep(0, 0.0, "c"),
           _ep(1, 1.0, "D"), _ep(1, 1.0, "E")]
    for seed in range(20):
        ctx = _contexts(eps, seed=seed)
        assert ctx[0] is None  # its only successful sibling would be itself
        assert ctx[1] == "Solution: A\n" and ctx[2] == "Solution: A\n"
        assert ctx[3] == "Solution: E\n" and ctx[4] == "Solution: D\n"


def test_feedback_only_for_failures_and_by_default_only_without_a_sibling():
    eps = [_ep(0, 0.0, "a", "wrong: expected 42, got 41"), _ep(0, 0.0, "b"),
           _ep(1, 1.0, "C"), _ep(1, 0.0, "d", "wrong: expected 7")]
    ctx = _contexts(eps)
    assert ctx[0] == "Feedback: wrong: expected 42, got 41\n"
    assert ctx[1] is None  # failed, no feedback, no winning sibling: masked
    assert ctx[2] is None  # succeeded: feedback does not apply, no other winner
    assert ctx[3] == "Solution: C\n"  # a winner exists: its feedback is not used
    both = _contexts(eps, without=False)
    assert both[3] == "Solution: C\nFeedback: wrong: expected 7\n"
    ref = _contexts(eps, kinds=("reference",))
    assert ref == ["Answer: 42\n"] * 4  # OPSD: the reference answer for every episode


class _World:
    """Single-turn: the answer is 'ab'; feedback names it."""

    name, stop, max_turns, max_action_tokens = "toy", ("\n",), 1, 3

    def make(self, split, index):
        from clicker.tasks.base import Step

        class Env:
            def reset(self):
                return f"q{index}="

            def step(self, action):
                ok = action.startswith("ab")
                return Step("", float(ok), True, "correct" if ok else "wrong: expected ab")
        return Env()

    def reference(self, split, index):
        return "ab"

    def warmup_text(self, index, rng):
        return ""


def _batch(policy, G=4):
    eps = run_episodes(policy, _World(), "train", [0, 1, 2], RolloutSettings(group_size=G),
                       torch.Generator().manual_seed(0))
    return Batch.from_episodes(eps, policy.pad_id)


@pytest.mark.parametrize("loss", ["sampled", "jsd"])
def test_distill_credit_masks_episodes_without_context(random_policy, loss):
    batch = _batch(random_policy)
    src = DistillCredit(DistillConfig(loss=loss, context=["feedback"]),
                        CreditContext(random_policy, _World()))
    out = src(batch)
    failed = batch.rewards < 0.5
    assert failed.any()
    covered = out.parts["distill"].abs().sum(-1) > 0
    assert torch.equal(covered, failed)  # feedback exists only for the failures
    assert out.metrics["credit/distill/coverage"] == pytest.approx(float(failed.float().mean()))
    if loss == "sampled":
        assert torch.equal(out.advantages.abs().sum(-1) > 0, failed)
        assert out.advantages.abs().max() <= DistillConfig().clip
    else:
        assert out.advantages.abs().sum() == 0 and out.distill is not None
        assert torch.equal(out.distill.mask.any(-1), failed)
        # the teacher's top-k log-probs are normalised log-probs of real ids
        lp = out.distill.logp[out.distill.mask]
        assert (lp <= 0).all() and torch.logsumexp(lp, -1).max() <= 1e-5


def test_sampled_advantage_is_the_teacher_minus_student_log_ratio(random_policy):
    """With the frozen initial policy as teacher and the reference answer as context, the
    advantage at each action token is log pi_T(y_t | context, y<t) - log pi_old(y_t | y<t)."""
    batch = _batch(random_policy, G=2)
    src = DistillCredit(DistillConfig(loss="sampled", teacher="initial", context=["reference"],
                                      clip=100.0), CreditContext(random_policy, _World()))
    adv = src(batch).advantages
    pol = random_policy
    for i, e in enumerate(batch.episodes):
        ctx = pol.encode("Answer: ab\n")
        ids = torch.tensor([ctx + e.tokens])
        with torch.no_grad():
            logp = torch.log_softmax(pol.model(input_ids=ids).logits[0].float(), -1)
        for t, m in enumerate(e.action_mask):
            if m:
                want = float(logp[len(ctx) + t - 1, e.tokens[t]]) - e.logprobs[t]
                assert float(adv[i, t]) == pytest.approx(want, abs=1e-4)


def _grads(policy, batch, adv, distill):
    pol = copy.deepcopy(policy)
    opt = torch.optim.SGD(pol.model.parameters(), lr=0.0)
    res = policy_update(pol, opt, batch, adv, UpdateConfig(max_grad_norm=1e9), distill=distill)
    return torch.cat([p.grad.flatten() for p in pol.model.parameters()]), res.metrics


def _self_targets(policy, batch, mask, k=5):
    """The student's own top-k distributions: a teacher identical to the student."""
    with torch.no_grad():
        logits = policy.model(input_ids=batch.input_ids,
                              attention_mask=batch.attention_mask.long()).logits
    lp = torch.log_softmax(logits.float(), -1)
    lp = torch.cat([torch.zeros_like(lp[:, :1]), lp[:, :-1]], 1)  # position t: token t's dist
    v, ix = lp.topk(k, -1)
    return DistillTargets(v, ix, mask, alpha=0.5)


def test_identical_teacher_gives_zero_loss_and_the_plain_gradient(random_policy):
    batch = _batch(random_policy)
    adv = torch.randn(batch.shape) * batch.action_mask
    plain, _ = _grads(random_policy, batch, adv, None)
    same, m = _grads(random_policy, batch, adv,
                     _self_targets(random_policy, batch, batch.action_mask))
    assert m["loss/distill"] == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(same, plain, atol=1e-6, rtol=1e-4)


def test_masked_episodes_contribute_nothing(random_policy):
    """Two teachers that agree on the covered episodes and differ on the masked ones give the
    same gradient."""
    batch = _batch(random_policy)
    zero = torch.zeros(batch.shape)
    mask = batch.action_mask.clone()
    mask[::2] = False  # every other episode has no teacher
    ix = _self_targets(random_policy, batch, mask).index
    a = torch.log_softmax(torch.randn(ix.shape), -1)
    b = torch.where(mask[..., None], a, torch.log_softmax(torch.randn(ix.shape), -1))
    ga, m = _grads(random_policy, batch, zero, DistillTargets(a, ix, mask))
    gb, _ = _grads(random_policy, batch, zero, DistillTargets(b, ix, mask))
    assert m["loss/distill"] > 0 and ga.abs().max() > 0
    torch.testing.assert_close(ga, gb)
