"""Monte-Carlo step credit: VinePPO (Kazemnejad et al., arXiv 2410.01679).

No critic: the value of a state at a step boundary is the mean real return of k fresh rollouts
of the current policy from it (`clicker.rollout.continuation`), and step j of an episode gets
A_j = r_j + V(s_{j+1}) - V(s_j) on every one of its action tokens (V after the last step = 0).
Because the estimates are unbiased, the advantages are unbiased too, whatever their noise.

Departures from the paper:
- V(s_0), the prompt state, costs no rollouts: the episode's group siblings are G-1 samples from
  the same prompt, so their mean reward (leave-one-out) estimates it; a group of one gets
  continuations like any other boundary.
- Steps are turns in multi-turn worlds and every `step_tokens` action tokens in single-turn
  worlds (VinePPO splits reasoning at newlines); at most `max_steps` per episode, the tail
  merged into the last step.
- Rewards may arrive inside an episode (multi-turn envs): r_j is the real reward received
  inside step j; VinePPO only has the final reward.
- Continuations are real rollouts and count as world tokens: by default the tokens each one
  exchanged after its cut (the world's state is restored, as a text state can be for free);
  `count_replay: true` also counts the replayed prefix (an env without snapshots).

Run: `clicker train --set credit.sources='{mc: 1.0}' --set credit.mc.k=4`.
"""

from __future__ import annotations

from itertools import pairwise

import torch

from clicker.core.config import MCConfig
from clicker.core.returns import explained_variance, step_starts, whiten
from clicker.core.types import Batch, Episode
from clicker.credit.base import CreditContext, CreditOutput, CreditSource
from clicker.rollout.continuation import continuation_values


def step_rewards(token_rewards: torch.Tensor, starts: list[int]) -> list[float]:
    """Real reward inside each step; step j covers tokens [starts[j], starts[j+1]) (step 0 from
    token 0, the last step to the end). token_rewards (T,) float."""
    bounds = [0, *starts[1:], token_rewards.shape[0]]
    return [float(token_rewards[a:b].sum()) for a, b in pairwise(bounds)]


def step_advantages(rewards: list[float], values: list[float]) -> list[float]:
    """A_j = r_j + V(s_{j+1}) - V(s_j) per step, with V after the last step = 0.

    rewards (S,) real reward inside step j; values (S,) V(s_j) at the start of step j.
    """
    if len(rewards) != len(values):
        raise ValueError(f"{len(rewards)} step rewards but {len(values)} values")
    nxt = [*values[1:], 0.0]
    return [r + v1 - v0 for r, v1, v0 in zip(rewards, nxt, values)]


def mc_advantages(
    token_rewards: torch.Tensor,
    action_mask: torch.Tensor,
    starts: list[list[int]],
    values: list[list[float]],
) -> torch.Tensor:
    """(B, T) float32: each action token of step j of row b gets A_j (0 off the action mask).

    token_rewards (B, T) float: real rewards (each turn's on its last action token);
    action_mask (B, T) bool; starts[b] (S_b,) token index where each step of row b begins;
    values[b] (S_b,) V(s_j) at those starts. A row with no steps gets zeros.
    """
    B, T = action_mask.shape
    adv = torch.zeros((B, T), dtype=torch.float32)
    r_all = token_rewards.detach().float().cpu()
    for b in range(B):
        if not starts[b]:
            continue
        a = step_advantages(step_rewards(r_all[b], starts[b]), values[b])
        bounds = [0, *starts[b][1:], T]
        for j, (lo, hi) in enumerate(pairwise(bounds)):
            adv[b, lo:hi] = a[j]
    return adv * action_mask.cpu()


class MCCredit(CreditSource):
    """VinePPO step advantages from Monte-Carlo continuations in the real world."""

    name = "mc"

    def __init__(self, cfg: MCConfig, ctx: CreditContext):
        if ctx.world is None:
            raise ValueError("mc credit runs continuations in the world: build the "
                             "CreditContext with world=...")
        self.cfg, self.ctx = cfg, ctx

    def starts(self, episode: Episode) -> list[int]:
        """Step boundaries of an episode, at most cfg.max_steps (the tail joins the last step)."""
        multi_turn = self.ctx.world.max_turns > 1  # type: ignore[union-attr]
        spans = [t.action_span for t in episode.turns]
        st = step_starts(episode.action_mask, spans, self.cfg.step_tokens, multi_turn)
        return st[: self.cfg.max_steps]

    def __call__(self, batch: Batch) -> CreditOutput:
        cfg, ctx = self.cfg, self.ctx
        eps = list(batch.episodes)
        starts = [self.starts(e) for e in eps]
        siblings: dict[int, list[int]] = {}
        for i, e in enumerate(eps):
            siblings.setdefault(e.group, []).append(i)
        # V(s_0): leave-one-out mean reward of the group's other samples of the same prompt
        v0: dict[int, float] = {}
        cuts: list[list[int]] = []
        for i, e in enumerate(eps):
            others = [j for j in siblings[e.group] if j != i]
            if starts[i] and others:
                v0[i] = sum(eps[j].reward for j in others) / len(others)
                cuts.append(starts[i][1:])
            else:
                cuts.append(starts[i])
        mc, world_tokens = continuation_values(
            ctx.policy, ctx.world, eps, cuts, cfg.k, ctx.settings,  # type: ignore[arg-type]
            ctx.generator, ctx.sampler, count_replay=cfg.count_replay,
        )
        values = [([v0[i]] if i in v0 else []) + mc[i] for i in range(len(eps))]
        adv = mc_advantages(batch.token_rewards, batch.action_mask, starts, values)
        mask = batch.action_mask.cpu()
        metrics = self._metrics(batch, starts, values, adv, mask)
        metrics["credit/mc/continuations"] = float(sum(len(c) for c in cuts) * cfg.k)
        metrics["credit/mc/world_tokens"] = float(world_tokens)
        if cfg.whiten:
            adv = whiten(adv, mask)
        return CreditOutput(adv.to(batch.action_mask.device), metrics, world_tokens)

    def _metrics(self, batch: Batch, starts: list[list[int]], values: list[list[float]],
                 adv: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        """Mean |A|, steps, V(s_0), and how well V predicts the realized return-to-go."""
        r_all = batch.token_rewards.detach().float().cpu()
        preds: list[float] = []
        targets: list[float] = []
        for b, st in enumerate(starts):
            if not st:
                continue
            r = step_rewards(r_all[b], st)
            targets += [sum(r[j:]) for j in range(len(r))]
            preds += values[b]
        s0 = [v[0] for v in values if v]
        return {
            "credit/mc/adv_abs_mean": float(adv[mask].abs().mean()) if mask.any() else 0.0,
            "credit/mc/steps_mean": sum(len(s) for s in starts) / max(1, len(starts)),
            "credit/mc/value_s0_mean": sum(s0) / len(s0) if s0 else float("nan"),
            "credit/mc/explained_variance": explained_variance(
                torch.tensor(preds), torch.tensor(targets)
            ),
        }
