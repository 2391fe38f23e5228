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

Steps (`steps: turn`): in a multi-turn world the informative states are the ones right after an
observation ("got key."), and the tokens inside one short action carry little news. With
`steps: turn`, V is read and trained only where each turn starts, TD(lambda) and GAE run over
turns (20 steps for a 20-turn episode instead of ~100 tokens, so lambda_actor < 1 still lets the
outcome reach the first turns), and every token of a turn shares the turn's advantage, as in
step-level PPO for agents. Single-turn worlds use a step every `step_tokens` action tokens.

Dreams (issue 7): V learns from imagined episodes as from real ones by default, as in Dyna,
where model-based updates train the same value function. With a world model that misses the
goal, those dreams teach V that nothing pays, and V is then the clicker of the real batches
too; `learn_dreams: false` keeps V on real outcomes only (dreams still get credit from it).
And a batch of dreams that all fail carries no outcome signal, only V's noise, which
whitening scales up to the size of real credit; `whiten_dreams: false` divides such a batch by
the last real batch's advantage std instead.

Run: `clicker train --set task.name=keydoor --set credit.sources='{value: 1.0}'`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import torch

from clicker.core.config import ValueConfig
from clicker.core.returns import (
    calibration_error,
    explained_variance,
    from_steps,
    gae,
    returns_to_go,
    state_values,
    step_index,
    step_starts,
    td_lambda_targets,
    to_steps,
    vapo_lambda,
    whiten,
)
from clicker.core.types import Batch
from clicker.credit.base import CreditContext, CreditOutput, CreditSource
from clicker.models.heads import batched_forward, fit_positions, make_scalar_model


def _tensors(batch: Batch | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What fitting V needs from a batch, as a dict of (B, T) tensors (a replay entry)."""
    if isinstance(batch, dict):
        return dict(batch)
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
            "action_mask": batch.action_mask, "token_rewards": batch.token_rewards}


def first_action_index(action_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's first action token (0 for a row with none). action_mask (B, T)."""
    return action_mask.float().argmax(dim=1)


class TimeAxis(NamedTuple):
    """The time axis TD and GAE run on: action tokens, or steps (`steps: turn`).

    rewards, values, mask are (B, N) on that axis (N = T for tokens, S for steps); `back` maps a
    (B, N) quantity to the (B, T) tokens; `scatter` puts a (B, N) quantity on the (B, T) token
    where each step starts (the identity for tokens); `where` (B, T) are those tokens.
    """

    rewards: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    back: Callable[[torch.Tensor], torch.Tensor]
    scatter: Callable[[torch.Tensor], torch.Tensor]
    where: torch.Tensor


def time_axis(token_rewards: torch.Tensor, values: torch.Tensor, action_mask: torch.Tensor,
              starts: torch.Tensor | None) -> TimeAxis:
    """Tokens (starts None) or steps beginning at the (B, T) bool `starts`; values (B, T)."""
    rewards = (token_rewards * action_mask).float()
    if starts is None:
        keep = lambda x: x * action_mask
        return TimeAxis(rewards, values, action_mask, keep, keep, action_mask)
    sid, pos, valid = step_index(starts)
    return TimeAxis(to_steps(rewards, sid, valid), values.gather(1, pos) * valid, valid,
                    lambda x: from_steps(x, sid, action_mask),
                    lambda x: torch.zeros_like(values).scatter(1, pos, x * valid), starts)


class ValueCredit(CreditSource):
    name = "value"

    def __init__(self, cfg: ValueConfig, ctx: CreditContext):
        self.cfg, self.ctx = cfg, ctx
        self.model = make_scalar_model(cfg.model, ctx.policy.model)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99))
        self.updates = 0
        # the last cfg.replay batches, as tensors: V is also fit on them (targets recomputed)
        self.replay: deque[dict[str, torch.Tensor]] = deque(maxlen=cfg.replay)
        self.real_scale: float | None = None  # last real batch's advantage std (whiten_dreams)

    @torch.no_grad()
    def values(self, batch: Batch | dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T) V(s_t) at action tokens, 0 elsewhere."""
        t = _tensors(batch)
        self.model.eval()
        dev = self.ctx.policy.device
        out = batched_forward(self.model, t["input_ids"].to(dev), t["attention_mask"].to(dev))
        return state_values(out) * t["action_mask"].to(dev)

    @torch.no_grad()
    def state_value(self, seqs: list[list[int]]) -> list[float]:
        """V(s) of states given as whole token sequences (each ends where the next action would
        start): the model's output at the last token, as `values` reads V(s_t) at output[t-1].
        The dream-testing planner scores dreamed states with it."""
        if not seqs:
            return []
        dev = self.ctx.policy.device
        L = max(map(len, seqs))
        ids = torch.full((len(seqs), L), self.ctx.policy.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), L), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s)
            att[r, :len(s)] = 1
        self.model.eval()
        out = batched_forward(self.model, ids.to(dev), att.to(dev))
        last = torch.tensor([len(s) - 1 for s in seqs], device=out.device)
        return out[torch.arange(len(seqs), device=out.device), last].float().cpu().tolist()

    def step_starts(self, batch: Batch) -> torch.Tensor:
        """(B, T) bool: where each step of `steps: turn` begins (each turn's first action token;
        single-turn worlds: every cfg.step_tokens action tokens)."""
        multi = self.ctx.world is not None and self.ctx.world.max_turns > 1
        out = torch.zeros(batch.action_mask.shape, dtype=torch.bool)
        for b, e in enumerate(batch.episodes):
            spans = [t.action_span for t in e.turns]
            for i in step_starts(e.action_mask, spans, self.cfg.step_tokens, multi):
                out[b, i] = True
        return out & batch.action_mask.cpu()

    def axis(self, t: dict[str, torch.Tensor], v: torch.Tensor) -> TimeAxis:
        dev = v.device
        starts = t["starts"].to(dev) if "starts" in t else None
        return time_axis(t["token_rewards"].to(dev), v, t["action_mask"].to(dev), starts)

    def __call__(self, batch: Batch) -> CreditOutput:
        cfg = self.cfg
        dev = self.ctx.policy.device
        t = _tensors(batch)
        if cfg.steps == "turn":
            t["starts"] = self.step_starts(batch)
        mask = t["action_mask"].to(dev)
        v = self.values(t)
        ax = self.axis(t, v)
        lam_actor: float | torch.Tensor = cfg.lam_actor
        if cfg.vapo_alpha > 0:
            lam_actor = vapo_lambda(ax.mask.sum(1), cfg.vapo_alpha)
        adv = ax.back(gae(ax.rewards, ax.values, ax.mask, cfg.gamma, lam_actor))
        # one-step TD errors: the shaped reward, the click
        clicks = ax.back(gae(ax.rewards, ax.values, ax.mask, cfg.gamma, 0.0))
        if cfg.whiten:
            adv = self.standardise(batch, adv, mask)
        warming = self.ctx.iteration < cfg.warmup_iterations
        if warming:  # VC-PPO value pre-training: V learns the initial policy's returns first
            adv = torch.zeros_like(adv)

        # metrics before the update: how well V predicted the returns it is about to learn
        returns = returns_to_go(ax.rewards, ax.mask, cfg.gamma)
        first = first_action_index(mask)
        v0 = v[torch.arange(len(first), device=dev), first]
        outcome = batch.rewards.to(dev)
        metrics = {
            "credit/value/explained_variance": explained_variance(ax.values[ax.mask],
                                                                  returns[ax.mask]),
            "credit/value/v_s0": float(v0.mean()),
            "credit/value/calibration_s0": calibration_error(v0, outcome.clamp(0, 1)),
            "credit/value/click_abs": float(clicks[mask].abs().mean()) if mask.any() else 0.0,
            "credit/value/warmup": float(warming),
        }
        fit = self.learned_rows(batch)
        if fit is not None:
            metrics["credit/value/loss"] = self.fit({k: x[fit] for k, x in t.items()}, v[fit])
        return CreditOutput(adv * mask, metrics, parts={"value/click": clicks.detach().cpu()})

    def standardise(self, batch: Batch, adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`whiten`: advantages standardised over the batch's action tokens; with
        `whiten_dreams: false`, a batch of dreams alone is divided by the std of the last real
        batch's advantages instead (its own mean kept), measured over that batch's real rows
        before whitening."""
        real = torch.tensor([not e.imagined for e in batch.episodes], device=adv.device)
        if not real.any() and not self.cfg.whiten_dreams and self.real_scale is not None:
            return adv / self.real_scale * mask
        sel = adv[real][mask[real].bool()]
        if real.any() and sel.numel() >= 2:
            self.real_scale = float(sel.std()) + 1e-8
        return whiten(adv, mask)

    def learned_rows(self, batch: Batch) -> torch.Tensor | slice | None:
        """The rows of `batch` V learns from: all of them, or with `learn_dreams: false` its
        real episodes only (None when it has none: V is not fit on that batch at all, and it
        does not enter the replay)."""
        if self.cfg.learn_dreams or not any(e.imagined for e in batch.episodes):
            return slice(None)
        real = [i for i, e in enumerate(batch.episodes) if not e.imagined]
        return torch.tensor(real, dtype=torch.long) if real else None

    def targets(self, t: dict[str, torch.Tensor], v: torch.Tensor) -> tuple[torch.Tensor,
                                                                              torch.Tensor]:
        """(B, T) TD(lambda_critic) targets and the (B, T) bool positions that carry them."""
        ax = self.axis(t, v)
        g = td_lambda_targets(ax.rewards, ax.values, ax.mask, self.cfg.gamma, self.cfg.lam_critic)
        return ax.scatter(g), ax.where

    def fit(self, batch: Batch | dict[str, torch.Tensor], v: torch.Tensor | None = None) -> float:
        """cfg.epochs passes of MSE toward TD(lambda) targets on this batch and, with
        cfg.replay > 0, on the last cfg.replay batches (targets from the current V). Returns the
        mean loss on this batch's last epoch."""
        t = _tensors(batch)
        dev = self.ctx.policy.device
        losses = []
        for i, entry in enumerate([t, *self.replay]):
            y, where = self.targets(entry, self.values(entry) if i or v is None else v)
            losses.append(fit_positions(
                self.model, self.optimizer, entry["input_ids"].to(dev),
                entry["attention_mask"].to(dev), y.to(dev), where.to(dev).float(), loss="mse",
                epochs=self.cfg.epochs,
            ))
        self.replay.append({k: x.cpu() for k, x in t.items()})  # maxlen 0 keeps nothing
        self.updates += 1
        return losses[0]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates, "replay": list(self.replay),
                "real_scale": self.real_scale}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
        self.replay.clear()
        self.replay.extend(state.get("replay", []))
        self.real_scale = state.get("real_scale")


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
        credit(zero)  # one update of V toward the (now unrewarded) returns
        trace.append(v0())
        if trace[-1] <= trace[0] / 2:
            return n, trace
    return None, trace
