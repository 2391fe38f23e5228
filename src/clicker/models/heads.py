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
