"""Sharded rollouts: an iteration's prompts cut into fixed shards, each sampled with its own seed.

With `rollout.shards = S` the prompts of an iteration are cut into S contiguous shards, and
shard s is sampled by `run_shard` with a generator seeded from (seed, iteration, s) alone. A
shard's episodes then depend on nothing but the weights and that seed: not on which process
samples it, nor on how many workers there are, nor on whether a shard was sampled again after
its worker died. So an in-process run (`shards` run one after the other) and a Ray run with any
number of workers produce the same episodes, token for token (same batch shapes, same kernels,
same draws), which `tests/test_ray.py` checks. `shards = 0` (the default) keeps the unsharded
path: one batch for all prompts with the loop's own generator.
"""

from __future__ import annotations

import torch

from clicker.core.types import Episode
from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.base import World


def shard_spans(n: int, shards: int) -> list[tuple[int, int]]:
    """[lo, hi) of each of `shards` contiguous shards of n prompts (sizes differ by at most 1;
    empty shards are dropped)."""
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    spans = [(n * s // shards, n * (s + 1) // shards) for s in range(shards)]
    return [(lo, hi) for lo, hi in spans if hi > lo]


def shard_seed(seed: int, iteration: int, shard: int) -> int:
    return (seed * 1_000_003 + iteration) * 10_007 + shard


def run_shard(policy: Policy, world: World, indices: list[int], span: tuple[int, int],
              settings: RolloutSettings, *, seed: int, iteration: int, shard: int,
              sampler=None, **kw) -> list[Episode]:
    """The episodes of prompts indices[lo:hi] (groups numbered from lo, as in the whole batch);
    `kw` goes to `run_episodes` (a lessons `context`, a `planner`)."""
    lo, hi = span
    gen = torch.Generator(device=policy.device).manual_seed(shard_seed(seed, iteration, shard))
    return run_episodes(policy, world, "train", indices[lo:hi], settings, gen, sampler,
                        group_offset=lo, **kw)
