"""The world model on a Ray worker (issue 8): Dyna with `rollout.ray`.

Under `rollout.ray`, a run that dreams with Dyna (`dream.dyna`, without `dream.plan`) builds
its `Dreamer` inside a Ray actor (`DreamWorker`): the world model trains on each iteration's real
episodes there, and the imagined episodes are played there, by the actor's policy replica (the
iteration's weights, from the object store with the rollout workers' version check) against the
world model. The trainer holds a `RemoteDreamer` with the loop's `Dreamer` interface. The actor
samples dreams with its own generator, seeded as the trainer's own: with `rollout.shards` (the
Ray default), the in-process run uses that generator for nothing else, so a run on Ray dreams
the same dreams (`tests/test_ray.py`).

Not yet: planning (`dream.plan`) on Ray, which would need the world model and the value model on
every rollout worker; the loop refuses it.
"""

from __future__ import annotations

from typing import Any

import torch

from clicker.core.types import Batch, Episode
from clicker.rollout.ray_workers import ReplicaActor


class DreamWorker(ReplicaActor):
    """The actor's class: a `Dreamer` with its own policy replica, world and generator."""

    def __init__(self, dream: dict[str, Any], rollout: dict[str, Any], model: dict[str, Any],
                 task: dict[str, Any], seed: int, threads: int = 1):
        super().__init__(model, task, threads, seed)
        from clicker.core.config import DreamConfig, RolloutConfig
        from clicker.dream.dreamer import Dreamer

        self.dreamer = Dreamer(DreamConfig.model_validate(dream),
                               RolloutConfig.model_validate(rollout), self.policy, self.world,
                               seed=seed)
        self.generator = torch.Generator(device=self.policy.device).manual_seed(seed)

    def observe(self, episodes: list[Episode]) -> dict[str, float]:
        return self.dreamer.observe(episodes)

    def imagine(self, version: int, iteration: int, group_offset: int, seen: list[int] | None
                ) -> tuple[list[Episode], dict[str, float], int]:
        self.check(version, "dreams")
        dreams, metrics = self.dreamer.imagine(iteration, group_offset, self.generator, seen)
        return dreams, metrics, self.dreamer.imagined_tokens

    def state_dict(self) -> dict:
        state = self.dreamer.state_dict()
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.dreamer.load_state_dict(state)
        if "generator" in state:
            self.generator.set_state(state["generator"])


class RemoteDreamer:
    """The loop's handle on a `DreamWorker` (the `Dreamer` methods the loop calls)."""

    def __init__(self, cfg, rollout, model: dict[str, Any], task: dict[str, Any], *, seed: int,
                 pool: Any, threads: int = 1):
        import ray

        if cfg.plan:
            raise ValueError("dream.plan does not run with rollout.ray yet (it would need the "
                             "world model on every rollout worker); use dream.dyna alone")
        self.cfg, self.pool = cfg, pool
        actor = ray.remote(num_cpus=0, max_restarts=0)(DreamWorker)  # it blocks the trainer
        self.actor = actor.options(**pool.options).remote(
            cfg.model_dump(), rollout.model_dump(), model, task, seed, threads)
        self.imagined_tokens = 0
        self._version = -1

    def plan(self) -> None:
        return None

    def plan_metrics(self) -> dict[str, float]:
        return {}

    def observe(self, episodes: list[Episode]) -> dict[str, float]:
        import ray

        return ray.get(self.actor.observe.remote(episodes))

    def imagine(self, iteration: int, group_offset: int, generator: torch.Generator | None,
                seen: list[int] | None = None) -> tuple[list[Episode], dict[str, float]]:
        """As `Dreamer.imagine`, on the worker with its generator (`generator` is not used)."""
        import ray

        version, ref = self.pool.weights
        if version != self._version:
            self.actor.set_weights.remote(version, ref)
            self._version = version
        dreams, metrics, self.imagined_tokens = ray.get(
            self.actor.imagine.remote(version, iteration, group_offset, seen))
        return dreams, metrics

    def weigh(self, batch: Batch, advantages: torch.Tensor) -> torch.Tensor:
        from clicker.dream.dreamer import weigh_dreams

        return weigh_dreams(batch, advantages, self.cfg.dyna_weight)

    def state_dict(self) -> dict:
        import ray

        return ray.get(self.actor.state_dict.remote())

    def load_state_dict(self, state: dict) -> None:
        import ray

        ray.get(self.actor.load_state_dict.remote(state))
        self.imagined_tokens = int(state.get("imagined_tokens", 0))
