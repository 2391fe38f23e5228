"""The one policy update every method shares.

Token-level clipped policy gradient with the importance ratio taken against the sampling
log-probs (PPO; GRPO; DAPO clip-higher), an optional k3 KL penalty to a frozen reference policy,
gradient accumulation over micro-batches and gradient-norm clipping. Methods differ only in the
advantages they pass in.

Episodes whose advantage is 0 on every action token (a GRPO group that tied) contribute exactly
nothing to the loss without a KL term, so they are left out of the forward and backward passes;
they still count in the loss's normaliser, so the gradient is the same as with them. Under
sparse reward many groups tie, and the update is most of an iteration's compute. For the same
reason each group's prompt goes through the forward once, not G times (`update.share_prefix`,
`clicker.models.shared_prefix`). The policy metrics (entropy, approx_kl, clip fraction, ratio)
are then means over the episodes trained on.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass

import torch

from clicker.core.config import UpdateConfig
from clicker.core.divergences import topk_divergence
from clicker.core.losses import aggregate, clipped_pg_loss, kl_k3, token_logprobs
from clicker.core.mismatch import mismatch_weights
from clicker.core.types import Batch, DistillTargets
from clicker.models.policy import Policy
from clicker.models.shared_prefix import shared_prefix_logits
from clicker.train.distributed import DataParallel, full_tensor


@dataclass
class UpdateResult:
    metrics: dict[str, float]
    skipped: bool  # True when a non-finite loss or gradient made us skip the step


class SkipStreak:
    """Updates skipped in a row for a non-finite loss or gradient (`train.max_skipped_updates`;
    0: never stop). Each skip is reported on stderr; `after` says why the run should stop."""

    def __init__(self, limit: int):
        self.limit, self.in_row = limit, 0

    def after(self, it: int, skipped: bool) -> str | None:
        """Record iteration `it`'s update; the reason to stop the run, or None."""
        self.in_row = self.in_row + 1 if skipped else 0
        if skipped:
            print(f"iteration {it}: non-finite loss or gradient, update skipped "
                  f"({self.in_row} in a row)", file=sys.stderr, flush=True)
        if not (self.limit and self.in_row >= self.limit):
            return None
        reason = f"{self.in_row} updates in a row skipped for a non-finite loss or gradient"
        print(f"stopping: {reason}; the last checkpoint holds iteration {it}", file=sys.stderr,
              flush=True)
        return reason


def _chunks(idx: torch.Tensor, n: int) -> list[torch.Tensor]:
    return [c for c in torch.tensor_split(idx, n) if c.numel()]


@torch.no_grad()
def trainer_logprobs(policy: Policy, batch: Batch, cfg: UpdateConfig,
                     temperature: float) -> torch.Tensor:
    """(B, T) the policy's log-probs of the batch's action tokens (0 elsewhere), aligned with
    `batch.old_logprobs`, computed as the update's forward computes them."""
    model = policy.model
    model.eval()
    out = torch.zeros_like(batch.old_logprobs)
    rows = torch.arange(batch.shape[0], device=batch.input_ids.device)
    micro = cfg.micro_batch or batch.shape[0]
    for part in _chunks(rows, math.ceil(batch.shape[0] / micro)):
        ids, att, act = batch.input_ids[part], batch.attention_mask[part], batch.action_mask[part]
        prefix = int(act.float().argmax(-1).min()) if cfg.share_prefix else 0
        logits = shared_prefix_logits(model, ids, att, prefix, cfg.length_buckets,
                                      next_token_only=True)[:, :-1]
        logp, _ = token_logprobs(logits, ids[:, 1:], temperature)
        out[part, 1:] = logp.float() * act[:, 1:]
    return out


def policy_update(
    policy: Policy,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    advantages: torch.Tensor,
    cfg: UpdateConfig,
    *,
    temperature: float = 1.0,
    reference: torch.nn.Module | None = None,
    generator: torch.Generator | None = None,
    distill: DistillTargets | None = None,
    dp: DataParallel | None = None,
) -> UpdateResult:
    """Run cfg.epochs x cfg.minibatches optimizer steps on one batch.

    advantages (B, T) float, 0 off batch.action_mask. `distill`: a teacher's distributions; the
    loss then adds weight * D_alpha(student, teacher) at its masked tokens, aggregated like the
    policy loss over all action tokens (tokens without a teacher count as 0). `dp`: run data
    parallel (`clicker.train.distributed`): every rank passes the same batch and runs its share
    of each minibatch's rows; gradients and statistics are summed over the ranks.
    """
    model = policy.model
    dev = policy.device
    sharded = dp is not None and dp.sharded
    batch = batch.to(dev)
    advantages = advantages.to(dev)
    mismatch: dict[str, float] = {}
    if cfg.mismatch != "none":  # the trainer's own log-probs at the sampling weights
        train_old = trainer_logprobs(policy, batch, cfg, temperature)
        w, mismatch = mismatch_weights(train_old, batch.old_logprobs, batch.action_mask,
                                       level=cfg.mismatch, cap=cfg.mismatch_cap)
        batch = dataclasses.replace(batch, old_logprobs=train_old)
        advantages = advantages * w
    model.train()
    B = batch.shape[0]
    max_tokens = int(batch.action_mask.sum(-1).max())
    # rows that can move the loss: some non-zero advantage, or any row when a KL term applies
    if not cfg.skip_zero_advantage or (cfg.kl_coef > 0 and reference is not None):
        signal = torch.ones(B, dtype=torch.bool)
    else:
        signal = ((advantages != 0) & batch.action_mask).any(-1).cpu()
    if distill is not None:
        distill = distill.to(dev)
        signal = signal | distill.mask.any(-1).cpu()
    sums: dict[str, float] = {}
    counts = 0
    seen: dict[str, int] = {}  # steps that logged each stat (a step with every row tied logs none)
    skipped = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(B, generator=generator)
        if dp is not None:  # one order for all ranks, whatever their generators
            order = dp.broadcast(order)
        for mb in _chunks(order, cfg.minibatches):
            mb_tokens = batch.action_mask[mb].sum().clamp(min=1)
            optimizer.zero_grad(set_to_none=True)
            micro = cfg.micro_batch or len(mb)
            stats: dict[str, float] = {}
            finite = True
            live = mb[signal[mb]]
            if dp is not None:
                live = dp.shard(live)
            parts = _chunks(live, math.ceil(len(live) / micro)) if len(live) else []
            if sharded:  # FSDP: as many passes on every rank; the padding passes weigh nothing
                parts += [None] * (dp.most(len(parts)) - len(parts))
            if not parts:  # a zero gradient, as a step over these rows would have had
                for p in model.parameters():
                    p.grad = torch.zeros_like(p)
            weights = 0.0
            for part in parts:
                if part is None:
                    ids, att = batch.input_ids[mb[:1]], batch.attention_mask[mb[:1]]
                    (model(input_ids=ids, attention_mask=att.long()).logits.sum() * 0).backward()
                    continue
                ids, att = batch.input_ids[part], batch.attention_mask[part]
                act = batch.action_mask[part]
                # the part's common leading tokens (its prompts) run once per distinct prompt
                # (not sharded: there every rank must run the same number of forward passes)
                share = cfg.share_prefix and not sharded
                prefix = int(act.float().argmax(-1).min()) if share else 0
                logits = shared_prefix_logits(model, ids, att, prefix, cfg.length_buckets,
                                              next_token_only=True)[:, :-1]
                logp, ent = token_logprobs(logits, ids[:, 1:], temperature)
                act, old, adv = act[:, 1:], batch.old_logprobs[part][:, 1:], advantages[part][:, 1:]
                pg, st = clipped_pg_loss(
                    logp, old, adv, act, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                    aggregation=cfg.aggregation, max_tokens=max_tokens,
                )
                loss = pg
                if distill is not None:
                    dmask = distill.mask[part][:, 1:]
                    student = torch.log_softmax(logits.float() / (temperature or 1.0), -1)
                    d = topk_divergence(student, distill.logp[part][:, 1:],
                                        distill.index[part][:, 1:], distill.alpha)
                    ratio = torch.exp((logp - old).detach().clamp(max=20.0))
                    d = d * ratio.clamp(max=distill.is_clip) * dmask
                    dl = aggregate(d, act, cfg.aggregation, max_tokens)
                    loss = loss + distill.weight * dl
                    st["distill"] = dl.detach()
                if cfg.kl_coef > 0 and reference is not None:
                    with torch.no_grad():
                        ref_logits = reference(input_ids=ids, attention_mask=att.long()).logits
                        ref_logp, _ = token_logprobs(ref_logits[:, :-1], ids[:, 1:], temperature)
                    kl = aggregate(kl_k3(logp, ref_logp), act, cfg.aggregation, max_tokens)
                    loss = loss + cfg.kl_coef * kl
                    st["kl_ref"] = kl.detach()
                # weight each micro-batch so the sum equals the aggregation over the minibatch
                if cfg.aggregation == "token":
                    weight = act.sum() / mb_tokens
                else:
                    weight = torch.tensor(len(part) / len(mb))
                if not torch.isfinite(loss):
                    finite = False
                    if not sharded:  # (sharded: the other ranks wait for this pass's gradients)
                        break
                (loss * weight * (dp.world if sharded else 1)).backward()  # (FSDP averages)
                st["loss"] = loss.detach()
                st["entropy"] = (ent.detach() * act).sum() / act.sum().clamp(min=1)
                weights += float(weight)
                for k, v in st.items():
                    stats[k] = stats.get(k, 0.0) + float(v) * float(weight)
            if dp is not None:  # the step every rank takes: the sum of their gradients
                finite = dp.all_true(finite)
                if finite and not sharded:  # (FSDP has reduce-scattered them already)
                    dp.reduce_grads(model.parameters())
                stats, weights = dp.merge(stats, weights)
            for k in stats:  # the loss sums over the minibatch; the rest: mean over rows trained
                if k not in ("loss", "kl_ref", "distill") and weights > 0:
                    stats[k] /= weights
            grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                                   cfg.max_grad_norm))
            if not finite or not torch.isfinite(grad_norm):
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
                continue
            optimizer.step()
            stats["grad_norm"] = float(grad_norm)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
                seen[k] = seen.get(k, 0) + 1
            counts += 1
    model.eval()
    names = {"loss": "loss/policy", "kl_ref": "loss/kl_ref", "entropy": "policy/entropy",
             "approx_kl": "policy/approx_kl", "clip_frac": "policy/clip_frac",
             "ratio_mean": "policy/ratio_mean", "grad_norm": "loss/grad_norm",
             "distill": "loss/distill"}
    # the loss is 0 on an all-tied step, so it averages over every step; the rest over the
    # steps that trained on something
    metrics = {names[k]: v / (counts if k == "loss" else seen[k]) for k, v in sums.items()}
    if counts:  # every step tied (no episode trained on): a zero loss, undefined policy stats
        metrics.setdefault("loss/policy", 0.0)
        for k in ("entropy", "approx_kl", "clip_frac", "ratio_mean"):
            metrics.setdefault(names[k], math.nan)
    metrics |= mismatch
    metrics["loss/skipped_steps"] = float(skipped)
    metrics["update/trained_fraction"] = float(signal.float().mean())
    return UpdateResult(metrics, skipped > 0 and counts == 0)
