"""`adjudicator`: two judges of incomplete answers, one blind and one privileged.

Both judges read an unfinished episode and estimate P(success | prefix). The blind one sees what
the policy sees (prompt + prefix); the privileged one also sees the reference answer, placed
before the episode as `Reference: ...`. It must see the prefix too: a critic that sees only
privileged information is biased under partial observability (Pinto et al. 2017; Baisero and
Amato 2022), which is also why SWEET-RL's reference-aware critic reads the history.

Labels (`labels`):
- `outcome`: every action-token state of an episode is labelled with its outcome (reward
  clamped to [0, 1]): one Monte-Carlo sample per state, free of extra world tokens.
- `mc`: Math-Shepherd soft labels (Wang et al. 2023, arXiv 2312.08935): at each step boundary,
  the fraction of `k` continuations by the current policy that succeed (plus reward already
  earned); those continuations are real interaction and are counted as world tokens.
Both judges train with binary cross-entropy on the same labels; they differ only in what they see.

Credit: the chosen judge's estimate is a potential, held constant within a step (a turn, or
`step_tokens` action tokens), so each step is rewarded by the change in success probability it
caused (process advantage verifiers, Setlur et al. 2024, arXiv 2410.08146), and by potential
shaping (Ng et al. 1999) the sum over an episode is the outcome minus the judge's estimate at
s_0. The differential D = privileged - blind is logged per episode, can be weighted into the
potential (`differential_weight`), and `report()` lists the episodes where the judges disagree
most (`reports/adjudicator_disagreements.md`).

Run: `clicker train --set task.name=keydoor --set credit.sources='{adjudicator: 1.0}'`.
"""

from __future__ import annotations

import itertools

import torch

from clicker.core.config import AdjudicatorConfig
from clicker.core.returns import (
    calibration_error,
    explained_variance,
    gae,
    state_values,
    step_starts,
    whiten,
)
from clicker.core.types import Batch, Episode
from clicker.credit.base import CreditContext, CreditOutput, CreditSource
from clicker.models.heads import ScalarModel, batched_forward, fit_positions
from clicker.rollout.continuation import continuation_values


def prepend(input_ids: torch.Tensor, attention_mask: torch.Tensor, prefixes: list[list[int]],
            pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Put prefixes[b] before row b: returns ids, mask (B, P_max + T) and offsets (B,)."""
    B, T = input_ids.shape
    width = T + max(len(p) for p in prefixes)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    att = torch.zeros((B, width), dtype=torch.bool)
    for b, p in enumerate(prefixes):
        n = int(attention_mask[b].sum())
        ids[b, :len(p)] = torch.tensor(p, dtype=torch.long)
        ids[b, len(p):len(p) + n] = input_ids[b, :n].cpu()
        att[b, :len(p) + n] = True
    return ids, att, torch.tensor([len(p) for p in prefixes], dtype=torch.long)


def align(out: torch.Tensor, offsets: torch.Tensor, T: int) -> torch.Tensor:
    """(B, T) out[b, t + offsets[b]]: a prefixed row's outputs back on the episode's positions."""
    idx = (torch.arange(T, device=out.device)[None, :] + offsets.to(out.device)[:, None])
    return out.gather(1, idx.clamp(max=out.shape[1] - 1))


def hold_within_steps(x: torch.Tensor, starts: list[list[int]], mask: torch.Tensor) -> torch.Tensor:
    """(B, T) each action token takes x at the start of its step (a step-level potential)."""
    out = torch.zeros_like(x)
    for b, ss in enumerate(starts):
        bounds = ss + [x.shape[1]]
        for s, e in itertools.pairwise(bounds):
            out[b, s:e] = x[b, s]
    return out * mask


class AdjudicatorCredit(CreditSource):
    name = "adjudicator"

    def __init__(self, cfg: AdjudicatorConfig, ctx: CreditContext):
        self.cfg, self.ctx = cfg, ctx
        lm = ctx.policy.model
        self.judges = {"blind": ScalarModel(lm), "privileged": ScalarModel(lm)}
        self.optimizers = {k: torch.optim.AdamW(m.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
                           for k, m in self.judges.items()}
        self.disagreements: list[dict] = []  # the report_top largest |D| seen so far

    # --- what each judge sees -------------------------------------------------------------
    def inputs(self, batch: Batch, which: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The judge's input ids, mask and the offset of the episode within them."""
        if which == "blind":
            return batch.input_ids, batch.attention_mask, torch.zeros(batch.shape[0], dtype=torch.long)
        enc = self.ctx.policy.encode
        prefixes = [enc(f"Reference: {e.reference}\n") for e in batch.episodes]
        return prepend(batch.input_ids, batch.attention_mask, prefixes, self.ctx.policy.pad_id)

    @torch.no_grad()
    def estimate(self, batch: Batch, which: str) -> torch.Tensor:
        """(B, T) P(success | state before token t) at action tokens, 0 elsewhere."""
        dev = self.ctx.policy.device
        ids, att, off = self.inputs(batch, which)
        model = self.judges[which].eval()
        out = state_values(batched_forward(model, ids.to(dev), att.to(dev)))
        p = torch.sigmoid(align(out, off, batch.shape[1]))
        return p * batch.action_mask.to(dev)

    def starts(self, batch: Batch) -> list[list[int]]:
        multi = self.ctx.world is not None and self.ctx.world.max_turns > 1
        out = []
        for e in batch.episodes:
            spans = [t.action_span for t in e.turns]
            out.append(step_starts(e.action_mask, spans, self.cfg.step_tokens, multi)
                       [: self.cfg.max_steps])
        return out

    # --- labels -----------------------------------------------------------------------------
    def labels(self, batch: Batch, starts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(B, T) targets and weights on the episode's positions, and world tokens spent."""
        mask = batch.action_mask
        if self.cfg.labels == "outcome":
            y = batch.rewards.clamp(0, 1)[:, None].expand_as(mask).float() * mask
            return y, mask.float(), 0
        c = self.ctx
        values, spent = continuation_values(c.policy, c.world, list(batch.episodes), starts,
                                            self.cfg.k, c.settings, c.generator, c.sampler,
                                            count_replay=self.cfg.count_replay)
        y, w = torch.zeros(mask.shape), torch.zeros(mask.shape)
        for b, (ss, vs) in enumerate(zip(starts, values)):
            earned = batch.token_rewards[b].cumsum(0)
            for s, v in zip(ss, vs):
                before = float(earned[s - 1]) if s > 0 else 0.0
                y[b, s], w[b, s] = min(1.0, max(0.0, before + v)), 1.0
        return y, w, spent

    def fit(self, batch: Batch, which: str, y: torch.Tensor, w: torch.Tensor) -> float:
        dev = self.ctx.policy.device
        ids, att, off = self.inputs(batch, which)
        Y, W = torch.zeros(ids.shape), torch.zeros(ids.shape)
        T = batch.shape[1]
        for b in range(ids.shape[0]):  # move targets onto the prefixed positions
            o = int(off[b])
            Y[b, o:o + T], W[b, o:o + T] = y[b], w[b]
        return fit_positions(self.judges[which], self.optimizers[which], ids.to(dev), att.to(dev),
                             Y.to(dev), W.to(dev), loss="bce", epochs=self.cfg.epochs)

    # --- credit -----------------------------------------------------------------------------
    def __call__(self, batch: Batch) -> CreditOutput:
        cfg = self.cfg
        dev = self.ctx.policy.device
        mask = batch.action_mask.to(dev)
        starts = self.starts(batch)
        est = {k: self.estimate(batch, k) for k in self.judges}
        diff = est["privileged"] - est["blind"]
        potential = hold_within_steps(est[cfg.use], starts, mask)
        if cfg.differential_weight:
            potential = potential + cfg.differential_weight * hold_within_steps(diff, starts, mask)
        rewards = batch.token_rewards.to(dev)
        adv = gae(rewards, potential, mask, 1.0, cfg.lam_actor)
        steps = gae(rewards, potential, mask, 1.0, 0.0)  # per-step progress rewards
        if cfg.whiten:
            adv = whiten(adv, mask)

        per_episode = torch.stack([diff[b, ss].mean() if ss else diff.new_zeros(())
                                   for b, ss in enumerate(starts)])
        s0 = [ss[0] if ss else 0 for ss in starts]
        rows = torch.arange(len(s0))
        outcome = batch.rewards.clamp(0, 1)
        metrics = {
            "credit/adjudicator/differential": float(per_episode.mean()),
            "credit/adjudicator/differential_abs": float(per_episode.abs().mean()),
        }
        m_cpu = mask.cpu()
        label = outcome[:, None].expand_as(m_cpu)[m_cpu]
        for k, p in est.items():
            p0 = p.cpu()[rows, s0]
            metrics[f"credit/adjudicator/{k}_explained_variance"] = explained_variance(
                p.cpu()[m_cpu], label)
            metrics[f"credit/adjudicator/{k}_s0"] = float(p0.mean())
            metrics[f"credit/adjudicator/{k}_calibration_s0"] = calibration_error(p0, outcome)
            metrics[f"credit/adjudicator/{k}_accuracy_s0"] = float(((p0 > 0.5) == (outcome > 0.5))
                                                                    .float().mean())
        self._remember(batch, per_episode.cpu(), est, starts)

        y, w, spent = self.labels(batch, starts)
        for k in self.judges:
            metrics[f"credit/adjudicator/{k}_loss"] = self.fit(batch, k, y, w)
        parts = {"adjudicator/blind": est["blind"].cpu(), "adjudicator/privileged":
                 est["privileged"].cpu(), "adjudicator/differential": diff.cpu(),
                 "adjudicator/step_reward": steps.cpu()}
        return CreditOutput(adv * mask, metrics, world_tokens=spent, parts=parts)

    # --- the disagreement report ------------------------------------------------------------
    def _remember(self, batch: Batch, d: torch.Tensor, est: dict, starts: list[list[int]]) -> None:
        if not self.cfg.report_top:
            return
        for b, e in enumerate(batch.episodes):
            ss = starts[b]
            self.disagreements.append({
                "iteration": self.ctx.iteration, "differential": float(d[b]),
                "reward": e.reward, "prompt": e.prompt, "transcript": _transcript(e),
                "reference": e.reference,
                "privileged": [round(float(est["privileged"][b, s]), 3) for s in ss],
                "blind": [round(float(est["blind"][b, s]), 3) for s in ss],
            })
        self.disagreements.sort(key=lambda r: -abs(r["differential"]))
        del self.disagreements[self.cfg.report_top:]

    def report(self) -> dict[str, str | bytes]:
        if not self.disagreements:
            return {}
        lines = ["# Where the privileged and blind adjudicators disagree most", "",
                 ("D = mean over step starts of P(success) privileged - blind. Positive: the judge "
                 "that knows the answer is more hopeful than the one that does not."), ""]
        for r in self.disagreements:
            lines += [(f"## iteration {r['iteration']}: D = {r['differential']:+.3f}, "
                      f"reward {r['reward']:g}"), "", f"reference: `{r['reference']}`", "",
                      "```", r["prompt"] + r["transcript"], "```", "",
                      f"privileged per step: {r['privileged']}", "",
                      f"blind per step: {r['blind']}", ""]
        return {"adjudicator_disagreements.md": "\n".join(lines)}

    def state_dict(self) -> dict:
        return {"judges": {k: m.state_dict() for k, m in self.judges.items()},
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "disagreements": self.disagreements}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        for k, m in self.judges.items():
            m.load_state_dict(state["judges"][k])
            self.optimizers[k].load_state_dict(state["optimizers"][k])
        self.disagreements = state["disagreements"]


def _transcript(e: Episode) -> str:
    return "".join(t.action + t.observation for t in e.turns)
