"""Pure math against numbers worked out by hand."""

import math

import pytest
import torch

from clicker.core.advantages import broadcast_to_tokens, group_advantages
from clicker.core.losses import aggregate, clipped_pg_loss, kl_k3, token_logprobs

R = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
G = torch.tensor([7, 7, 7, 7, 3, 3])  # group 7 = [1,0,0,1], group 3 = [1,1]


def test_grpo_by_hand():
    # group 7: mean 0.5, unbiased std sqrt(((.5^2)*4)/3) = sqrt(1/3)
    s = math.sqrt(1 / 3)
    a = group_advantages("grpo", R, G, eps=0.0)
    assert a[:4].tolist() == pytest.approx([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s])
    # group 3: all equal -> zero advantage (std 0, numerator 0)
    assert group_advantages("grpo", R, G)[4:].tolist() == [0.0, 0.0]


def test_drgrpo_by_hand():
    a = group_advantages("drgrpo", R, G)
    assert a.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.0, 0.0])


def test_rloo_by_hand():
    # r=1 in group 7: others [0,0,1] mean 1/3 -> 2/3 ; r=0: others [1,0,1] mean 2/3 -> -2/3
    a = group_advantages("rloo", R, G)
    assert a.tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0.0, 0.0])
    single = group_advantages("rloo", torch.tensor([1.0]), torch.tensor([0]))
    assert single.tolist() == [0.0]


def test_unknown_method():
    with pytest.raises(ValueError, match="grpo"):
        group_advantages("ppo", R, G)


def test_broadcast_to_tokens():
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    out = broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask)
    assert out.tolist() == [[0.0, 2.0, 2.0], [-1.0, 0.0, 0.0]]


def test_token_logprobs_and_entropy():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))
    lp, ent = token_logprobs(logits, torch.tensor([[1]]))
    assert lp.item() == pytest.approx(math.log(0.25))
    assert ent.item() == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    lp2, _ = token_logprobs(logits, torch.tensor([[0]]), temperature=0.0)  # greedy scores at T=1
    assert lp2.item() == pytest.approx(math.log(0.5))


def test_kl_k3_by_hand():
    logp, ref = torch.tensor([0.0]), torch.tensor([math.log(0.5)])
    # d = ref - logp = -ln2; exp(d) - d - 1 = 0.5 + ln2 - 1
    assert kl_k3(logp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl_k3(ref, ref).item() == 0.0


def test_aggregations_by_hand():
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert aggregate(v, m, "token").item() == pytest.approx(10 / 4)
    assert aggregate(v, m, "sequence").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(v, m, "constant").item() == pytest.approx(10 / 6)
    assert aggregate(v, m, "constant", max_tokens=5).item() == pytest.approx(10 / 10)


def test_clipped_loss_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.9]]))
    adv = torch.tensor([[1.0, -1.0, -2.0, 2.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, st = clipped_pg_loss(logp, old, adv, mask, clip_low=0.2, clip_high=0.28)
    # t0: ratio 1.5, A>0 -> min(1.5, 1.28) = 1.28 ; t1: ratio .5, A<0 -> min(-.5, -.8) = -.8
    # t2: ratio 1.1, A=-2 -> min(-2.2, -2.2) ; t3: ratio .9, A=2 -> min(1.8, 1.8)
    expected = -(1.28 - 0.8 - 2.2 + 1.8) / 4
    assert loss.item() == pytest.approx(expected)
    assert st["clip_frac"].item() == pytest.approx(0.5)


def test_clipped_loss_gradient_is_reinforce_on_policy():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    adv = torch.tensor([[3.0, -1.0]])
    loss, st = clipped_pg_loss(logp, logp.detach(), adv, torch.ones(1, 2, dtype=torch.bool))
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([-1.5, 0.5])  # -A / n_tokens
    assert st["approx_kl"].item() == 0.0
