"""Self-distillation divergences against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from clicker.core.divergences import generalized_jsd, topk_divergence, with_tail

S = torch.tensor([0.5, 0.5]).log()
T = torch.tensor([0.9, 0.1]).log()


def test_forward_reverse_and_jsd_by_hand():
    # KL(T||S) = 0.9 ln 1.8 + 0.1 ln 0.2; KL(S||T) = 0.5 ln(5/9) + 0.5 ln 5
    assert float(generalized_jsd(S, T, 0.0)) == pytest.approx(0.368064, abs=1e-5)
    assert float(generalized_jsd(S, T, 1.0)) == pytest.approx(0.510826, abs=1e-5)
    # M = (0.7, 0.3): 0.5 * KL(S||M) + 0.5 * KL(T||M) = 0.5 * (0.087177 + 0.116322)
    assert float(generalized_jsd(S, T, 0.5)) == pytest.approx(0.101749, abs=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_identical_teacher_gives_zero(alpha):
    logp = torch.log_softmax(torch.randn(3, 4, 11), -1)
    idx = logp.topk(5, -1).indices
    d = topk_divergence(logp, logp.gather(-1, idx), idx, alpha)
    assert d.shape == (3, 4)
    assert d.abs().max() < 1e-6


def test_tail_bucket_holds_the_rest_of_the_mass():
    p = torch.tensor([0.6, 0.3, 0.1])
    t = with_tail(p.log()[:1])  # top-1 = 0.6; tail 0.4
    assert torch.allclose(t.exp(), torch.tensor([0.6, 0.4]), atol=1e-6)
    # student (0.2, 0.5, 0.3) on the teacher's top-1 id 0: S = (0.2, 0.8), T = (0.6, 0.4)
    s = torch.tensor([0.2, 0.5, 0.3]).log()
    d = topk_divergence(s, p.log()[:1], torch.tensor([0]), 0.0)
    want = 0.6 * math.log(0.6 / 0.2) + 0.4 * math.log(0.4 / 0.8)
    assert float(d) == pytest.approx(want, abs=1e-5)


def test_gradient_moves_the_student_toward_the_teacher():
    logits = torch.zeros(5, requires_grad=True)
    teacher = torch.log_softmax(torch.tensor([3.0, 0.0, 0.0, 0.0, 0.0]), -1)
    idx = torch.tensor([0, 1])
    topk_divergence(torch.log_softmax(logits, -1), teacher[idx], idx, 0.5).backward()
    assert logits.grad[0] < 0  # descending the loss raises the teacher's favourite


def test_alpha_out_of_range():
    with pytest.raises(ValueError, match="alpha"):
        generalized_jsd(S, T, 1.5)
