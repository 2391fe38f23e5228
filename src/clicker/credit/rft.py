"""`rft`: rejection-sampling fine-tuning (STaR, Zelikman et al. 2022; RFT, Yuan et al. 2023).

Sample, keep the verified episodes, fine-tune on them. Expressed as credit: advantage 1 on every
action token of an episode whose reward exceeds the threshold, 0 elsewhere. Through the shared
clipped update at ratio 1 the gradient is exactly the supervised log-likelihood gradient of the
kept tokens (d ratio = ratio * d log pi), so one update serves it like every other method.
Departures: no separate SFT epochs on an accumulating data set (each batch is used once, like
the RL methods, so world-token budgets compare), and with `update.aggregation=token` the loss is
averaged over all action tokens of the batch, so fewer successes mean a smaller step.

Run: `clicker train --set credit.sources='{rft: 1.0}'`.
"""

from __future__ import annotations

from clicker.core.config import RFTConfig
from clicker.core.types import Batch
from clicker.credit.base import CreditOutput, CreditSource


class RFTCredit(CreditSource):
    name = "rft"

    def __init__(self, cfg: RFTConfig):
        self.cfg = cfg

    def __call__(self, batch: Batch) -> CreditOutput:
        keep = (batch.rewards > self.cfg.threshold).float()  # (B,)
        adv = keep[:, None] * batch.action_mask.float()
        return CreditOutput(adv, {"credit/rft/kept": float(keep.mean())})
