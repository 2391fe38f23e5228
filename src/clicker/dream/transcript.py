"""The text of a world model's transitions: the reply format, the transitions of real episodes,
and what a predictor is asked and answers (see `world_model` for the model that learns them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from clicker.core.types import Episode
from clicker.tasks.base import Split

_HEADER = re.compile(r"\[r=([^\]\s]+)( end)?\]")


def format_reply(reward: float, done: bool, observation: str) -> str:
    """The reply text the world model learns to write (EOS follows it as a token).

    The reward is written with `:g`, so it keeps 6 significant digits."""
    return f"[r={reward:g}{' end' if done else ''}]{observation}"


QUIET = format_reply(0.0, False, "")  # the header of a reply with no reward and no end


def header_prob(decode: Callable[[list[int]], str], tokens: Sequence[int],
                logprobs: Sequence[float], header: str) -> float:
    """The probability a model gave the header of a reply it wrote: the product over the
    reply's first tokens up to the first whose text starts with `header` (`decode` turns ids
    into text; a token that also holds the text's start counts whole); 1.0 when none does."""
    total = 0.0
    for k, lp in enumerate(logprobs[:len(tokens)], start=1):
        total += lp
        if decode(list(tokens[:k])).startswith(header):
            return math.exp(total)
    return 1.0


def parse_reply(text: str) -> tuple[float, bool, str] | None:
    """(reward, done, observation) from a reply's text, or None when it is malformed (no header
    at the start, or a reward that is not a finite number)."""
    m = _HEADER.match(text)
    if m is None:
        return None
    try:
        reward = float(m.group(1))
    except ValueError:
        return None
    if not math.isfinite(reward):
        return None
    return reward, m.group(2) is not None, text[m.end():]


@dataclass(frozen=True)
class Transition:
    """One real step: the history the env answered and what it answered."""

    history: tuple[int, ...]  # episode tokens (without leading context) up to the action's end
    reward: float
    done: bool
    observation: str


def transitions(episodes: Sequence[Episode], max_turns: int, max_history: int) -> list[Transition]:
    """One transition per turn of each real episode, in order.

    Imagined episodes are skipped (a model must not learn from its own dreams). The last turn of
    an episode that is truncated or has `max_turns` turns is skipped (the env may have ended it
    for the turn limit). Histories longer than `max_history` tokens are skipped.
    """
    return [t for e in episodes for t in episode_transitions(e, max_turns, max_history)]


def episode_transitions(e: Episode, max_turns: int, max_history: int, *,
                        dreams: bool = False) -> list[Transition]:
    """`transitions` of one episode (each history is a prefix of the next); none of an imagined
    one unless `dreams` (a world model never learns from dreams; an ensemble scores them)."""
    if e.imagined and not dreams:
        return []
    exchanged = e.meta.get("imagined_tokens", 0) if e.imagined else e.world_tokens
    ctx = max(0, len(e.tokens) - exchanged)  # leading context: the env never saw it
    turns = e.turns
    if turns and (e.truncated or len(turns) >= max_turns):
        turns = turns[:-1]
    out = []
    for i, turn in enumerate(turns):
        end = turn.action_span[1]
        if end - ctx > max_history:
            break
        done = i == len(e.turns) - 1  # the env ended the episode after its last turn
        out.append(Transition(tuple(e.tokens[ctx:end]), float(turn.reward), done,
                              turn.observation))
    return out


@dataclass(frozen=True)
class Prediction:
    """A world model's answer to one action. ok False: the reply was malformed (then done,
    reward 0, confidence 0: a dream ends where the model cannot say what happens)."""

    observation: str
    reward: float
    done: bool
    confidence: float  # the least probable token of the reply (1 for an exact oracle)
    ok: bool = True


FAILED = Prediction("", 0.0, True, 0.0, False)


@dataclass(frozen=True)
class DreamRequest:
    """What a predictor gets for one action: the learned model reads `history` (token ids of
    prompt, actions and observations so far, this action last); an exact oracle replays
    `actions` in a fresh real env at (split, index)."""

    history: list[int]
    split: Split
    index: int
    actions: tuple[str, ...]
    # for a learned model's KV session: the asking env's identity (stable over its turns; None:
    # no continuation), and how many leading history tokens are its state before this action
    # (requests with the same state share one prefill)
    key: int | None = None
    shared: int = 0
    # the real state this dream branches from (the planner's; `WorldModel.track` holds it)
    base: int | None = None


class Predictor(Protocol):
    """Anything that answers actions in place of the env: a WorldModel, an OracleModel."""

    def predict(self, requests: list[DreamRequest]) -> list[Prediction]: ...


def is_event(t: Transition) -> bool:
    """A reply with a reward or an end: the events a dream's return hangs on, and the rarest
    replies."""
    return t.reward != 0 or t.done


def score(preds: Sequence[Prediction], data: Sequence[Transition],
          events: Sequence[Transition] = ()) -> tuple[dict[str, float], tuple[int, ...]]:
    """Predictions (for data, then events) against the real replies: `dream/wm/*` accuracy
    over data; `event_recall` (reward and end right) over the events of both; `false_rewards`
    and `false_ends` over data's non-events. Also returns the counts (events right, events,
    non-events given a reward, non-events)."""
    n, metrics = len(data), {}
    if n:
        pd = preds[:n]
        metrics = {
            "dream/wm/obs_exact": sum(p.ok and p.observation == t.observation
                                      for p, t in zip(pd, data)) / n,
            "dream/wm/reward_mae": sum(abs(p.reward - t.reward) for p, t in zip(pd, data)) / n,
            "dream/wm/done_acc": sum(p.done == t.done for p, t in zip(pd, data)) / n,
            "dream/wm/parse_fail": sum(not p.ok for p in pd) / n,
            "dream/wm/reward_calibration": (sum(p.reward for p in pd)
                                            - sum(t.reward for t in data)) / n,
            "dream/wm/confidence": sum(p.confidence for p in pd) / n,
        }
    pairs = list(zip(preds, list(data) + list(events)))
    real = [(p, t) for p, t in pairs if is_event(t)]
    quiet = [p for p, t in pairs[:n] if not is_event(t)]
    hits = sum(p.ok and p.reward == t.reward and p.done == t.done for p, t in real)
    false = sum(p.ok and p.reward != 0 for p in quiet)
    if real:
        metrics["dream/wm/event_recall"] = hits / len(real)
    if quiet:
        metrics["dream/wm/false_rewards"] = false / len(quiet)
        metrics["dream/wm/false_ends"] = sum(p.ok and p.done for p in quiet) / len(quiet)
    return metrics, (hits, len(real), false, len(quiet))
