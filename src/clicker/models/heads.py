"""Scalar heads: one number per position from a causal LM's last hidden state.

Value models (the clicker), adjudicators and judges are all "a transformer that reads a prefix
and says one number". Two shapes, selectable per credit source:

- `ScalarModel`: its own backbone, a deep copy of a causal LM's trunk (usually the initial
  policy, so it starts with the policy's features), plus a linear head; trained end to end.
- `PolicyHead`: a small MLP head on the *live* policy's last hidden state, read without
  gradient, so training the head never moves the policy; cheap, but its features drift as the
  policy learns.

Both return raw per-position outputs (B, T) in float32; value models read them as V, judges
as logits.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _hidden_size(model: nn.Module) -> int:
    return int(model.config.hidden_size)


class ScalarModel(nn.Module):
    """Own trunk (copied from `causal_lm.base_model`) + linear head. forward -> (B, T) float32."""

    def __init__(self, causal_lm: nn.Module, init_bias: float = 0.0):
        super().__init__()
        self.trunk = copy.deepcopy(causal_lm.base_model).float()
        self.trunk.requires_grad_(True)
        self.head = nn.Linear(_hidden_size(causal_lm), 1)
        nn.init.zeros_(self.head.weight)  # start every state at init_bias: no early-token bias
        nn.init.constant_(self.head.bias, init_bias)
        self.to(next(causal_lm.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.trunk(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state
        return self.head(h.float()).squeeze(-1)


class PolicyHead(nn.Module):
    """MLP head on the live policy's detached last hidden state. forward -> (B, T) float32.

    The policy is held by reference and not registered as a submodule, so `state_dict` and
    `parameters` cover the head only.
    """

    def __init__(self, causal_lm: nn.Module, init_bias: float = 0.0, width: int = 128):
        super().__init__()
        self._policy = [causal_lm]  # a list hides it from nn.Module registration
        d = _hidden_size(causal_lm)
        self.head = nn.Sequential(nn.Linear(d, width), nn.GELU(), nn.Linear(width, 1))
        nn.init.zeros_(self.head[2].weight)
        nn.init.constant_(self.head[2].bias, init_bias)
        self.to(next(causal_lm.parameters()).device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        lm = self._policy[0]
        with torch.no_grad():
            out = lm.base_model(input_ids=input_ids, attention_mask=attention_mask.long())
        return self.head(out.last_hidden_state.detach().float()).squeeze(-1)


def make_scalar_model(kind: str, causal_lm: nn.Module, init_bias: float = 0.0) -> nn.Module:
    """`separate` -> ScalarModel (own trunk), `head` -> PolicyHead (on the live policy)."""
    if kind == "separate":
        return ScalarModel(causal_lm, init_bias)
    if kind == "head":
        return PolicyHead(causal_lm, init_bias)
    raise ValueError(f"unknown scalar model kind {kind!r}; choose separate or head")


def batched_forward(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, micro: int = 64
) -> torch.Tensor:
    """model(input_ids, attention_mask) in chunks of `micro` rows, concatenated: (B, T)."""
    return torch.cat([
        model(input_ids[i:i + micro], attention_mask[i:i + micro])
        for i in range(0, input_ids.shape[0], micro)
    ])


def fit_positions(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    *,
    loss: str = "mse",
    epochs: int = 1,
    micro: int = 32,
    max_grad_norm: float = 1.0,
    shift: bool = True,
) -> float:
    """Train a scalar model toward per-position targets; returns the mean loss of the last epoch.

    input_ids, attention_mask (B, T); targets, weights (B, T) float (weight 0 = no target).
    shift=True trains state values: the target at t is matched by the output at t - 1 (the
    state before token t, `clicker.core.returns.state_values`). loss: "mse" on raw outputs,
    or "bce" with the outputs as logits and the targets as (soft) labels in [0, 1].
    """
    model.train()
    last = 0.0
    B = input_ids.shape[0]
    for _ in range(epochs):
        total, n = 0.0, 0.0
        for i in range(0, B, micro):
            w = weights[i:i + micro].float()
            if w.sum() <= 0:
                continue
            out = model(input_ids[i:i + micro], attention_mask[i:i + micro])
            if shift:
                out = torch.cat([torch.zeros_like(out[:, :1]), out[:, :-1]], dim=1)
            y = targets[i:i + micro].float()
            if loss == "mse":
                per = (out - y) ** 2
            elif loss == "bce":
                per = nn.functional.binary_cross_entropy_with_logits(out, y.clamp(0, 1),
                                                                     reduction="none")
            else:
                raise ValueError(f"unknown loss {loss!r}; choose mse or bce")
            value = (per * w).sum() / w.sum()
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            optimizer.step()
            total += float(value.detach()) * float(w.sum())
            n += float(w.sum())
        last = total / max(n, 1e-9)
    model.eval()
    return last
