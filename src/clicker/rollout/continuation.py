"""Monte-Carlo continuations: re-enter a real episode at a token and finish it k times.

VinePPO (Kazemnejad et al., arXiv 2410.01679) estimates V(s) at a step boundary s as the mean
return of k fresh rollouts of the current policy from s. Here a state is "just before action
token c of an episode": a fresh env (`world.make(split, index)` from `episode.meta`) is reset and
the actions of every turn that ends at or before c are replayed (their exact tokens; the
observations come from the replayed env, so a deterministic env reproduces the original tokens
up to c). A cut inside an action (single-turn worlds cut every N tokens) keeps the action's
tokens before c as a forced prefix: the policy samples the rest and the env gets the decoded
whole. The continuations then run in the runner's own turn loop (`runner.play`), all cuts of all
episodes batched together, the k continuations of a cut sharing one prefill.

World tokens: a continuation is a real episode, replayed prefix included (the env has to be
driven through it again), so it counts every token it holds, as the runner does.
"""

from __future__ import annotations

import torch

from clicker.core.types import Episode, Turn
from clicker.models.policy import Policy
from clicker.rollout.runner import LiveEpisode, RolloutSettings, play
from clicker.rollout.sampler import Sampler
from clicker.tasks.base import World


def replay(policy: Policy, world: World, episode: Episode, cut: int) -> LiveEpisode:
    """A live state at the real env's state just before token `cut` (an action token) of
    `episode`. meta records the cut and how many turns were replayed whole."""
    if not (0 <= cut < len(episode.tokens) and episode.action_mask[cut]):
        raise ValueError(f"cut {cut} is not an action token of the episode")
    split, index = episode.meta["split"], episode.meta["index"]
    env = world.make(split, index)
    prompt = env.reset()
    tokens = policy.encode(prompt)
    mask, logprobs = [False] * len(tokens), [0.0] * len(tokens)
    turns: list[Turn] = []
    prefix = 0
    for turn in episode.turns:
        s, e = turn.action_span
        if e > cut:  # the turn the cut falls in: keep its tokens before the cut, stop replaying
            if s > cut:
                raise ValueError(f"cut {cut} lies outside every turn's action span")
            prefix = cut - s
            tokens += episode.tokens[s:cut]
            mask += episode.action_mask[s:cut]
            logprobs += episode.logprobs[s:cut]
            break
        start = len(tokens)
        tokens += episode.tokens[s:e]
        mask += episode.action_mask[s:e]
        logprobs += episode.logprobs[s:e]
        step = env.step(turn.action)
        if step.done:
            raise ValueError(f"replaying to token {cut}: the env ended before it (is the env "
                             "deterministic given split and index?)")
        turns.append(Turn(turn.action, step.observation, float(step.reward), step.feedback,
                          (start, start + e - s)))
        obs = policy.encode(step.observation)
        tokens += obs
        mask += [False] * len(obs)
        logprobs += [0.0] * len(obs)
    return LiveEpisode(env, episode.group, index, tokens, mask, logprobs, prompt, episode.reference,
                 turns=turns, prefix=prefix, meta={"cut": cut, "replayed": len(turns)})


def continuation_episodes(
    policy: Policy,
    world: World,
    episodes: list[Episode],
    cuts: list[list[int]],
    k: int,
    settings: RolloutSettings,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
) -> list[list[list[Episode]]]:
    """[i][j] -> the k continuation episodes of `episodes[i]` from token `cuts[i][j]`.

    Each continuation's meta has "cut" and "replayed" (turns replayed before the cut) besides
    "index" and "split"; its turns include the replayed ones.
    """
    if len(cuts) != len(episodes):
        raise ValueError(f"{len(cuts)} cut lists for {len(episodes)} episodes")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    live = [replay(policy, world, ep, c) for ep, cs in zip(episodes, cuts) for c in cs
            for _ in range(k)]
    if live:
        play(policy, world, live, settings, generator, sampler, share=k)
    out: list[list[list[Episode]]] = []
    r = 0
    for ep, cs in zip(episodes, cuts):
        split = ep.meta["split"]
        out.append([[e.freeze(split) for e in live[r + j * k: r + (j + 1) * k]]
                    for j in range(len(cs))])
        r += len(cs) * k
    return out


def future_reward(continuation: Episode) -> float:
    """Real reward a continuation earned after its cut (the turns it did not replay)."""
    return float(sum(t.reward for t in continuation.turns[continuation.meta["replayed"]:]))


def continuation_values(
    policy: Policy,
    world: World,
    episodes: list[Episode],
    cuts: list[list[int]],
    k: int,
    settings: RolloutSettings,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
    count_replay: bool = False,
) -> tuple[list[list[float]], int]:
    """Monte-Carlo V at each cut: values[i][j] is the mean future real reward of k continuations
    of `episodes[i]` from just before token `cuts[i][j]`; also the world tokens they spent.

    World tokens: by default the tokens each continuation exchanged after its cut (new actions
    and observations), i.e. the world's state is restored, not replayed; for a text task the
    state is the transcript, so restoring it is free. count_replay=True also counts the replayed
    prefix (prompt, earlier actions and observations), the cost in an env without snapshots.
    """
    conts = continuation_episodes(policy, world, episodes, cuts, k, settings, generator, sampler)
    values = [[sum(future_reward(c) for c in group) / k for group in per_ep] for per_ep in conts]
    tokens = sum(c.world_tokens if count_replay else len(c.tokens) - c.meta["cut"]
                  for per_ep in conts for group in per_ep for c in group)
    return values, tokens
