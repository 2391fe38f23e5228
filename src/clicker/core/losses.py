"""The policy-gradient loss and its diagnostics, as pure functions on (B, T) tensors.

Token-level clipped surrogate (PPO, Schulman et al. 2017) with an asymmetric upper clip
(DAPO's eps_high), an optional k3 KL penalty to a reference policy (Schulman 2020, "Approximating
KL divergence"; as in GRPO), and three ways to aggregate over tokens:

- "token":    sum over all action tokens / number of action tokens in the batch (DAPO, TRL default)
- "sequence": mean over each episode's tokens, then mean over episodes (original GRPO)
- "constant": sum over tokens / (B * max_tokens) (Dr.GRPO: no length normalisation)
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("token", "sequence", "constant")


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0):
    """(B, T) log pi(target_t | prefix) and (B, T) entropy of the distribution, in float32.

    logits (B, T, V) already aligned so logits[:, t] predicts targets[:, t].
    A temperature of 0 (greedy sampling) scores at temperature 1, as the sampler does.
    """
    scale = temperature if temperature > 0 else 1.0
    logp = torch.log_softmax(logits.float() / scale, dim=-1)
    chosen = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return chosen, entropy


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """(B, T) k3 estimator of KL(pi || pi_ref) at sampled tokens: exp(q - p) - (q - p) - 1 >= 0."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def aggregate(values: torch.Tensor, mask: torch.Tensor, how: str, max_tokens: int | None = None):
    """Scalar: (B, T) values reduced over mask by an aggregation in AGGREGATIONS."""
    m = mask.to(values.dtype)
    if how == "token":
        return (values * m).sum() / m.sum().clamp(min=1.0)
    if how == "sequence":
        per_seq = (values * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        return per_seq.mean()
    if how == "constant":
        denom = values.shape[0] * (max_tokens if max_tokens is not None else values.shape[1])
        return (values * m).sum() / max(denom, 1)
    raise ValueError(f"unknown loss aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}")


def clipped_pg_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    aggregation: str = "token",
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped policy-gradient loss and diagnostics.

    logp, old_logp, advantages (B, T); mask (B, T) bool (action tokens).
    loss_t = -min(rho_t A_t, clip(rho_t, 1 - clip_low, 1 + clip_high) A_t), rho = exp(logp - old).
    Returns (loss, {"clip_frac", "approx_kl", "ratio_mean"}); approx_kl is k3 of old vs new.
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = -torch.minimum(ratio * advantages, clipped * advantages)
    loss = aggregate(per_token, mask, aggregation, max_tokens)
    with torch.no_grad():
        m = mask.float()
        n = m.sum().clamp(min=1.0)
        is_clipped = ((ratio < 1 - clip_low) & (advantages < 0)) | (
            (ratio > 1 + clip_high) & (advantages > 0)
        )
        stats = {
            "clip_frac": (is_clipped.float() * m).sum() / n,
            "approx_kl": ((torch.exp(-log_ratio) + log_ratio - 1.0) * m).sum() / n,
            "ratio_mean": (ratio * m).sum() / n,
        }
    return loss, stats
