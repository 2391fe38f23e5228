"""`value`: the clicker. A learned V(prefix) turns sparse outcomes into dense, per-token credit.

A value model reads each prefix and predicts the real return that follows. Trained online by
TD(lambda) on every batch of real outcomes, states on paths that often lead to reward acquire
value themselves, and with lambda < 1 they learn it from the value of their successors
(bootstrapping: proxies of proxies), the way a clicker becomes rewarding by predicting the treat
(TD error as dopamine: Schultz, Dayan and Montague 1997). V enters the policy's reward only as a
potential (Ng, Harada and Russell 1999): r'_t = r_t + gamma * V(s_{t+1}) - V(s_t), so it moves
credit in time but cannot change which policy is optimal; the advantage is GAE(lambda_actor)
of r' (Schulman et al. 2016).

Extinction: V is re-grounded on every batch of real outcomes. When the reward a state predicted
stops arriving, its TD error is negative (the dopamine dip) and its value falls;
`extinction_updates` measures how many updates V needs to lose half of it
(`benchmarks/extinction.py` reports the figure).

Options known to matter for LLM critics (REFERENCES.md): decoupled lambda for critic (1.0) and
actor (0.95) (VC-PPO, arXiv 2503.01491); value pre-training on Monte-Carlo returns of the initial
policy before the policy moves (VC-PPO; here `warmup_iterations`, which spends real world tokens
and counts them); VAPO's length-adaptive actor lambda (arXiv 2504.05118). The head starts at
zero output on every state, so there is no early-token bias from a reward-model initialisation.

Departures: the state after an episode's last action token is terminal (V = 0) even when the
episode was truncated; the value model is either a copy of the initial policy with a scalar head
(`model: separate`) or a head on the live policy's detached features (`model: head`), never
a head trained jointly through the policy's loss.

Run: `clicker train --set task.name=keydoor --set credit.sources='{value: 1.0}'`.
"""

from __future__ import annotations

import torch

from clicker.core.config import ValueConfig
from clicker.core.returns import (
    calibration_error,
    explained_variance,
    gae,
    returns_to_go,
    state_values,
    td_lambda_targets,
    vapo_lambda,
    whiten,
)
from clicker.core.types import Batch
from clicker.credit.base import CreditContext, CreditOutput, CreditSource
from clicker.models.heads import batched_forward, fit_positions, make_scalar_model


def first_action_index(action_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's first action token (0 for a row with none). action_mask (B, T)."""
    return action_mask.float().argmax(dim=1)


class ValueCredit(CreditSource):
    name = "value"

    def __init__(self, cfg: ValueConfig, ctx: CreditContext):
        self.cfg, self.ctx = cfg, ctx
        self.model = make_scalar_model(cfg.model, ctx.policy.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99))
        self.updates = 0

    @torch.no_grad()
    def values(self, batch: Batch) -> torch.Tensor:
        """(B, T) V(s_t) at action tokens, 0 elsewhere."""
        self.model.eval()
        dev = self.ctx.policy.device
        out = batched_forward(self.model, batch.input_ids.to(dev), batch.attention_mask.to(dev))
        return state_values(out) * batch.action_mask.to(dev)

    def __call__(self, batch: Batch) -> CreditOutput:
        cfg = self.cfg
        dev = self.ctx.policy.device
        mask = batch.action_mask.to(dev)
        rewards = batch.token_rewards.to(dev)
        v = self.values(batch)
        lam_actor: float | torch.Tensor = cfg.lam_actor
        if cfg.vapo_alpha > 0:
            lam_actor = vapo_lambda(mask.sum(1), cfg.vapo_alpha)
        adv = gae(rewards, v, mask, cfg.gamma, lam_actor)
        clicks = gae(rewards, v, mask, cfg.gamma, 0.0)  # one-step TD errors: the shaped reward
        targets = td_lambda_targets(rewards, v, mask, cfg.gamma, cfg.lam_critic)
        if cfg.whiten:
            adv = whiten(adv, mask)
        warming = self.ctx.iteration < cfg.warmup_iterations
        if warming:  # VC-PPO value pre-training: V learns the initial policy's returns first
            adv = torch.zeros_like(adv)

        # metrics before the update: how well V predicted the returns it is about to learn
        returns = returns_to_go(rewards, mask, cfg.gamma)
        first = first_action_index(mask)
        rows = torch.arange(len(first), device=dev)
        v0 = v[rows, first]
        outcome = batch.rewards.to(dev)
        metrics = {
            "credit/value/explained_variance": explained_variance(v[mask], returns[mask]),
            "credit/value/v_s0": float(v0.mean()),
            "credit/value/calibration_s0": calibration_error(v0, outcome.clamp(0, 1)),
            "credit/value/click_abs": float(clicks[mask].abs().mean()) if mask.any() else 0.0,
            "credit/value/warmup": float(warming),
        }
        metrics["credit/value/loss"] = self.fit(batch, targets)
        return CreditOutput(adv * mask, metrics, parts={"value/click": clicks.detach().cpu()})

    def fit(self, batch: Batch, targets: torch.Tensor) -> float:
        """cfg.epochs passes of MSE toward the (B, T) targets on the action tokens."""
        dev = self.ctx.policy.device
        mask = batch.action_mask.to(dev)
        loss = fit_positions(
            self.model, self.optimizer, batch.input_ids.to(dev), batch.attention_mask.to(dev),
            targets.to(dev), mask.float(), loss="mse", epochs=self.cfg.epochs,
        )
        self.updates += 1
        return loss

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]


def extinction_updates(
    credit: ValueCredit, batch: Batch, *, max_updates: int = 200
) -> tuple[int | None, list[float]]:
    """Updates V needs, once the batch's reward is removed, to fall to half its value on s_0.

    Trains `credit` on `batch` with every reward set to 0 (the treat stops arriving) and tracks
    the mean V(s_0) over the batch. Returns (updates to half or None if never within
    max_updates, the V(s_0) trace starting before the first update).
    """
    zero = Batch(batch.input_ids, batch.attention_mask, batch.action_mask, batch.old_logprobs,
                 torch.zeros_like(batch.rewards), batch.groups, batch.episodes,
                 torch.zeros_like(batch.token_rewards))
    first = first_action_index(batch.action_mask)
    rows = torch.arange(len(first))

    def v0() -> float:
        return float(credit.values(zero).cpu()[rows, first].mean())

    trace = [v0()]
    for n in range(1, max_updates + 1):
        v = credit.values(zero)
        mask = zero.action_mask.to(v.device)
        targets = td_lambda_targets(zero.token_rewards.to(v.device), v, mask, credit.cfg.gamma,
                                    credit.cfg.lam_critic)
        credit.fit(zero, targets)
        trace.append(v0())
        if trace[-1] <= trace[0] / 2:
            return n, trace
    return None, trace
