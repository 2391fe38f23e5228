"""Returns, TD(lambda), GAE and potential-based shaping over the action tokens of an episode.

Pure functions on padded (B, T) tensors. The time axis of credit is the sequence of *action*
tokens of each row (`mask`): observation and padding positions are skipped, so the state after
the last token of one turn is the state before the first token of the next (the observation is
part of that transition). A value `values[b, t]` is V(s_t), the state just before action token t
is produced; the state after a row's last action token is terminal (V = 0).

- Potential-based shaping (Ng, Harada and Russell 1999): r'_t = r_t + gamma * Phi(s_{t+1}) -
  Phi(s_t). With gamma = 1 the shaped rewards of an episode sum to R - Phi(s_0): the proxy
  moves credit in time but cannot create new optima.
- GAE (Schulman et al. 2016) is the (gamma*lambda)-discounted sum of shaped rewards with Phi = V;
  TD(lambda) targets are GAE + V. lambda = 1 gives Monte-Carlo returns, lambda = 0 the one-step
  TD error, the "click" of a dopamine-like prediction error (Schultz, Dayan, Montague 1997).
- VAPO (arXiv 2504.05118): length-adaptive lambda = 1 - 1 / (alpha * length).
- Steps: the same functions run on a (B, S) time axis of steps (turns of a multi-turn episode,
  or k-token chunks) after `to_steps`; `from_steps` gives every token its step's value.
"""

from __future__ import annotations

import torch


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """(B, T) generalised advantage estimates on the masked positions, 0 elsewhere.

    rewards (B, T) float: reward received after the action token at t (0 off the mask);
    values  (B, T) float: V(s_t) at masked positions; mask (B, T) bool: action tokens;
    lam: a float, or a (B,) tensor of per-row lambdas (VAPO's length-adaptive lambda).
    """
    B, T = rewards.shape
    r, v = rewards.float(), values.float()
    lam_t = torch.as_tensor(lam, dtype=torch.float32, device=r.device).expand(B)
    adv = torch.zeros_like(r)
    carry = torch.zeros(B, dtype=torch.float32, device=r.device)  # A_{t+1}
    next_v = torch.zeros(B, dtype=torch.float32, device=r.device)  # V(s_{t+1}); 0 = terminal
    for t in range(T - 1, -1, -1):
        m = mask[:, t]
        delta = r[:, t] + gamma * next_v - v[:, t]
        a = delta + gamma * lam_t * carry
        adv[:, t] = torch.where(m, a, torch.zeros_like(a))
        carry = torch.where(m, a, carry)
        next_v = torch.where(m, v[:, t], next_v)
    return adv


def td_lambda_targets(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
    lam: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """(B, T) TD(lambda) value targets G^lambda_t = A_t + V(s_t) on the mask, 0 elsewhere."""
    return (gae(rewards, values, mask, gamma, lam) + values.float()) * mask


def shaped_rewards(
    rewards: torch.Tensor, potential: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0
) -> torch.Tensor:
    """(B, T) r_t + gamma * Phi(s_{t+1}) - Phi(s_t) on the mask (Phi after the last token = 0)."""
    return gae(rewards, potential, mask, gamma, 0.0)


def returns_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """(B, T) sum_{k >= t} gamma^(k-t) r_k over the masked positions (GAE with V = 0, lam = 1)."""
    return gae(rewards, torch.zeros_like(rewards, dtype=torch.float32), mask, gamma, 1.0)


def vapo_lambda(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """(B,) VAPO's length-adaptive lambda 1 - 1/(alpha * length), clamped to [0, 1].

    lengths (B,) number of action tokens per row.
    """
    return (1.0 - 1.0 / (alpha * lengths.float().clamp(min=1))).clamp(0.0, 1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(B, T) x standardised over its masked entries (0 elsewhere); unchanged if < 2 entries."""
    if mask.sum() < 2:
        return x * mask
    sel = x[mask]
    return ((x - sel.mean()) / (sel.std() + eps)) * mask


def state_values(per_position: torch.Tensor) -> torch.Tensor:
    """(B, T) V(s_t) from a model's per-position outputs (B, T).

    A causal model's output at position t-1 has read tokens [0, t), i.e. the state in which
    token t is produced; so V(s_t) = output[t - 1] (0 at t = 0, never an action).
    """
    return torch.cat([torch.zeros_like(per_position[:, :1]), per_position[:, :-1]], dim=1)


def step_starts(
    action_mask: list[bool], turn_spans: list[tuple[int, int]], step_tokens: int, multi_turn: bool
) -> list[int]:
    """Token indices where a step begins: each turn's first action token (multi-turn worlds),
    or every `step_tokens` action tokens of the completion (single-turn worlds).

    The first start is the episode's first action token, the state s_0 of the prompt.
    """
    if multi_turn:
        return [s for s, e in turn_spans if e > s]
    idx = [i for i, m in enumerate(action_mask) if m]
    return idx[::step_tokens]


def step_index(starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index the steps of each row from a (B, T) bool mask of step starts.

    Returns (sid, pos, valid): sid (B, T) long, the step each token belongs to (the latest start
    at or before it; tokens before the first start belong to step 0); pos (B, S) long, the token
    index where each step starts, in order (T - 1 where padded); valid (B, S) bool, real steps.
    S = the most steps of any row (at least 1).
    """
    B, T = starts.shape
    sid = (starts.long().cumsum(1) - 1).clamp(min=0)
    n = starts.sum(1)
    S = max(int(n.max()) if B else 0, 1)
    ar = torch.arange(T, device=starts.device).expand(B, T)
    pos = torch.where(starts, ar, torch.full_like(ar, T)).sort(dim=1).values[:, :S]
    valid = torch.arange(S, device=starts.device)[None, :] < n[:, None]
    return sid, pos.clamp(max=T - 1), valid


def to_steps(x: torch.Tensor, sid: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, S) per-step sums of a (B, T) per-token quantity (e.g. rewards); 0 on padded steps."""
    out = torch.zeros(valid.shape, dtype=torch.float32, device=x.device)
    return out.scatter_add(1, sid, x.float()) * valid


def from_steps(x: torch.Tensor, sid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T) each masked token gets its step's value from (B, S) x; 0 off the mask."""
    return x.gather(1, sid) * mask


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var(target - pred) / Var(target) over flat tensors (nan when Var(target) = 0)."""
    var = target.float().var()
    if target.numel() < 2 or var == 0:
        return float("nan")
    return float(1 - (target.float() - pred.float()).var() / var)


def calibration_error(prob: torch.Tensor, outcome: torch.Tensor, bins: int = 10) -> float:
    """Expected calibration error of probabilities vs 0/1 (or soft) outcomes, equal-width bins."""
    p, o = prob.float().flatten().clamp(0, 1), outcome.float().flatten()
    if p.numel() == 0:
        return float("nan")
    which = (p * bins).long().clamp(max=bins - 1)
    err = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            err += float(sel.sum()) / p.numel() * abs(float(p[sel].mean() - o[sel].mean()))
    return err
