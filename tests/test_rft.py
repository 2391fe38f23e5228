"""Rejection-sampling fine-tuning as credit: 1 on the kept episodes' action tokens, 0 elsewhere,
which through the shared update at ratio 1 is the supervised gradient of the kept tokens."""

from __future__ import annotations

import torch

from clicker.core.config import RFTConfig, UpdateConfig
from clicker.core.losses import clipped_pg_loss
from clicker.core.types import Batch, Episode, Turn
from clicker.credit.rft import RFTCredit


def _ep(reward: float) -> Episode:
    return Episode(tokens=[5, 6, 7, 8], action_mask=[False, True, True, False],
                   logprobs=[0.0, -1.0, -2.0, 0.0], prompt="p",
                   turns=(Turn("ab", "obs", reward, action_span=(1, 3)),))


def test_rft_keeps_only_verified_episodes():
    batch = Batch.from_episodes([_ep(1.0), _ep(0.0), _ep(0.7), _ep(0.5)], pad_id=0)
    out = RFTCredit(RFTConfig(threshold=0.5))(batch)
    assert out.advantages.tolist() == [[0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    assert out.metrics["credit/rft/kept"] == 0.5


def test_rft_gradient_is_the_supervised_gradient_of_kept_tokens():
    batch = Batch.from_episodes([_ep(1.0), _ep(0.0)], pad_id=0)
    adv = RFTCredit(RFTConfig())(batch).advantages
    logp = batch.old_logprobs.clone().requires_grad_(True)  # on-policy: ratio 1
    cfg = UpdateConfig()
    loss, _ = clipped_pg_loss(logp, batch.old_logprobs, adv, batch.action_mask,
                              clip_low=cfg.clip_low, clip_high=cfg.clip_high, aggregation="token")
    loss.backward()
    # token mean over the 4 action tokens of the batch: d(-mean log p of kept tokens)
    expect = -torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32) / 4
    assert torch.allclose(logp.grad, expect)
