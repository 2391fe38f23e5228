"""Branched dreams (`dream.branch`): short imagined rollouts from real states, MBPO-style.

Whole-episode Dyna dreams a 20-turn keydoor episode from its start, and one wrong reply in 20
makes it a false failure or a false success (issue 7's second and third rounds). A branch
dreams one decision instead: at `branch` decision states drawn from the iteration's real
episodes (the real history up to an action), the policy samples K candidate actions
(`candidates`); each is stepped in the world model and rolled `horizon - 1` more turns with the
policy acting (the planner's `score`: predicted reward plus V at the last dreamed state). The K
candidates of a state form a group and each gets the advantage

    A_i = score_i - mean_j score_j            (on its action tokens only; the history is context)

an estimate of Q(s, a_i) - V(s) from K counterfactual actions that the real world never saw,
which is what a world model adds to a value function. A state whose K scores tie carries no
signal and is left out. The advantages are then divided by their standard deviation over the
kept candidates, as credit normalises a real batch's (V's differences between neighbouring
states are ~0.01-0.09 on keydoor_long, against unit-scale real advantages), but never by less
than `branch_min_std` (0.02): in the fourth round, without that floor, a flat V gave spreads of
5e-5 that normalising blew up into full-size updates on noise, and one seed fell to 0. The policy then takes one more update on these groups alone, their
advantages scaled by `branch_weight` (`branched_update`). Model error enters one reply deep
(H 1), not twenty, and the real history is never dreamed.

Imagined tokens (each candidate's action and its dreamed replies) are counted in
`dream/imagined_tokens`; a branch spends no world tokens.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from clicker.core.types import Batch, Episode, Turn
from clicker.rollout.runner import LiveEpisode, RolloutSettings
from clicker.train.update import policy_update


def decision_points(episodes: Sequence[Episode], n: int, rng: random.Random
                    ) -> list[tuple[int, int]]:
    """Up to n distinct (episode, turn) pairs drawn uniformly from every turn of the real
    episodes: the states just before that turn's action."""
    points = [(i, t) for i, e in enumerate(episodes) if not e.imagined
              for t in range(len(e.turns)) if e.turns[t].action_span[1] > 0]
    return sorted(rng.sample(points, min(n, len(points))))


def branch_state(episode: Episode, turn: int, group: int) -> LiveEpisode:
    """The live state of `episode` just before its `turn`-th action (no env: a branch is only
    ever stepped in a dream)."""
    start = episode.turns[turn].action_span[0]
    context = len(episode.tokens) - episode.world_tokens  # our own leading context (lessons)
    return LiveEpisode(None, group, int(episode.meta.get("index", 0)),  # type: ignore[arg-type]
                       list(episode.tokens[:start]), list(episode.action_mask[:start]),
                       list(episode.logprobs[:start]), episode.prompt, episode.reference,
                       turns=list(episode.turns[:turn]), meta={"branch_turn": turn},
                       context_tokens=max(0, context))


def branch_advantages(scores: Sequence[float], groups: Sequence[int]) -> list[float]:
    """score minus its group's mean score, per candidate (a group is one decision state)."""
    sums: dict[int, list[float]] = {}
    for s, g in zip(scores, groups):
        sums.setdefault(g, []).append(s)
    return [s - sum(sums[g]) / len(sums[g]) for s, g in zip(scores, groups)]


def branch_episodes(states: Sequence[LiveEpisode], candidates: Sequence[tuple[int, list[int],
                    list[float]]], actions: Sequence[str]) -> list[Episode]:
    """One imagined episode per candidate: its state's history (context, not trained on) then
    the candidate action (trained on)."""
    out = []
    for (i, toks, lps), action in zip(candidates, actions):
        s = states[i]
        n = len(s.tokens)
        out.append(Episode(
            tokens=list(s.tokens) + list(toks), action_mask=[False] * n + [True] * len(toks),
            logprobs=[0.0] * n + list(lps),
            turns=(Turn(action, "", 0.0, "", (n, n + len(toks))),), prompt=s.prompt,
            reference=s.reference, group=s.group, world_tokens=0, imagined=True,
            meta={"index": s.index, "branch_turn": s.meta["branch_turn"],
                  "imagined_tokens": len(toks)}))
    return out


def sample_candidates(dreamer: Any, states: Sequence[LiveEpisode],
                      generator: torch.Generator | None
                      ) -> list[tuple[int, list[int], list[float], bool]]:
    """K = `candidates` actions of the policy at each state with context room left, as
    (state, tokens, log-probs, finished), state-major."""
    r, policy, k = dreamer.rollout, dreamer.policy, dreamer.cfg.candidates
    max_new = r.max_action_tokens or dreamer.world.max_action_tokens
    budget = [min(max_new, policy.max_length - len(s.tokens)) for s in states]
    live = [j for j, b in enumerate(budget) if b > 0]
    if not live:
        return []
    samples = dreamer.sampler.sample(
        [states[j].tokens for j in live], num_samples=k, max_new_tokens=max(budget[j] for j in live),
        temperature=r.temperature, top_p=r.top_p, stop=dreamer.world.stop, generator=generator)
    rows = zip(samples.tokens, samples.logprobs, samples.finished)
    return [(j, toks[:budget[j]], lps[:budget[j]], fin)
            for j, (toks, lps, fin) in zip((live[n // k] for n in range(len(live) * k)), rows)]


def dream_branches(dreamer: Any, episodes: Sequence[Episode], generator: torch.Generator | None,
                   rng: random.Random) -> tuple[list[Episode], list[float], dict[str, float]]:
    """The branch groups of one iteration: imagined episodes (one per candidate; groups whose
    scores all tie left out), their advantages (score - group mean, normalised) and metrics."""
    cfg, r, planner, policy = dreamer.cfg, dreamer.rollout, dreamer.brancher, dreamer.policy
    points = decision_points(episodes, cfg.branch, rng)
    states = [branch_state(episodes[i], t, g) for g, (i, t) in enumerate(points)]
    track = getattr(dreamer.world.predictor, "track", None)
    if track is not None and states:  # prefill each real state once; candidates fork from it
        track([id(s) for s in states], [s.tokens[s.context_tokens:] for s in states])
    cands = sample_candidates(dreamer, states, generator)
    if not cands:
        return [], [], {}
    # score each distinct (state, action) once
    actions = [policy.decode(c[1]) for c in cands]
    first: dict[tuple[int, str], int] = {}
    for c, (j, a) in enumerate(zip([c[0] for c in cands], actions)):
        first.setdefault((j, a), c)
    unique = sorted(first.values())
    settings = RolloutSettings(1, r.temperature, r.top_p, r.max_action_tokens, r.max_turns,
                               reuse_cache=False)
    planner.reset_stats()
    scored = planner.score("train", states, [cands[c] for c in unique], settings, generator)
    imagined = planner.stats.imagined_tokens
    score_of = {(cands[c][0], actions[c]): s for c, s in zip(unique, scored)}
    scores = [score_of[(c[0], a)] for c, a in zip(cands, actions)]
    adv = branch_advantages(scores, [c[0] for c in cands])
    spread: dict[int, float] = {}
    for c, a in zip(cands, adv):
        spread[c[0]] = max(spread.get(c[0], 0.0), abs(a))
    keep = [c for c in range(len(cands)) if spread[cands[c][0]] > 1e-6]
    eps = branch_episodes(states, [cands[c][:3] for c in keep], [actions[c] for c in keep])
    kept = [adv[c] for c in keep]
    std = (sum(a * a for a in kept) / len(kept)) ** 0.5 if kept else 0.0  # group means are 0
    metrics = {"dream/branch/states": float(len({c[0] for c in cands})),
               "dream/branch/informative": float(sum(1 for v in spread.values() if v > 1e-6)),
               "dream/branch/distinct": len(unique) / max(1, len(cands)),
               "dream/branch/score": sum(scores) / max(1, len(scores)),
               "dream/branch/adv_abs": sum(abs(a) for a in adv) / max(1, len(adv)),
               "dream/branch/adv_std": std,
               "dream/branch/imagined_tokens": float(imagined)}
    scale = max(std, cfg.branch_min_std)
    return eps, [a / scale for a in kept] if scale > 0 else kept, metrics


def branched_update(dreamer: Any, episodes: Sequence[Episode], policy: Any,
                    optimizer: torch.optim.Optimizer, cfg: Any, iteration: int,
                    generator: torch.Generator | None,
                    reference: torch.nn.Module | None = None,
                    update_generator: torch.Generator | None = None) -> dict[str, float]:
    """One policy update on this iteration's branch groups (nothing before the dreamer's
    warm-up is over, while its world model is not trusted, or when every group ties)."""
    if not dreamer.ready:
        return {}
    if not dreamer.trusted():
        return {"dream/branch/gated": 1.0}
    rng = random.Random(dreamer.seed * 1_000_003 + iteration)
    eps, adv, metrics = dream_branches(dreamer, episodes, generator, rng)
    dreamer.imagined_tokens += int(metrics.get("dream/branch/imagined_tokens", 0))
    metrics |= {"dream/branch/gated": 0.0, "dream/branch/updated": float(bool(eps))}
    if not eps:
        return metrics
    batch = Batch.from_episodes(eps, policy.pad_id)
    weight = torch.tensor(adv, dtype=torch.float32)[:, None] * cfg.dream.branch_weight
    advantages = weight * batch.action_mask.float()
    result = policy_update(policy, optimizer, batch, advantages, cfg.update,
                           temperature=cfg.rollout.temperature or 1.0, reference=reference,
                           generator=update_generator)
    metrics["dream/branch/loss"] = float(result.metrics.get("loss/policy", 0.0))
    return metrics
