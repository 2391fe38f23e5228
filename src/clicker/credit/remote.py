"""Credit sources on Ray workers (issue 8): `credit.on_workers: [value, ...]` with `rollout.ray`.

A source named there is built inside its own Ray actor (`CreditWorker`) instead of the trainer's
process: its models (the value model, the adjudicators, the judge) live, train and run their
forward passes there, on that worker's CPU or GPU, and the trainer holds only a `RemoteSource`
that sends each batch and gets the source's `CreditOutput` back. The actor builds its own policy
replica, world and `CreditContext` from the run's config, seeded as the trainer seeds its own, so
a deterministic source (value, adjudicators) computes on a worker what it would in process
(`tests/test_ray.py` checks the value source's metrics and state over iterations); one that
samples (Monte-Carlo continuations) draws from the worker's generator, not the trainer's.
Sources that read the live policy (the value head on its hidden states, Monte-Carlo
continuations, the distillation teacher) get the iteration's weights from the object store,
where the rollout workers get them, with the same version check.

Checkpoints hold the worker's state (fetched at save time) and resume restores it there. A credit
worker that dies fails the run (its models' state since the last checkpoint is gone; resuming
restores it); rollout workers, which hold no state, are replaced instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from clicker.core.types import Batch
from clicker.credit.base import CreditContext, CreditOutput, CreditSource
from clicker.rollout.ray_workers import ReplicaActor
from clicker.rollout.runner import RolloutSettings


class CreditWorker(ReplicaActor):
    """The actor's class: one credit source with its own policy replica, world and context."""

    def __init__(self, name: str, credit: dict[str, Any], model: dict[str, Any],
                 task: dict[str, Any], settings: RolloutSettings, seed: int, threads: int = 1):
        super().__init__(model, task, threads, seed)
        from clicker.core.credit_config import CreditConfig
        from clicker.credit import CREDITS

        generator = torch.Generator(device=self.policy.device).manual_seed(seed)
        self.ctx = CreditContext(self.policy, self.world, settings, generator, seed=seed)
        self.source = CREDITS[name](CreditConfig.model_validate(credit), self.ctx)

    def compute(self, version: int, iteration: int, batch: Batch) -> CreditOutput:
        self.check(version, "credit")
        self.ctx.iteration = iteration
        return _to_cpu(self.source(batch.to(self.policy.device)))

    def state_dict(self) -> dict:
        return _tree_cpu(self.source.state_dict())

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state)

    def report(self) -> dict[str, str | bytes]:
        return self.source.report()


def _tree_cpu(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    if isinstance(x, dict):
        return {k: _tree_cpu(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_tree_cpu(v) for v in x)
    return x


def _to_cpu(out: CreditOutput) -> CreditOutput:
    distill = out.distill.to("cpu") if out.distill is not None else None
    return CreditOutput(out.advantages.detach().cpu(), out.metrics, out.world_tokens,
                        {k: v.detach().cpu() for k, v in out.parts.items()}, distill)


class RemoteSource(CreditSource):
    """The trainer's handle on a source running in a `CreditWorker` actor."""

    def __init__(self, name: str, actor: Any, ctx: CreditContext,
                 weights: Callable[[], tuple[int, Any]]):
        self.name = name
        self.actor = actor
        self.ctx = ctx  # the trainer's: its iteration and device
        self.weights = weights  # -> (version, object ref) of the weights rollouts sampled with
        self._version = -1

    def __call__(self, batch: Batch) -> CreditOutput:
        import ray

        version, ref = self.weights()
        if version != self._version:  # an actor runs its calls in order: set, then compute
            self.actor.set_weights.remote(version, ref)
            self._version = version
        out = ray.get(self.actor.compute.remote(version, self.ctx.iteration, batch.to("cpu")))
        dev = batch.input_ids.device
        return CreditOutput(out.advantages.to(dev), out.metrics, out.world_tokens, out.parts,
                            out.distill.to(dev) if out.distill is not None else None)

    def state_dict(self) -> dict:
        import ray

        return ray.get(self.actor.state_dict.remote())

    def load_state_dict(self, state: dict) -> None:
        import ray

        ray.get(self.actor.load_state_dict.remote(state))

    def report(self) -> dict[str, str | bytes]:
        import ray

        return ray.get(self.actor.report.remote())


def remote_sources(names: list[str], credit: dict[str, Any], model: dict[str, Any],
                   task: dict[str, Any], settings: RolloutSettings, ctx: CreditContext,
                   weights: Callable[[], tuple[int, Any]], *, threads: int = 1,
                   options: dict | None = None) -> dict[str, RemoteSource]:
    """One actor per named source (Ray must be connected: the rollout pool does that)."""
    import ray

    # no CPU slot: a credit call blocks the trainer, so the two never compute at once
    actor = ray.remote(num_cpus=0, max_restarts=0)(CreditWorker)
    return {name: RemoteSource(name, actor.options(**(options or {})).remote(
                name, credit, model, task, settings, ctx.seed, threads), ctx, weights)
            for name in names}
