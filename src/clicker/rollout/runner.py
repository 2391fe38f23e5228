"""The multi-turn episode runner: token-in-token-out rollouts in a `World`.

Each turn, every unfinished episode's exact token context goes to the batched sampler; the
sampled tokens are appended as they are (never re-tokenized), the decoded action goes to the env,
and the env's observation is tokenized and appended with `action_mask` False, so observation
tokens are never trained on. The G episodes of a group start from one prompt, whose prefill the
sampler shares. Every token exchanged with the real env (prompt, actions, observations) is
counted as a world token.

Single-turn tasks are Worlds with max_turns=1 (`SingleTurnWorld`), so one runner serves both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from clicker.core.types import Episode, Turn
from clicker.models.policy import Policy
from clicker.rollout.sampler import Sampler
from clicker.tasks.base import Env, Split, World


@dataclass
class _Live:
    env: Env
    group: int
    index: int
    tokens: list[int]
    action_mask: list[bool]
    logprobs: list[float]
    prompt: str
    reference: str
    turns: list[Turn] = field(default_factory=list)
    done: bool = False
    truncated: bool = False

    def freeze(self, split: str) -> Episode:
        return Episode(
            tokens=self.tokens,
            action_mask=self.action_mask,
            logprobs=self.logprobs,
            turns=tuple(self.turns),
            prompt=self.prompt,
            reference=self.reference,
            group=self.group,
            world_tokens=len(self.tokens),  # every token here came from or went to the real env
            truncated=self.truncated,
            meta={"index": self.index, "split": split},
        )


@dataclass(frozen=True)
class RolloutSettings:
    group_size: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_action_tokens: int | None = None  # None: the world's own cap
    max_turns: int | None = None  # None: the world's own limit


def run_episodes(
    policy: Policy,
    world: World,
    split: Split,
    indices: list[int],
    settings: RolloutSettings,
    generator: torch.Generator | None = None,
    sampler: Sampler | None = None,
    group_offset: int = 0,
) -> list[Episode]:
    """Roll out G episodes for each problem index; episodes of index k share group id k+offset."""
    sampler = sampler or Sampler(policy.model, policy.tokenizer)
    G = settings.group_size
    max_turns = settings.max_turns or world.max_turns
    max_new = settings.max_action_tokens or world.max_action_tokens
    live: list[_Live] = []
    for gi, idx in enumerate(indices):
        reference = world.reference(split, idx)
        for _ in range(G):
            env = world.make(split, idx)
            prompt = env.reset()
            ids = policy.encode(prompt)
            live.append(
                _Live(env, gi + group_offset, idx, ids, [False] * len(ids), [0.0] * len(ids),
                      prompt, reference)
            )
    limit = policy.max_length
    for turn in range(max_turns):
        active = [e for e in live if not e.done]
        if not active:
            break
        room = min(limit - len(e.tokens) for e in active)
        if room <= 0:
            for e in active:
                e.done = e.truncated = True
            break
        if turn == 0:  # all G members of a group share one prompt: prefill it once
            prompts = [active[k].tokens for k in range(0, len(active), G)]
            samples = sampler.sample(
                prompts, num_samples=G, max_new_tokens=min(max_new, room),
                temperature=settings.temperature, top_p=settings.top_p,
                stop=world.stop, generator=generator,
            )
        else:
            samples = sampler.sample(
                [e.tokens for e in active], num_samples=1, max_new_tokens=min(max_new, room),
                temperature=settings.temperature, top_p=settings.top_p,
                stop=world.stop, generator=generator,
            )
        for e, toks, lps in zip(active, samples.tokens, samples.logprobs):
            start = len(e.tokens)
            e.tokens.extend(toks)
            e.action_mask.extend([True] * len(toks))
            e.logprobs.extend(lps)
            action = policy.decode(toks)
            step = e.env.step(action)
            obs_ids = policy.encode(step.observation) if not step.done else []
            e.tokens.extend(obs_ids)
            e.action_mask.extend([False] * len(obs_ids))
            e.logprobs.extend([0.0] * len(obs_ids))
            e.turns.append(
                Turn(action, step.observation, float(step.reward), step.feedback,
                     (start, start + len(toks)))
            )
            if step.done:
                e.done = True
    for e in live:
        if not e.done:
            e.truncated = True
    return [e.freeze(split) for e in live]
