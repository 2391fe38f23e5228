"""Group-relative advantages for the sparse baselines (GRPO, Dr.GRPO, RLOO).

Pure functions on tensors. Episodes are grouped by an integer id (the G samples of one prompt);
every token of an episode gets the episode's advantage (`broadcast_to_tokens`).

- GRPO (Shao et al. 2024, DeepSeekMath): A_i = (r_i - mean_g r) / (std_g r + eps).
  std is the unbiased (G-1) sample std, as in TRL's GRPOTrainer.
- Dr.GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): A_i = r_i - mean_g r
  (no std division; its length-normalisation fix lives in the loss aggregation).
- RLOO (Ahmadian et al. 2024): A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g r).
"""

from __future__ import annotations

import torch

METHODS = ("grpo", "drgrpo", "rloo")


def _group_stats(rewards: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-episode group mean, unbiased group std and group size.

    rewards (B,) float; groups (B,) long (any ids). Returns three (B,) tensors.
    """
    _, inverse = torch.unique(groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    r = rewards.to(torch.float64)
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(r))
    total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, r)
    mean = total / count
    sq = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, inverse, (r - mean[inverse]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1))
    return mean[inverse], std[inverse], count[inverse]


def grpo_advantages(rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(B,) GRPO advantage: group-standardised reward."""
    mean, std, _ = _group_stats(rewards, groups)
    return ((rewards.double() - mean) / (std + eps)).to(rewards.dtype)


def drgrpo_advantages(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(B,) Dr.GRPO advantage: reward minus group mean."""
    mean, _, _ = _group_stats(rewards, groups)
    return (rewards.double() - mean).to(rewards.dtype)


def rloo_advantages(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """(B,) RLOO advantage: reward minus the mean of the other members of its group.

    A group of size 1 has no leave-one-out baseline; its advantage is 0.
    """
    mean, _, count = _group_stats(rewards, groups)
    r = rewards.double()
    loo = torch.where(count > 1, (count * mean - r) / (count - 1).clamp(min=1), r)
    return (r - loo).to(rewards.dtype)


def group_advantages(
    method: str, rewards: torch.Tensor, groups: torch.Tensor, eps: float = 1e-4
) -> torch.Tensor:
    """(B,) advantage by method name: one of METHODS."""
    if method == "grpo":
        return grpo_advantages(rewards, groups, eps)
    if method == "drgrpo":
        return drgrpo_advantages(rewards, groups)
    if method == "rloo":
        return rloo_advantages(rewards, groups)
    raise ValueError(f"unknown advantage method {method!r}; choose one of {', '.join(METHODS)}")


def broadcast_to_tokens(episode_adv: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) per-token advantage: the episode's value on its action tokens, 0 elsewhere.

    episode_adv (B,); action_mask (B, T) bool.
    """
    return episode_adv[:, None].to(torch.float32) * action_mask.to(torch.float32)
