"""Implicit PRM / PRIME: the math against hand numbers, and the credit source on a real batch."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import random

import pytest
import torch

from clicker.core.config import CreditConfig, ImplicitPRMConfig
from clicker.core.process_rewards import (
    group_accuracy_keep,
    implicit_token_rewards,
    leave_one_out_token_rewards,
    max_return_normalize,
    prime_advantages,
    prm_bce_loss,
)
from clicker.core.returns import whiten
from clicker.core.types import Batch
from clicker.credit import CreditContext, make_credit
from clicker.credit.implicit_prm import ImplicitPRMCredit
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.base import Step

# --- pure math ---------------------------------------------------------------------------------

# rows 0-2 form group 5, row 3 is alone in group 9; token 0 is the prompt (never an action)
MASK = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1], [0, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
GROUPS = torch.tensor([5, 5, 5, 9])
# token rewards; row means over the mask: 0.2, 0.3, -0.2 (and 1.0 for the lone row)
R = torch.tensor([[9.0, 0.3, 0.1, 9.0], [9.0, 0.6, 0.0, 0.3], [9.0, -0.2, 9.0, 9.0],
                  [9.0, 0.5, 1.5, 9.0]])  # 9.0 off the mask must be ignored
OUTCOME = torch.tensor([1.0, 0.0, 0.0, 1.0])


def close(got: torch.Tensor, want, atol: float = 1e-5) -> None:
    torch.testing.assert_close(got, torch.as_tensor(want, dtype=got.dtype), atol=atol, rtol=0)


def test_implicit_token_rewards_by_hand():
    prm = torch.tensor([[-1.0, -0.5, -2.0], [-3.0, -1.0, -0.1]])
    ref = torch.tensor([[-1.0, -1.5, -1.0], [-1.0, -2.0, -0.1]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1]], dtype=torch.bool)
    r = implicit_token_rewards(prm, ref, mask, beta=0.5)
    close(r, [[0.0, 0.5, -0.5], [0.0, 0.5, 0.0]])


def test_leave_one_out_token_rewards_by_hand():
    # K = 3, sum of row means S = 0.2 + 0.3 - 0.2 = 0.3: r'_t = 1.5 r_t - 0.15 (PRIME's code)
    out = leave_one_out_token_rewards(R, MASK, GROUPS)
    close(out[:3], [[0.0, 0.30, 0.0, 0.0], [0.0, 0.75, -0.15, 0.30], [0.0, -0.45, 0.0, 0.0]])
    assert out[3].tolist() == [0.0] * 4  # alone in its group: no baseline, no credit
    # per row it sums to n_i * (m_i - mean of the others' means), the paper's eq. (5)
    others = torch.tensor([(0.3 - 0.2) / 2, (0.2 - 0.2) / 2, (0.2 + 0.3) / 2])
    n = MASK[:3].sum(1).float()
    means = torch.tensor([0.2, 0.3, -0.2])
    assert out[:3].sum(1).tolist() == pytest.approx((n * (means - others)).tolist(), abs=1e-6)


def test_prime_advantages_by_hand():
    # outcome RLOO in group 5: 1 - 0 = 1, 0 - 0.5 = -0.5, -0.5; the lone row gets 0.
    # process returns-to-go of the leave-one-out rewards above:
    # row 0: [.30, 0], row 1: [.75 - .15 + .30, -.15 + .30, .30] = [.90, .15, .30], row 2: [-.45]
    adv, proc = prime_advantages(R, OUTCOME, MASK, GROUPS, normalize=False, whiten_adv=False)
    want = [[0.0, 1.30, 1.0, 0.0], [0.0, 0.40, -0.35, -0.20], [0.0, -0.95, 0.0, 0.0], [0.0] * 4]
    close(adv, want)
    assert proc[1].tolist() == pytest.approx([0.0, 0.90, 0.15, 0.30], abs=1e-6)
    # PRIME's batch_norm: the largest |raw return| is row 3's 0.5 + 1.5 = 2, so process halves
    adv_n, proc_n = prime_advantages(R, OUTCOME, MASK, GROUPS, normalize=True, whiten_adv=False)
    close(proc_n, proc / 2)
    assert adv_n[0].tolist() == pytest.approx([0.0, 1.15, 1.0, 0.0], abs=1e-5)
    assert adv_n[1].tolist() == pytest.approx([0.0, -0.05, -0.425, -0.35], abs=1e-5)
    # whitened: the same advantages standardised over every action token
    adv_w, _ = prime_advantages(R, OUTCOME, MASK, GROUPS, normalize=True, whiten_adv=True)
    assert torch.allclose(adv_w, whiten(adv_n, MASK), atol=1e-6)
    assert float(adv_w[MASK].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(adv_w[MASK].std()) == pytest.approx(1.0, abs=1e-5)
    assert (adv_w[~MASK] == 0).all()


def test_max_return_normalize_by_hand():
    r = torch.tensor([[0.0, 1.0, -3.0], [0.0, 0.5, 0.5]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 1]], dtype=torch.bool)
    # returns: row 0 [-2, -3], row 1 [1, 0.5]: divide by 3
    close(max_return_normalize(r, mask, eps=0.0), [[0.0, 1 / 3, -1.0], [0.0, 1 / 6, 1 / 6]])


def test_prm_bce_loss_by_hand():
    logratio = torch.tensor([[7.0, 1.5, 0.5], [7.0, -1.0, -3.0]])  # column 0 is off the mask
    mask = torch.tensor([[0, 1, 1], [0, 1, 1]], dtype=torch.bool)
    labels = torch.tensor([1.0, 0.25])
    # logits: 0.5 * 2 = 1 and 0.5 * -4 = -2
    row0 = math.log1p(math.exp(-1.0))  # -log sigmoid(1)
    row1 = 0.25 * math.log1p(math.exp(2.0)) + 0.75 * math.log1p(math.exp(-2.0))
    loss = prm_bce_loss(logratio, mask, labels, beta=0.5)
    assert float(loss) == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_group_accuracy_keep():
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    groups = torch.tensor([0] * 5 + [1] * 3 + [2] * 4)
    # accuracies: group 0 = 0.2 (kept, bound inclusive), group 1 = 1.0, group 2 = 0.75
    keep = group_accuracy_keep(labels, groups, 0.2, 0.8)
    assert keep.tolist() == [True] * 5 + [False] * 3 + [True] * 4


# --- the credit source on a real batch --------------------------------------------------------


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


LABELS = torch.tensor([1.0, 0.0, 1.0, 0.0] * 3)  # fixed outcomes, two successes per group


def _batch(policy, labels: torch.Tensor | None = LABELS) -> Batch:
    gen = torch.Generator().manual_seed(0)
    eps = run_episodes(policy, EchoWorld(), "train", [0, 1, 2], RolloutSettings(group_size=4),
                       gen)
    batch = Batch.from_episodes(eps, policy.pad_id)
    return batch if labels is None else dataclasses.replace(batch, rewards=labels.clone())


def _params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_credit_on_real_batch(random_policy):
    ctx = CreditContext(random_policy)
    credit = make_credit(CreditConfig(sources={"implicit_prm": 1.0},
                                      implicit_prm=ImplicitPRMConfig(lr=1e-3, micro_batch=5)), ctx)
    src = credit.sources[0][1]
    assert isinstance(src, ImplicitPRMCredit)
    batch = _batch(random_policy, labels=None)
    prm0, ref0, pol0 = _params(src.prm), _params(ctx.reference), _params(random_policy.model)
    assert all(p.dtype == torch.float32 for p in src.prm.parameters())
    out = credit(batch)
    adv = out.advantages
    assert adv.shape == batch.shape and torch.isfinite(adv).all()
    assert (adv[~batch.action_mask] == 0).all() and adv[batch.action_mask].abs().sum() > 0
    assert out.parts["implicit_prm/process"].shape == batch.shape
    changed = [not torch.equal(a, b) for a, b in zip(prm0, src.prm.parameters())]
    assert all(changed), "every PRM parameter should move"
    assert all(torch.equal(a, b) for a, b in zip(ref0, ctx.reference.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(pol0, random_policy.model.parameters()))
    for key in ("loss", "loss_after", "accuracy", "calibration_error", "token_reward_mean"):
        assert math.isfinite(out.metrics[f"credit/implicit_prm/{key}"])
    # before its first update the PRM equals pi_ref: log-ratio 0, p = 0.5, loss = log 2
    assert out.metrics["credit/implicit_prm/loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_prm_learns_fixed_labels(random_policy):
    src = ImplicitPRMCredit(ImplicitPRMConfig(beta=0.5, lr=3e-3, micro_batch=8),
                            CreditContext(random_policy))
    batch = _batch(random_policy)
    assert len({tuple(e.tokens) for e in batch.episodes}) == len(batch.episodes)
    p0 = src.predict(batch)
    assert torch.allclose(p0, torch.full_like(p0, 0.5), atol=1e-5)
    losses = [src(batch).metrics["credit/implicit_prm/loss"] for _ in range(4)]
    p = src.predict(batch)
    assert losses[-1] < losses[0] - 0.1
    assert float(p[LABELS == 1].min()) > float(p[LABELS == 0].max())  # ranks every pair right
    assert float((p - LABELS).abs().mean()) < 0.15


def test_accuracy_filter_zeroes_groups(random_policy):
    labels = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    cfg = ImplicitPRMConfig(lr=1e-3, accuracy_filter=(0.2, 0.8))
    batch = _batch(random_policy, labels)
    out = ImplicitPRMCredit(cfg, CreditContext(random_policy))(batch)
    adv, mask = out.advantages, batch.action_mask
    assert (adv[:4] == 0).all()  # group 0 all correct: filtered out
    assert (adv[4:][mask[4:]] != 0).all()  # accuracy 0.25 and 0.5: kept
    assert out.metrics["credit/implicit_prm/kept_groups"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="accuracy_filter"):
        ImplicitPRMConfig(accuracy_filter=(0.8, 0.2))


def test_state_dict_round_trip(random_policy):
    cfg = ImplicitPRMConfig(lr=1e-3)
    ctx = CreditContext(random_policy)
    batch = _batch(random_policy)
    a = ImplicitPRMCredit(cfg, ctx)
    a(batch)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # as the trainer's checkpoint does
    b, fresh = ImplicitPRMCredit(cfg, ctx), ImplicitPRMCredit(cfg, ctx)
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    assert b.updates == 1 and b.optimizer.state_dict()["state"]
    assert all(torch.equal(x, y) for x, y in zip(a.prm.parameters(), b.prm.parameters()))
    # the next step (weights and Adam moments) matches exactly; a fresh source's does not
    out_a, out_b, out_f = a(batch), b(batch), fresh(batch)
    assert torch.equal(out_a.advantages, out_b.advantages)
    assert not torch.allclose(out_a.advantages, out_f.advantages)
    assert all(torch.equal(x, y) for x, y in zip(a.prm.parameters(), b.prm.parameters()))
    before = copy.deepcopy(b.state_dict())
    b.load_state_dict({})  # a checkpoint without this source restores nothing
    assert all(torch.equal(x, y) for x, y in zip(before["model"].values(),
                                                 b.prm.state_dict().values()))
