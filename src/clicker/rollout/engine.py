"""Rollout engines: what the loop samples with (issue 8).

The episode runner needs `sample(prompts, ...)` (and, for multi-turn cache reuse, `session()`);
the loop also calls `sync(version)` before each iteration's rollouts, so that an engine holding
its own copy of the weights (another dtype or device, a separate process, an external server
such as vLLM) samples with the trainer's current weights and says which ones (`version`). An
engine registers a factory under a name (`register_engine`) and `rollout.engine` picks it.

Built in:
- `hf` (`HFEngine`): the batched KV-cache `Sampler` on the trainer's own module (sync only
  bumps the version), or, with `rollout.engine_dtype` / `rollout.engine_device`, on a replica
  in that dtype or on that device whose weights are copied from the trainer at each sync: for
  example bf16 sampling for an fp32 trainer. Sampler and trainer then differ numerically, which
  `update.mismatch` corrects (`mismatch/*` shows by how much).

vLLM is not built in: it is not installed here, and an engine that cannot be tested is not
shipped. An engine for it implements `sample` with `LLM.generate` (log-probs of the sampled
tokens requested), `sync` by loading the trainer's state dict into the vLLM model, and no
`session` (vLLM's prefix cache does that work).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch

from clicker.models.policy import Policy
from clicker.rollout.sampler import Sampler, Samples


class RolloutEngine(Protocol):
    """What the loop and the episode runner sample with."""

    version: int  # the trainer iteration whose weights it samples with

    def sample(self, prompts: list[list[int]], *, num_samples: int = 1,
               max_new_tokens: int = 64, temperature: float = 1.0, top_p: float = 1.0,
               stop: Sequence[str] = (), generator: torch.Generator | None = None) -> Samples: ...

    def sync(self, version: int) -> None:
        """Sample with the trainer's current weights from now on, recorded as `version`."""
        ...


class HFEngine(Sampler):
    """`Sampler` with weight sync (see the module docstring). `dtype` / `device`: sample on a
    replica in that dtype / on that device instead of the trainer's own module."""

    def __init__(self, policy: Policy, *, dtype: str | None = None, device: str | None = None):
        trainer = policy.model
        model = trainer
        if dtype is not None or device is not None:
            model = copy.deepcopy(trainer).eval().requires_grad_(False)
            model = model.to(device=device or policy.device,
                             dtype=getattr(torch, dtype) if dtype else None)
        super().__init__(model, policy.tokenizer)
        self.trainer = trainer
        self.version = 0

    @property
    def replica(self) -> bool:
        return self.model is not self.trainer

    @torch.no_grad()
    def sync(self, version: int) -> None:
        if self.replica:
            mine = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
            theirs = dict(self.trainer.named_parameters()) | dict(self.trainer.named_buffers())
            if mine.keys() != theirs.keys():
                raise RuntimeError("the sampling replica and the trainer have different tensors")
            for name, t in mine.items():  # casts to the replica's dtype and device; a sharded
                src = theirs[name]  # (FSDP) trainer's tensors are gathered whole, on every rank
                t.copy_(src.full_tensor() if hasattr(src, "full_tensor") else src)
        self.version = version


ENGINES: dict[str, Callable[..., Any]] = {
    "hf": lambda policy, dtype=None, device=None: HFEngine(policy, dtype=dtype, device=device),
}


def register_engine(name: str, factory: Callable[..., Any]) -> None:
    """Make `rollout.engine: <name>` build `factory(policy, dtype=..., device=...)`."""
    ENGINES[name] = factory


def make_engine(name: str, policy: Policy, *, dtype: str | None = None,
                device: str | None = None) -> RolloutEngine:
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; registered: {sorted(ENGINES)}")
    return ENGINES[name](policy, dtype=dtype, device=device)
