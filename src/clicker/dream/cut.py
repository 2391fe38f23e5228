"""Cut dreams: stop an untrusted dream before its first doubted step and bootstrap from V.

`dream.doubt: drop` (the default) drops a whole Dyna dream when one of its steps is doubted.
That selects which dreams the policy learns from, and on keydoor_long the selection favoured
success (docs/dreaming_rounds.md, seventh round): a failure that ends early, on a malformed
reply or a false end, holds a doubted step and is dropped, while a dream the model believes in
to its goal is kept.

`dream.doubt: cut` keeps every dream up to its first doubted step instead, and ends it there
with the value model's estimate of what would follow, the usual treatment of a truncated
rollout in actor-critic methods (Dyna-style model-based value expansion, MVE, Feinberg et al.
2018, cuts imagined rollouts at a horizon the same way). A step is doubted when

- the world model's reply to it was malformed (with `drop`, that ends the dream as a failure
  with reward 0, a pessimism no real env shows),
- its confidence (the least probable token of the reply) is below `min_confidence`, or
- with an ensemble, it holds a reward or an end whose header some member gives a probability
  below `min_agreement`.

A dream whose first step is doubted has no trusted transition and is dropped. Otherwise, cut
before doubted turn k, the dream keeps turns 0..k-1; its tokens end after turn k-1's action,
and turn k-1's reward becomes r_{k-1} + gamma * V(s_k), where s_k is the dreamed state (all
tokens through turn k-1's observation) at which the doubted action was taken. With the value
model's terminal V = 0 after a row's last action, its TD target and the policy's shaped reward
at that turn are then exactly the bootstrapped ones: r_{k-1} + gamma * V(s_k) - V(s_{k-1}). The
cut dream is marked `truncated` (its end is not the env's), and `meta["bootstrap"]` holds the
value added, so success is read from the predicted rewards alone (`dream_reward`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from clicker.core.types import Episode

ValueFn = Callable[[list[list[int]]], list[float]]


def first_doubted(e: Episode, min_confidence: float,
                  events: Sequence[tuple[int, float]] = (), min_agreement: float = 0.0
                  ) -> int | None:
    """The first doubted turn of dream `e` (see the module doc), or None when none is.

    `events` are (turn, lowest member probability of its header) for the dream's events, from
    `WorldModelEnsemble.event_agreements`."""
    doubted = [t for t, c in enumerate(e.meta.get("dream_confidences", ()))
               if c < min_confidence]
    if e.meta.get("dream_malformed") and e.turns:
        doubted.append(len(e.turns) - 1)
    doubted += [t for t, a in events if a < min_agreement]
    return min(doubted, default=None)


def cut_state(e: Episode, turn: int) -> list[int]:
    """The tokens of the dreamed state at which turn `turn`'s action was taken (all tokens
    before that action: V's input, as the planner's states)."""
    return list(e.tokens[:e.turns[turn].action_span[0]])


def cut_episode(e: Episode, turn: int, bootstrap: float) -> Episode:
    """Dream `e` cut before turn `turn` (>= 1): turns 0..turn-1, tokens through turn-1's action,
    `bootstrap` added to turn-1's reward (see the module doc)."""
    if not 1 <= turn < len(e.turns):
        raise ValueError(f"cut before turn {turn}: the dream has {len(e.turns)} turns, and a "
                         "cut keeps at least one and drops at least one")
    last = e.turns[turn - 1]
    end = last.action_span[1]
    turns = (*e.turns[:turn - 1], replace(last, reward=last.reward + bootstrap))
    meta = dict(e.meta, cut=turn, bootstrap=bootstrap,
                imagined_tokens=e.meta.get("imagined_tokens", len(e.tokens))
                - (len(e.tokens) - end))
    meta["dream_confidences"] = list(e.meta.get("dream_confidences", ()))[:turn]
    meta["dream_malformed"] = False
    return replace(e, tokens=e.tokens[:end], action_mask=e.action_mask[:end],
                   logprobs=e.logprobs[:end], turns=turns, truncated=True, meta=meta)


def dream_reward(e: Episode) -> float:
    """The reward a dream's world model predicted (without a cut's bootstrap)."""
    return e.reward - float(e.meta.get("bootstrap", 0.0))


def cut_dreams(dreams: Sequence[Episode], turns: Sequence[int | None], value: ValueFn,
               gamma: float = 1.0) -> list[Episode]:
    """Each dream cut before its doubted turn (None: kept whole; 0: dropped), with
    gamma * V of the state there as its bootstrap; one batched V call for all cuts."""
    cut = [(e, t) for e, t in zip(dreams, turns) if t]
    values = iter(value([cut_state(e, t) for e, t in cut]) if cut else [])
    out = []
    for e, t in zip(dreams, turns):
        if t is None:
            out.append(e)
        elif t > 0:
            out.append(cut_episode(e, t, gamma * float(next(values))))
    return out
