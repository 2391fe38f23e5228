"""`implicit_prm`: PRIME's implicit process reward (Cui et al. 2025, arXiv 2502.01456).

An implicit PRM (Yuan et al. 2024, arXiv 2412.01981) is a copy pi_phi of the initial policy
trained only on outcome labels, with its outcome logit written as beta * sum_t log(pi_phi /
pi_ref). That parameterisation makes every token's r_t = beta * log(pi_phi(y_t | y_<t) /
pi_ref(y_t | y_<t)) a process reward, learned with no step labels. On each batch this source
(1) scores the tokens with the frozen reference pi_ref (`ctx.reference`, the initial policy),
(2) trains pi_phi (a float32 copy of the initial policy with its own AdamW) for `epochs` steps
of BCE(sigmoid(beta * sum_t log-ratio_t), o), o = the episode reward clamped to [0, 1] (a soft
label; 0/1 rewards give PRIME's accuracy label), (3) scores the tokens with the updated pi_phi
and (4) returns A = A_outcome + A_process (`clicker.core.process_rewards.prime_advantages`).

What we followed in PRIME's public code (PRIME-RL/PRIME, read in its zkcpku/PRIME copy:
`training/verl/workers/actor/dp_prime.py`, `training/verl/trainer/ppo/core_algos.py`; and verl
`recipe/prime/prime_dp_rm.py`, `prime_core_algos.py`, `prime_ray_trainer.py`, `config/
prime_trainer.yaml`):
- order: the verl recipe's default `update: before` trains the PRM on the batch first and then
  scores the same batch with the updated PRM ("double forward"); `score_after_update: false`
  gives the "single forward" variant (rewards from the forward pass of the PRM's own update,
  before its step), which is what PRIME's original trainer effectively returns.
- process baseline: `masked_rloo` applies RLOO to every token: r_t * K/(K-1) - sum_j m_j /
  (K-1), m_j = sample j's mean token reward. Per episode it sums to the paper's eq. (5)
  (r_t minus the mean over the other samples of their mean token reward); per token it also
  stretches r_t - m_i by K/(K-1). We use the code's form.
- normalisation: token rewards are divided by the batch's largest |return-to-go| (`prime_norm:
  batch_norm`, the default; it cancels beta in the advantage); outcome and process enter with
  equal coefficients (reward_gt_coef = reward_dpo_coef = 5); the summed returns are whitened
  over all response tokens (`masked_whiten`). `normalize` and `whiten` switch these off.
- group filter: prompts whose group accuracy lies outside [lo, hi] are dropped before the PRM
  update and the advantage; here their rows get zero advantage and do not train the PRM.

Deliberate departures: one PRM optimizer step per epoch over the whole kept batch (PRIME steps
per PPO mini-batch; like the recipe: constant lr, no weight decay, grad-norm clip 1.0); the
outcome advantage is RLOO of the raw episode reward (PRIME: of the 0/1 accuracy); the last
action token keeps its process reward (as PRIME's own code; the verl recipe zeroes it); the
reference runs in the policy's dtype, so in bf16 pi_phi / pi_ref starts slightly off 1.

Run: `clicker train --set credit.sources='{implicit_prm: 1.0}'`
(PRIME's filter: `--set credit.implicit_prm.accuracy_filter='[0.2, 0.8]'`).
"""

from __future__ import annotations

import copy
import math

import torch

from clicker.core.config import ImplicitPRMConfig
from clicker.core.losses import token_logprobs
from clicker.core.process_rewards import (
    group_accuracy_keep,
    implicit_token_rewards,
    outcome_logits,
    prime_advantages,
    prm_bce_loss,
)
from clicker.core.returns import calibration_error, explained_variance
from clicker.core.types import Batch
from clicker.credit.base import CreditContext, CreditOutput, CreditSource

MAX_GRAD_NORM = 1.0  # PRIME recipe: reward_model.model.optim.grad_clip


class ImplicitPRMCredit(CreditSource):
    name = "implicit_prm"

    def __init__(self, cfg: ImplicitPRMConfig, ctx: CreditContext):
        self.cfg, self.ctx = cfg, ctx
        self.reference = ctx.reference  # frozen initial policy: pi_ref
        # pi_phi starts as the initial policy too (PRIME), in float32 for its optimizer
        self.prm = copy.deepcopy(self.reference).float().eval().requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.prm.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.updates = 0

    def _chunks(self, n: int) -> list[slice]:
        step = self.cfg.micro_batch
        return [slice(i, min(i + step, n)) for i in range(0, n, step)]

    def _logprobs(self, model: torch.nn.Module, ids: torch.Tensor, att: torch.Tensor):
        """(n, T) float32 log-prob of each token under `model` (0 at t = 0), in micro-batches."""
        out = []
        for s in self._chunks(len(ids)):
            logits = model(input_ids=ids[s], attention_mask=att[s].long()).logits[:, :-1]
            lp, _ = token_logprobs(logits, ids[s, 1:])
            out.append(torch.nn.functional.pad(lp, (1, 0)))
        return torch.cat(out)

    @torch.no_grad()
    def score(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) PRM and reference log-probs of the batch's tokens (on the policy's device)."""
        dev = self.ctx.policy.device
        ids, att = batch.input_ids.to(dev), batch.attention_mask.to(dev)
        return self._logprobs(self.prm, ids, att), self._logprobs(self.reference, ids, att)

    def predict(self, batch: Batch) -> torch.Tensor:
        """(B,) the PRM's probability that each episode succeeds: sigmoid(beta * sum log-ratio)."""
        prm, ref = self.score(batch)
        mask = batch.action_mask.to(prm.device)
        return torch.sigmoid(outcome_logits(prm - ref, mask, self.cfg.beta)).cpu()

    def fit(self, ids: torch.Tensor, att: torch.Tensor, mask: torch.Tensor,
            labels: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, float]:
        """cfg.epochs AdamW steps of the PRM's BCE loss on (n, T) rows (micro-batches
        accumulate into one step). Returns the (n, T) PRM log-probs seen by the first epoch's
        forward (the PRM before this batch's update) and the last step's grad norm."""
        self.prm.train()
        before = torch.zeros_like(ref)
        grad_norm = float("nan")
        n = len(ids)
        for epoch in range(self.cfg.epochs):
            self.optimizer.zero_grad(set_to_none=True)
            for s in self._chunks(n):
                logits = self.prm(input_ids=ids[s], attention_mask=att[s].long()).logits[:, :-1]
                lp, _ = token_logprobs(logits, ids[s, 1:])
                logratio = lp - ref[s, 1:]
                loss = prm_bce_loss(logratio, mask[s, 1:], labels[s], self.cfg.beta)
                (loss * (s.stop - s.start) / n).backward()
                if epoch == 0:
                    before[s, 1:] = lp.detach()
            norm = torch.nn.utils.clip_grad_norm_(self.prm.parameters(), MAX_GRAD_NORM)
            grad_norm = float(norm)
            if math.isfinite(grad_norm):  # a non-finite gradient skips the step
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.prm.eval()
        self.updates += 1
        return before, grad_norm

    def __call__(self, batch: Batch) -> CreditOutput:
        cfg, dev = self.cfg, self.ctx.policy.device
        B, T = batch.shape
        mask = batch.action_mask.cpu()
        labels = batch.rewards.float().cpu().clamp(0.0, 1.0)
        groups = batch.groups.cpu()
        keep = torch.ones(B, dtype=torch.bool)
        if cfg.accuracy_filter is not None:
            keep = group_accuracy_keep(labels, groups, *cfg.accuracy_filter)
        p = "credit/implicit_prm/"
        metrics = {p + "kept_groups": groups[keep].unique().numel() / groups.unique().numel()}
        adv = torch.zeros(B, T, dtype=torch.float32)
        process = torch.zeros(B, T, dtype=torch.float32)
        if not keep.any():
            return CreditOutput(adv, metrics, parts={"implicit_prm/process": process})

        rows = keep.nonzero().squeeze(1)
        ids, att = batch.input_ids[rows].to(dev), batch.attention_mask[rows].to(dev)
        m, y = mask[rows], labels[rows]
        with torch.no_grad():
            ref = self._logprobs(self.reference, ids, att)
        before, grad_norm = self.fit(ids, att, m.to(dev), y.to(dev), ref)
        if cfg.score_after_update:  # PRIME's double forward: rewards from the updated PRM
            with torch.no_grad():
                after = self._logprobs(self.prm, ids, att)
        else:
            after = before
        ref, before, after = ref.cpu(), before.cpu(), after.cpu()
        r = implicit_token_rewards(after, ref, m, cfg.beta)
        a, proc = prime_advantages(r, batch.rewards[rows].cpu(), m, groups[rows],
                                   normalize=cfg.normalize, whiten_adv=cfg.whiten)
        adv[rows], process[rows] = a, proc

        # the PRM's outcome predictions before it saw this batch: an honest held-out score
        logit0 = outcome_logits(before - ref, m, cfg.beta)
        prob0 = torch.sigmoid(logit0)
        prob1 = torch.sigmoid(outcome_logits(after - ref, m, cfg.beta))
        success = y > 0.5
        ev = explained_variance(prob0, y)
        metrics |= {
            p + "loss": float(prm_bce_loss(before - ref, m, y, cfg.beta)),
            p + "loss_after": float(prm_bce_loss(after - ref, m, y, cfg.beta)),
            p + "accuracy": float(((prob0 > 0.5) == success).float().mean()),
            p + "accuracy_after": float(((prob1 > 0.5) == success).float().mean()),
            p + "calibration_error": calibration_error(prob0, y),
            p + "token_reward_mean": float(r[m].mean()) if m.any() else 0.0,
            p + "process_abs": float(proc[m].abs().mean()) if m.any() else 0.0,
            p + "grad_norm": grad_norm,
        }
        if math.isfinite(ev):  # undefined when every kept outcome is the same
            metrics[p + "explained_variance"] = ev
        return CreditOutput(adv * mask, metrics, parts={"implicit_prm/process": process})

    def state_dict(self) -> dict:
        return {"model": self.prm.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.prm.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
