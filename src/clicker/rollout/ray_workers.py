"""Rollout workers as Ray actors (issue 8): `clicker train --ray auto`.

Each worker is an actor holding a policy replica and its own world (envs and verifier). Every
iteration the driver puts the trainer's weights into Ray's object store once, and each worker
loads them with the iteration number as their version; a shard is sampled only by a worker
whose version is the one asked for (else it raises), so no worker samples with stale weights
unknowingly. The iteration's prompts are cut into `rollout.shards` shards
(`clicker.rollout.shards`), queued onto the workers; a worker that dies (its process killed,
its node lost) is replaced by a new actor, which loads the same weights and samples the lost
shards again with the same seeds, so the iteration completes with every episode it was
configured for, and with the same episodes it would have had.

Connecting: `--ray auto` (`rollout.ray: auto`) joins the cluster this machine belongs to
(`ray start --head` here, `ray start --address <head>:6379` on the others) and starts a local
one when there is none; `local` always starts a local one; anything else is a cluster address.
Workers are started with this process's CLICKER_HOME, so they find the same cached models.

Credit sources with models run in actors of their own with `credit.on_workers`
(`clicker.credit.remote`), and so does the world model of a Dyna run (`clicker.dream.remote`),
reading the weights this pool puts in the object store. Not yet on workers: the lessons context
and dream-testing (`dream.plan`); the loop refuses those combinations with a clear error.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from clicker.core.types import Episode
from clicker.rollout.runner import RolloutSettings
from clicker.rollout.shards import run_shard, shard_spans


class StaleWeights(RuntimeError):
    """A worker was asked to sample with weights other than the ones it holds."""


class ReplicaActor:
    """What every actor of a run shares: a policy replica from the run's model config, its
    own world, and versioned weights (`check` refuses any other version)."""

    def __init__(self, model: dict[str, Any], task: dict[str, Any], threads: int = 1,
                 seed: int | None = None):
        torch.set_num_threads(max(1, threads))
        from clicker.models.policy import Policy
        from clicker.tasks import make_world

        if seed is not None:
            torch.manual_seed(seed)  # as the trainer does before it builds its models
        self.policy = Policy.load(model["path"], device=model["device"], dtype=model["dtype"],
                                  tiny_seed=model["tiny_seed"], tiny_recipe=model["tiny_recipe"])
        self.world = make_world(task["name"], **task["args"])
        self.version = -1

    def pid(self) -> int:
        return os.getpid()

    def set_weights(self, version: int, state: dict[str, torch.Tensor]) -> int:
        self.policy.model.load_state_dict(state)
        self.version = version
        return version

    def check(self, version: int, what: str = "samples") -> None:
        if version != self.version:
            raise StaleWeights(f"{what} asked for weights v{version}, holding v{self.version}")


class RolloutWorker(ReplicaActor):
    """The rollout actor's class (wrapped by `ray.remote` when the pool starts)."""

    def run(self, version: int, indices: list[int], span: tuple[int, int],
            settings: RolloutSettings, seed: int, shard: int) -> list[Episode]:
        self.check(version)
        return run_shard(self.policy, self.world, indices, span, settings, seed=seed,
                         iteration=version, shard=shard)


def connect(address: str) -> bool:
    """Join or start a Ray cluster (see the module doc); True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False}
    if address == "local":
        ray.init(**quiet)
        return True
    try:
        ray.init(address=address, log_to_driver=False)
        return False
    except ConnectionError:
        if address != "auto":
            raise
        ray.init(**quiet)  # no running cluster: a local one
        return True


class RayRollouts:
    """A pool of `workers` rollout actors for one training run."""

    def __init__(self, model: dict[str, Any], task: dict[str, Any], *, workers: int,
                 address: str = "auto", threads: int = 1, cpus_per_worker: float = 1.0):
        import ray

        if workers < 1:
            raise ValueError(f"rollout.workers must be >= 1, got {workers}")
        self.started = connect(address)
        env = {"CLICKER_HOME": os.environ["CLICKER_HOME"]} if "CLICKER_HOME" in os.environ else {}
        self._actor = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(RolloutWorker)
        self._options = {"runtime_env": {"env_vars": env}} if env else {}
        self._args = (model, task, threads)
        self.workers = [self._new() for _ in range(workers)]
        self.replaced = 0  # workers replaced after dying, over the run
        self.weights: tuple[int, Any] = (-1, None)  # (version, object ref) of the last weights

    @property
    def options(self) -> dict:
        """Actor options (the workers' environment), for other actors of the run."""
        return self._options

    def _new(self):
        return self._actor.options(**self._options).remote(*self._args)

    def rollouts(self, state: dict[str, torch.Tensor], version: int, indices: list[int],
                 settings: RolloutSettings, *, seed: int, shards: int) -> list[Episode]:
        """Every shard's episodes, in prompt order, sampled with `state` as weights `version`."""
        import ray
        from ray.exceptions import RayActorError

        weights = ray.put({k: v.detach().cpu() for k, v in state.items()})
        self.weights = (version, weights)
        for w in self.workers:
            w.set_weights.remote(version, weights)  # an actor runs its calls in order
        spans = shard_spans(len(indices), shards)
        owner: dict[Any, tuple[int, int]] = {}  # pending result -> (shard, worker slot)

        def submit(s: int, slot: int) -> None:
            ref = self.workers[slot].run.remote(version, indices, spans[s], settings, seed, s)
            owner[ref] = (s, slot)

        for s in range(len(spans)):
            submit(s, s % len(self.workers))
        done: dict[int, list[Episode]] = {}
        while owner:
            ready, _ = ray.wait(list(owner), num_returns=1)
            s, slot = owner.pop(ready[0])
            try:
                done[s] = ray.get(ready[0])
            except RayActorError:  # the worker died: a new one, the same weights, the shard again
                self.workers[slot] = self._new()
                self.workers[slot].set_weights.remote(version, weights)
                self.replaced += 1
                for ref, (s2, slot2) in list(owner.items()):  # its queued shards died with it
                    if slot2 == slot:
                        del owner[ref]
                        submit(s2, slot)
                submit(s, slot)
        return [e for s in range(len(spans)) for e in done[s]]

    def close(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
        self.workers = []
        if self.started:
            ray.shutdown()
