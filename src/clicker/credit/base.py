"""The `Credit` seam: a batch of episodes in, per-token advantages (B, T) out.

Every credit source (the sparse outcome baselines here; value, Monte-Carlo, implicit PRM,
adjudicators, distillation in later issues) implements `Credit`. A source that owns a model
trains it from the same batch inside `__call__` and exposes its weights through
`state_dict`/`load_state_dict` so checkpoints restore it. Sources compose by weight:
A = sum_i w_i * A_i (`WeightedCredit`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from clicker.core.types import Batch, DistillTargets
from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings
from clicker.rollout.sampler import Sampler
from clicker.tasks.base import World


@dataclass(frozen=True)
class CreditOutput:
    advantages: torch.Tensor  # (B, T) float32, 0 off the action mask
    metrics: dict[str, float] = field(default_factory=dict)  # namespaced, e.g. credit/grpo/...
    world_tokens: int = 0  # extra real-world tokens this source spent (e.g. MC continuations)
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # (B, T) credit per source
    # a teacher distribution for the update to distil (the `distill` source's jsd form)
    distill: DistillTargets | None = None


class CreditContext:
    """What a credit source may use besides the batch: the live policy, the frozen initial
    policy, the world and rollout settings (for Monte-Carlo continuations), and RNG.

    `reference` (the frozen initial policy) is made on first use, so runs that never need it
    never pay for a second copy of the model.
    """

    def __init__(self, policy: Policy, world: World | None = None,
                 settings: RolloutSettings | None = None, generator: torch.Generator | None = None,
                 initial: torch.nn.Module | None = None, seed: int = 0):
        self.policy = policy
        self.world = world
        self.settings = settings or RolloutSettings()
        self.generator = generator
        self.seed = seed
        self.iteration = 0  # set by the loop before each call
        # the lessons book's block for (split, index), when the run keeps a book
        self.lessons: Callable[[str, int], str] | None = None
        self._initial = initial  # a frozen initial model owned elsewhere, if any
        self._sampler: Sampler | None = None

    @property
    def reference(self) -> torch.nn.Module:
        if self._initial is None:
            self._initial = copy.deepcopy(self.policy.model).eval()
            self._initial.requires_grad_(False)
        return self._initial

    @property
    def sampler(self) -> Sampler:
        if self._sampler is None:
            self._sampler = Sampler(self.policy.model, self.policy.tokenizer)
        return self._sampler


class Credit(Protocol):
    name: str

    def __call__(self, batch: Batch) -> CreditOutput: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def report(self) -> dict[str, str | bytes]: ...


class CreditSource:
    """Defaults for sources without a model or reports: nothing to save, restore or report."""

    name = "source"

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Stateless: nothing to restore."""

    def report(self) -> dict[str, str | bytes]:
        """Files (name -> text or PNG bytes) for the run's reports/ folder."""
        return {}


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
        parts: dict[str, torch.Tensor] = {}
        world_tokens = 0
        distill: DistillTargets | None = None
        for w, src in self.sources:
            out = src(batch)
            if out.distill is not None:
                if distill is not None:
                    raise ValueError("only one credit source may give distillation targets")
                distill = dataclasses.replace(out.distill, weight=w * out.distill.weight)
            if out.advantages.shape != batch.shape:
                raise ValueError(
                    f"credit source {src.name!r} returned advantages of shape "
                    f"{tuple(out.advantages.shape)}, expected {batch.shape}"
                )
            total += w * out.advantages.to(total)
            metrics.update(out.metrics)
            parts[src.name] = out.advantages.detach().cpu()
            parts.update(out.parts)
            world_tokens += out.world_tokens
        total *= batch.action_mask.to(total)
        m = batch.action_mask
        metrics["credit/adv_mean"] = float(total[m].mean()) if m.any() else 0.0
        metrics["credit/adv_std"] = float(total[m].std()) if m.sum() > 1 else 0.0
        metrics["credit/world_tokens"] = float(world_tokens)
        return CreditOutput(total, metrics, world_tokens, parts, distill)

    def state_dict(self) -> dict:
        return {src.name: src.state_dict() for _, src in self.sources}

    def load_state_dict(self, state: dict) -> None:
        for _, src in self.sources:
            src.load_state_dict(state.get(src.name, {}))

    def report(self) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {}
        for _, src in self.sources:
            out.update(src.report())
        return out
