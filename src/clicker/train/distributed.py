"""Data-parallel updates over torch.distributed (issue 8): `torchrun --nproc_per_node N`.

Every process holds the whole batch (the loop gathers the episodes each rank sampled) and the
same parameters. In each optimizer step, each rank runs the forward and backward passes of its
share of the minibatch's rows; the gradients are summed across ranks (all-reduce), so the step
is the one a single process takes over the whole minibatch. This is exact, not an average of
per-rank means: each rank weights its micro-batches by the *global* minibatch's token or row
count (as `policy_update` does for gradient accumulation), so the sum of the ranks' gradients is
the single process's gradient, up to float summation order. Gradient-norm clipping and the
non-finite skip then see the same reduced gradient on every rank and agree.

Why not `DistributedDataParallel`: the update leaves out rows with zero advantage, so ranks run
different numbers of forward passes per step (possibly none); DDP's hooks need every rank to
run the same backward passes, and its mean over ranks would have to be undone. One bucketed
all-reduce of the flattened gradients after the micro-batches does what DDP's hooks do, without
overlapping communication with the backward pass (it matters little on CPU/gloo; on GPUs it is
the first thing to add).

FSDP (`sharded=True`, `shard_model`): for a model whose weights, gradients and optimizer state
do not fit one device, each decoder layer and then the whole model go through PyTorch's
`fully_shard` (FSDP2): every rank holds 1/N of each tensor, all-gathers a layer's weights for
its forward and backward, and reduce-scatters its gradients (FSDP averages them; the losses are
scaled by the world size, so this is the exact sum above). Every forward is then a collective,
so every rank must run the same number of passes: `policy_update` pads a rank with fewer rows
with passes that weigh 0, and runs one plain forward per micro-batch (no shared-prefix split,
whose pass count depends on the rows). Sampling with a sharded model would need the same
lock-step, so a sharded run samples on a whole replica (`HFEngine`, which gathers the shards at
each sync).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

_BUCKET_BYTES = 32 << 20  # gradients all-reduced per call


@dataclass
class DataParallel:
    """This process's place in a torch.distributed process group (`rank` of `world`)."""

    rank: int
    world: int
    sharded: bool = False  # FSDP: parameters, gradients and optimizer state split over ranks
    owns_group: bool = False  # from_env joined the group, so close() leaves it

    @classmethod
    def from_env(cls, *, timeout_s: float = 600.0, sharded: bool = False
                 ) -> DataParallel | None:
        """The process group torchrun describes (WORLD_SIZE > 1 in the environment), joined
        with gloo (nccl on CUDA) if it is not yet; None when there is one process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        owns = not dist.is_initialized()
        if owns:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), sharded, owns)

    def shard_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2 in place: `fully_shard` each decoder layer (`model.model.layers`, as in Hugging
        Face causal LMs, when present), then the whole model. FSDP averages the gradients over
        the ranks (gloo has no pre-multiplied sum), so `policy_update` scales its sharded
        losses by the world size. Build the optimizer afterwards: it needs the sharded
        parameters."""
        from torch.distributed.fsdp import fully_shard

        for layer in getattr(getattr(model, "model", None), "layers", None) or []:
            fully_shard(layer)
        fully_shard(model)
        return model

    def model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """Sharded: the whole weights on rank 0's CPU, {} elsewhere (a collective). Else None:
        the module's own state dict is the whole one."""
        if not self.sharded:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        whole = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                     cpu_offload=True))
        # a tied weight (input and output embeddings) is saved once, as save_pretrained does
        tied = ({n for n, _ in model.named_parameters(remove_duplicate=False)}
                - {n for n, _ in model.named_parameters()})
        return {k: v for k, v in whole.items() if k not in tied}

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer's state dict; sharded, the whole (unsharded) one on rank 0, keyed by
        parameter name (a collective)."""
        if not self.sharded:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(
            full_state_dict=True, cpu_offload=True))

    def load_optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict) -> None:
        """Restore what `optimizer_state` returned (every rank passes the whole state)."""
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        set_optimizer_state_dict(model, optimizer, state,
                                 options=StateDictOptions(full_state_dict=True))

    def close(self) -> None:
        """Leave the process group once every rank got here (a barrier, then
        `destroy_process_group`). A process that exits with its group still up can die in
        gloo's teardown ("terminate called without an active exception", SIGABRT) while
        another rank is still talking to it; torchrun then fails the whole run. A group the
        caller had joined before `from_env` is left up for the caller."""
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def most(self, x: int) -> int:
        """The largest value of an integer over the ranks."""
        t = torch.tensor([x], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes metrics, checkpoints and reports."""
        return self.rank == 0

    def span(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share [lo, hi) of n items (rank-major: gathering the shares
        in rank order gives the items back in order)."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def shard(self, rows: torch.Tensor) -> torch.Tensor:
        """This rank's share of `rows` (strided, so ranks differ by at most one row)."""
        return rows[self.rank::self.world]

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's `t` on every rank (same shape and dtype everywhere)."""
        t = t.clone()
        dist.broadcast(t, src=0)
        return t

    def first(self, x: int) -> int:
        """Rank 0's value of an integer (counters every rank must agree on)."""
        return int(self.broadcast(torch.tensor([x], dtype=torch.int64)).item())

    def all_true(self, flag: bool) -> bool:
        t = torch.tensor([1 if flag else 0], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def reduce_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over the ranks (a missing gradient counts as 0 and
        becomes a zero tensor), in buckets of flattened gradients."""
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.Tensor] = []
        size = 0
        for p in params:
            bucket.append(p.grad)
            size += p.grad.numel() * p.grad.element_size()
            if size >= _BUCKET_BYTES:
                self._reduce(bucket)
                bucket, size = [], 0
        if bucket:
            self._reduce(bucket)

    @staticmethod
    def _reduce(grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def in_sync(self, model: torch.nn.Module) -> bool:
        """Whether every rank holds exactly the same parameters (compared by a float64 digest of
        each tensor: its sum and its sum of squares)."""
        with torch.no_grad():
            digest = [(float(p.double().sum()), float(p.double().square().sum()))
                      for p in map(full_tensor, model.parameters())]
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, digest)
        return all(g == gathered[0] for g in gathered)

    def merge(self, stats: dict[str, float], weight: float) -> tuple[dict[str, float], float]:
        """Sums over the ranks of weighted statistics and of their weights."""
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, (stats, weight))
        out: dict[str, float] = {}
        for s, _ in gathered:
            for k, v in s.items():
                out[k] = out.get(k, 0.0) + v
        return out, sum(w for _, w in gathered)

    def gather(self, items: Sequence[Any]) -> list[Any]:
        """Every rank's items, rank-major (picklable objects, e.g. episodes)."""
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, list(items))
        return [x for part in gathered for x in part]


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) parameter or gradient gathered whole (a collective: every rank calls
    it); a plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole state dict on every rank (a collective under FSDP)."""
    return {k: full_tensor(v).detach() for k, v in model.state_dict().items()}
