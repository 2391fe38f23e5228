"""Per-token divergences between a student's and a teacher's next-token distributions.

Self-distillation (SDPO, Hübotter et al. 2026; OPSD) matches the student pi_theta to a teacher
pi_T over the vocabulary at every action token. A full-vocabulary target costs (B, T, V) memory,
so the teacher keeps its top-k log-probs and the rest of its mass goes into one tail bucket
(SDPO's reference: top-100 + tail). The student is scored on the same k ids plus its own tail.

Generalised Jensen-Shannon with mixture M = (1 - alpha) * S + alpha * T:

    D_alpha(S, T) = (1 - alpha) * KL(S || M) + alpha * KL(T || M)

alpha = 0 is taken as the forward KL(T || S) and alpha = 1 as the reverse KL(S || T), the
limits SDPO's reference uses (the mixture formula itself vanishes there); 0.5 is the JSD.
"""

from __future__ import annotations

import math

import torch


def with_tail(topk_logp: torch.Tensor) -> torch.Tensor:
    """(..., k) log-probs of k classes -> (..., k + 1): the k and log(1 - their mass), the tail.

    The mass is clamped just below 1 so a top-k that holds everything gives a tiny tail, not
    log(0)."""
    mass = torch.logsumexp(topk_logp, dim=-1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([topk_logp, torch.log(-torch.expm1(mass))], dim=-1)


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """(...) KL(P || Q) over the last dim, from log-probs."""
    return (p_logp.exp() * (p_logp - q_logp)).sum(-1)


def generalized_jsd(student_logp: torch.Tensor, teacher_logp: torch.Tensor,
                    alpha: float) -> torch.Tensor:
    """(...) D_alpha(S, T) over the last dim of two normalised log-prob tensors (..., C)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 0.0:
        return _kl(teacher_logp, student_logp)
    if alpha == 1.0:
        return _kl(student_logp, teacher_logp)
    mix = torch.logsumexp(torch.stack([student_logp + math.log(1 - alpha),
                                       teacher_logp + math.log(alpha)]), dim=0)
    return (1 - alpha) * _kl(student_logp, mix) + alpha * _kl(teacher_logp, mix)


def topk_divergence(student_logp: torch.Tensor, teacher_topk_logp: torch.Tensor,
                    index: torch.Tensor, alpha: float) -> torch.Tensor:
    """(...) D_alpha between student and teacher on the teacher's top-k ids plus a tail bucket.

    student_logp (..., V) normalised log-probs (with grad); teacher_topk_logp (..., k) the
    teacher's log-probs at `index` (..., k) long, its top-k ids.
    """
    s = with_tail(student_logp.gather(-1, index))
    t = with_tail(teacher_topk_logp)
    return generalized_jsd(s, t, alpha)
