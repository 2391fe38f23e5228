"""Dyna's planning steps: extra policy updates on imagined episodes only (`dream.dyna_updates`).

Sutton's Dyna-Q does n model-based updates for every real step; here, after each iteration's
real update, the loop calls `imagined_updates`, which `dream.dyna_updates` times dreams a new
batch (`Dreamer.imagine`, the policy as it now is, the same problems and confidence gate as the
Dyna episodes of the real batch), runs credit on it and updates the policy on it alone. This is
where a world model can buy updates without world tokens: `dyna_updates: 3` makes four policy
updates per iteration's real interaction. The imagined batch's advantages are scaled by
`dyna_weight` (`weigh_dreams`), as imagined rows of the real batch are.

Credit sources run on imagined batches as on real ones; a source that learns (the value model)
learns from dreams too, as in Dyna, where the model-based updates train the same value function.
Any world tokens a source spends on a dream batch (Monte-Carlo continuations are played in the
real world) are returned and counted as world tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from clicker.core.config import Config
from clicker.core.types import Batch
from clicker.train.update import policy_update


def imagined_updates(dreamer: Any, credit: Callable[[Batch], Any], policy: Any,
                     optimizer: torch.optim.Optimizer, cfg: Config, iteration: int,
                     seen: list[int] | None, generator: torch.Generator | None,
                     reference: torch.nn.Module | None = None,
                     update_generator: torch.Generator | None = None
                     ) -> tuple[dict[str, float], int]:
    """`cfg.dream.dyna_updates` rounds of dream, credit, update (none before the dreamer's
    warm-up is over); returns `dream/dyna_updates/*` metrics (means over the rounds that had a
    batch) and the world tokens credit spent. A round whose dreams the confidence gate dropped
    entirely makes no update (counted in `skipped`)."""
    if not dreamer.ready:
        return {}, 0
    updates, temperature = cfg.dream.dyna_updates, cfg.rollout.temperature or 1.0
    done, skipped, world_tokens, imagined = 0, 0, 0, dreamer.imagined_tokens
    sums: dict[str, float] = {}
    for r in range(1, updates + 1):
        dreams, m = dreamer.imagine(iteration, cfg.rollout.prompts, generator, seen, round=r)
        if not dreams:
            skipped += 1
            continue
        batch = Batch.from_episodes(dreams, policy.pad_id)
        out = credit(batch)
        world_tokens += out.world_tokens
        advantages = dreamer.weigh(batch, out.advantages)
        result = policy_update(policy, optimizer, batch, advantages, cfg.update,
                               temperature=temperature,
                               reference=reference, generator=update_generator,
                               distill=out.distill)
        done += 1
        mask = batch.action_mask
        row = {"episodes": len(dreams), "success": m.get("dream/dyna/success", 0.0),
               "loss": result.metrics.get("loss/policy", 0.0),
               "adv_abs": float(advantages.abs().sum() / max(1, int(mask.sum())))}
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    metrics = {f"dream/dyna_updates/{k}": v / max(1, done) for k, v in sums.items()}
    metrics |= {"dream/dyna_updates/updates": float(done),
                "dream/dyna_updates/skipped": float(skipped),
                "dream/dyna_updates/imagined_tokens": float(dreamer.imagined_tokens - imagined),
                "dream/imagined_tokens": float(dreamer.imagined_tokens)}
    return metrics, world_tokens


def after_update(dreamer: Any, credit: Callable[[Batch], Any], episodes: list, policy: Any,
                 optimizer: torch.optim.Optimizer, cfg: Config, iteration: int,
                 seen: list[int] | None, generator: torch.Generator | None,
                 reference: torch.nn.Module | None = None,
                 update_generator: torch.Generator | None = None
                 ) -> tuple[dict[str, float], int]:
    """The policy updates a world model buys after an iteration's real one: Dyna's planning
    steps (`dream.dyna_updates`), then one on branched dreams from this iteration's real
    `episodes` (`dream.branch`, `clicker.dream.branch`). Returns their metrics and the world
    tokens credit spent on dreams."""
    from clicker.dream.branch import branched_update

    metrics, spent = {}, 0
    if cfg.dream.dyna_updates:
        metrics, spent = imagined_updates(dreamer, credit, policy, optimizer, cfg, iteration,
                                          seen, generator, reference, update_generator)
    if cfg.dream.branch:
        metrics |= branched_update(dreamer, episodes, policy, optimizer, cfg, iteration,
                                   generator, reference, update_generator)
    if metrics:
        metrics["dream/imagined_tokens"] = float(dreamer.imagined_tokens)
    return metrics, spent
