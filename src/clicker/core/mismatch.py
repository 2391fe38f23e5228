"""Rollout/trainer mismatch: truncated importance weights between the sampling engine's and the
trainer's log-probabilities of the same tokens under the same weights (issue 8).

A sampler that is not the trainer (vLLM, another kernel, bf16 where the trainer is fp32) gives
slightly different probabilities for the tokens it sampled. The PPO ratio is then taken against
the trainer's own log-probs at the sampling weights (recomputed before the update), and each
token's loss is weighted by the truncated ratio of the two engines, w = min(pi_train /
pi_sample, cap): truncated importance sampling (Yao et al. 2025, "Your efficient RL framework
secretly brings you off-policy RL training"; verl's rollout_is). Per token, w corrects each
token; per sequence, w = min(prod_t pi_train / pi_sample, cap) corrects the whole sample (unbiased
up to the truncation, higher variance).
"""

from __future__ import annotations

import math

import torch


def mismatch_weights(train_logp: torch.Tensor, sample_logp: torch.Tensor, mask: torch.Tensor,
                     *, level: str = "token", cap: float = 2.0
                     ) -> tuple[torch.Tensor, dict[str, float]]:
    """(B, T) truncated importance weights (0 off `mask`) and `mismatch/*` statistics.

    train_logp, sample_logp (B, T): log-probs of the sampled tokens under the trainer and the
    sampler. level "token": w_t = min(exp(train_t - sample_t), cap); "sequence": every token of
    a row gets min(exp(sum over the row's tokens), cap). Statistics over masked tokens: `kl`,
    the k1 estimate of KL(sampler || trainer) (mean of sample - train), `abs_logp_diff` (mean
    and `max`), `weight_mean` and `truncated` (fraction of weights at the cap; per row for
    "sequence").
    """
    if level not in ("token", "sequence"):
        raise ValueError(f"mismatch level must be 'token' or 'sequence', got {level!r}")
    if cap <= 0:
        raise ValueError(f"mismatch cap must be > 0, got {cap}")
    m = mask.to(train_logp.dtype)
    d = (train_logp.float() - sample_logp.float()) * m  # log pi_train / pi_sample
    log_cap = math.log(cap)
    if level == "token":
        logw = d.clamp(max=log_cap)
        capped = (d > log_cap) & mask
        truncated = float(capped.sum()) / max(1.0, float(m.sum()))
    else:
        row = d.sum(-1, keepdim=True)
        logw = row.clamp(max=log_cap).expand_as(d)
        has = mask.any(-1)
        truncated = float(((row.squeeze(-1) > log_cap) & has).sum()) / max(1, int(has.sum()))
    w = torch.exp(logw) * m
    n = max(1.0, float(m.sum()))
    stats = {
        "mismatch/kl": float(-d.sum()) / n,
        "mismatch/abs_logp_diff": float(d.abs().sum()) / n,
        "mismatch/abs_logp_diff_max": float(d.abs().max()) if mask.any() else 0.0,
        "mismatch/weight_mean": float(w.sum()) / n,
        "mismatch/truncated": truncated,
    }
    return w, stats
