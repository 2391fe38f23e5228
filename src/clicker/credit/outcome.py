"""Sparse outcome credit: GRPO, Dr.GRPO and RLOO (one scalar per episode, on every token).

Papers: GRPO (Shao et al. 2024), Dr.GRPO (Liu et al. 2025), RLOO (Ahmadian et al. 2024); the
math is in `clicker.core.advantages`. Departure: none; Dr.GRPO's removal of length
normalisation is the loss aggregation `update.aggregation=constant`, set separately.

Run: `clicker train --set credit.sources='{rloo: 1.0}'`.
"""

from __future__ import annotations

from clicker.core.advantages import METHODS, broadcast_to_tokens, group_advantages
from clicker.core.types import Batch
from clicker.credit.base import CreditOutput, CreditSource


class OutcomeCredit(CreditSource):
    def __init__(self, method: str = "grpo", eps: float = 1e-4):
        self.name = method
        self.method = method
        self.eps = eps
        if method not in METHODS:
            raise ValueError(f"unknown outcome credit {method!r}; choose one of {', '.join(METHODS)}")

    def __call__(self, batch: Batch) -> CreditOutput:
        adv = group_advantages(self.method, batch.rewards, batch.groups, self.eps)
        # share of groups whose rewards all tie: they carry no learning signal
        groups = batch.groups.unique()
        flat = sum(
            int(batch.rewards[batch.groups == g].unique().numel() == 1) for g in groups
        )
        metrics = {f"credit/{self.name}/zero_signal_groups": flat / max(1, len(groups))}
        return CreditOutput(broadcast_to_tokens(adv, batch.action_mask).to(adv.device), metrics)
