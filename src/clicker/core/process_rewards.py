"""Implicit process rewards and PRIME's advantage, as pure functions on padded (B, T) tensors.

Implicit PRM (Yuan et al. 2024, arXiv 2412.01981): a language model pi_phi trained only on
outcome labels, with its outcome logit parameterised as beta * sum_t log(pi_phi / pi_ref),
gives a dense reward on every token, r_t = beta * log(pi_phi(y_t | y_<t) / pi_ref(y_t | y_<t)).
PRIME (Cui et al. 2025, arXiv 2502.01456) trains it online with a cross-entropy loss on each
batch and adds a leave-one-out (RLOO) outcome advantage to a leave-one-out process advantage.

The time axis is each row's action tokens (`mask`); observation and padding positions carry no
reward and are skipped by the return (as in `clicker.core.returns`). Groups are integer ids: the
episodes sampled for one prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clicker.core.advantages import broadcast_to_tokens, rloo_advantages
from clicker.core.returns import returns_to_go, whiten


def implicit_token_rewards(
    prm_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, beta: float
) -> torch.Tensor:
    """(B, T) r_t = beta * (log pi_phi(y_t) - log pi_ref(y_t)) on the mask, 0 elsewhere.

    prm_logp, ref_logp (B, T): log-probs of token t under the PRM and the reference;
    mask (B, T) bool: action tokens.
    """
    return beta * (prm_logp.float() - ref_logp.float()) * mask


def outcome_logits(logratio: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """(B,) the implicit PRM's outcome logit beta * sum_t log-ratio_t over the mask.

    logratio (B, T): log pi_phi - log pi_ref per token; mask (B, T) bool.
    sigmoid of it is the PRM's probability that the episode succeeds.
    """
    return beta * (logratio.float() * mask).sum(-1)


def prm_bce_loss(
    logratio: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, beta: float
) -> torch.Tensor:
    """Scalar mean over rows of BCE(sigmoid(beta * sum_t log-ratio_t), label).

    logratio (B, T); mask (B, T) bool; labels (B,) in [0, 1] (0/1 outcomes or soft labels).
    Computed from the logit (binary_cross_entropy_with_logits), which equals PRIME's
    sigmoid-then-BCE but does not saturate to inf for large |logit|.
    """
    return F.binary_cross_entropy_with_logits(
        outcome_logits(logratio, mask, beta), labels.to(torch.float32)
    )


def _group_sum_count(values: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(B,) sum of `values` over each row's group and (B,) group size. values, groups (B,)."""
    _, inverse = torch.unique(groups, return_inverse=True)
    n = int(inverse.max()) + 1
    total = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    count = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(
        0, inverse, torch.ones_like(values)
    )
    return total[inverse], count[inverse]


def group_accuracy_keep(
    labels: torch.Tensor, groups: torch.Tensor, lo: float, hi: float
) -> torch.Tensor:
    """(B,) bool: the row's group has mean label (accuracy) in [lo, hi] (PRIME keeps [0.2, 0.8]).

    labels (B,) outcome labels in [0, 1]; groups (B,) long.
    """
    total, count = _group_sum_count(labels.double(), groups)
    acc = total / count
    # a small tolerance so that e.g. 1/5 = 0.2 counts as inside [0.2, 0.8]
    return (acc >= lo - 1e-9) & (acc <= hi + 1e-9)


def leave_one_out_token_rewards(
    token_rewards: torch.Tensor, mask: torch.Tensor, groups: torch.Tensor
) -> torch.Tensor:
    """(B, T) token rewards minus PRIME's leave-one-out baseline, 0 off the mask.

    token_rewards (B, T); mask (B, T) bool; groups (B,) long. With K rows in a group and
    m_j = row j's mean token reward over its mask, PRIME's code (`masked_rloo`) forms
        r'_t = r_t * K / (K - 1) - (sum_j m_j) / (K - 1)
             = r_t - mean_{j != i} m_j + (r_t - m_i) / (K - 1).
    Summed over row i's tokens this equals n_i * (m_i - mean_{j != i} m_j), the paper's
    eq. (5) baseline; per token it also stretches r_t - m_i by K / (K - 1). On a one-token
    reward (the outcome) it is exactly RLOO. A group of one row has no baseline: 0.
    """
    m = mask.to(torch.float32)
    r = token_rewards.float() * m
    per_row = r.sum(-1) / m.sum(-1).clamp(min=1.0)  # (B,) m_i; 0 for a row with no actions
    total, count = _group_sum_count(per_row, groups)
    k = count[:, None]
    out = (r * k - total[:, None]) / (k - 1).clamp(min=1.0)
    return torch.where(k > 1, out, torch.zeros_like(out)) * m


def max_return_normalize(
    token_rewards: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """(B, T) token rewards divided by the largest |return-to-go| in the batch (+ eps).

    PRIME's `prime_norm: batch_norm`: keeps the relative size of token rewards but bounds every
    process return by 1, so beta sets only the PRM's loss, not the scale of the advantage.
    token_rewards (B, T); mask (B, T) bool.
    """
    r = token_rewards.float() * mask
    if not mask.any():
        return r
    return r / (returns_to_go(r, mask).abs().max() + eps)


def prime_advantages(
    token_rewards: torch.Tensor,
    outcome_rewards: torch.Tensor,
    mask: torch.Tensor,
    groups: torch.Tensor,
    *,
    normalize: bool = True,
    whiten_adv: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PRIME's advantage A = A_outcome + A_process, and A_process alone; both (B, T).

    token_rewards (B, T) implicit rewards r_t; outcome_rewards (B,) episode rewards;
    mask (B, T) bool action tokens; groups (B,) long.
    A_outcome: RLOO of the outcome, on every action token (PRIME puts it on the last token and
    takes the return with gamma = 1, which gives the same). A_process: the return-to-go
    (gamma = 1) of `leave_one_out_token_rewards`, after `max_return_normalize` if `normalize`.
    With `whiten_adv` the sum is standardised over all masked tokens (verl's masked_whiten).
    A_process is returned before whitening. Both are 0 off the mask.
    """
    m = mask.bool()
    r = max_return_normalize(token_rewards, m) if normalize else token_rewards.float() * m
    process = returns_to_go(leave_one_out_token_rewards(r, m, groups), m)
    outcome = broadcast_to_tokens(rloo_advantages(outcome_rewards.float(), groups), m)
    adv = outcome.to(process) + process
    if whiten_adv:
        adv = whiten(adv, m)
    return adv * m, process * m
