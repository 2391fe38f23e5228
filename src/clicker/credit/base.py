"""The `Credit` seam: a batch of episodes in, per-token advantages (B, T) out.

Every credit source (the sparse outcome baselines here; value, Monte-Carlo, implicit PRM,
adjudicators, distillation in later issues) implements `Credit`. A source that owns a model
trains it from the same batch inside `__call__` and exposes its weights through
`state_dict`/`load_state_dict` so checkpoints restore it. Sources compose by weight:
A = sum_i w_i * A_i (`WeightedCredit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from clicker.core.types import Batch


@dataclass(frozen=True)
class CreditOutput:
    advantages: torch.Tensor  # (B, T) float32, 0 off the action mask
    metrics: dict[str, float] = field(default_factory=dict)  # namespaced, e.g. credit/grpo/...


class Credit(Protocol):
    name: str

    def __call__(self, batch: Batch) -> CreditOutput: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class WeightedCredit:
    """A = sum_i w_i * A_i over named sources."""

    name = "weighted"

    def __init__(self, sources: list[tuple[float, Credit]]):
        if not sources:
            raise ValueError("WeightedCredit needs at least one source")
        self.sources = sources

    def __call__(self, batch: Batch) -> CreditOutput:
        total = torch.zeros(batch.shape, dtype=torch.float32, device=batch.input_ids.device)
        metrics: dict[str, float] = {}
        for w, src in self.sources:
            out = src(batch)
            if out.advantages.shape != batch.shape:
                raise ValueError(
                    f"credit source {src.name!r} returned advantages of shape "
                    f"{tuple(out.advantages.shape)}, expected {batch.shape}"
                )
            total += w * out.advantages.to(total)
            metrics.update(out.metrics)
        total *= batch.action_mask.to(total)
        m = batch.action_mask
        metrics["credit/adv_mean"] = float(total[m].mean()) if m.any() else 0.0
        metrics["credit/adv_std"] = float(total[m].std()) if m.sum() > 1 else 0.0
        return CreditOutput(total, metrics)

    def state_dict(self) -> dict:
        return {src.name: src.state_dict() for _, src in self.sources}

    def load_state_dict(self, state: dict) -> None:
        for _, src in self.sources:
            src.load_state_dict(state.get(src.name, {}))
