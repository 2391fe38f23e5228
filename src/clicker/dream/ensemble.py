"""`WorldModelEnsemble`: several world models, and their disagreement (`dream.wm_members`).

A policy trained in dreams learns to go where the world model is wrong in its favour: late in
the sixth round of issue 7 (docs/dreaming_rounds.md) the dreams of a learned keydoor model succeeded
twice as often as real play, with up to 13% of held-out rewardless steps given a reward. The
usual guard (PETS, Chua et al. 2018; MBPO, Janner et al. 2019; MOPO, Yu et al. 2020) is an
ensemble: members that saw the same data through different minibatches agree where the data
pins the answer down and disagree where one of them extrapolates.

Here member 0 writes the dreams (its KV sessions, sampling and accuracy metrics are those of a
single `WorldModel`); the others train on the same real episodes with their own replay order and
renamings (seed + i) and *score* what member 0 dreamed: `agreement(episode)` is, over the
dream's events (steps with a reward or an end, `is_event`: what its return hangs on) and over
all members, the lowest probability given to the header the dream carries there (`[r=1 end]`),
teacher forced in one packed pass per member (`WorldModel._reply_nll`). The Dreamer drops
dreams below `dream.min_agreement`. Rewardless steps are not judged, nor is observation text: a
sampled unseen room is uncertain for every member, and rightly so. Judging every step's header
was the first version; its minimum over a dream's steps favours short dreams, which on keydoor
are the successful ones: in a pilot (docs/dreaming_rounds.md, seventh round) the dreams it kept
succeeded 50-75% of the time in iterations where real play succeeded 9%.

With `dream.doubt: cut`, `dream.judge: steps` judges every step's header instead: a dream
whose lead wrote `[r=0]` where some member gives that header less than `min_agreement` (it
believes the step is a goal or an end) is cut there and V bootstraps the rest. A missed goal is
the opposite error of a farmed one, and it teaches the policy that the right move does not pay.
Cutting keeps the dream's turns before the doubt, so the short-dream bias of dropping does not
arise.

Logged on held-out real transitions before any member trains on them: `dream/wm/disagreement`,
the mean over transitions of the spread (max - min over members) of the probability of the true
header, and `dream/wm/event_agreement`, the mean over real events (rewards, ends) of the
members' lowest probability of the true header: how often a true goal would pass the gate.

Cost: each member trains as a single model does (members x the world model's training time).
The header is found by encoding it alone: exact for the character tokenizer of the tiny model,
approximate for a tokenizer that merges across the header's closing bracket.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from clicker.core.types import Episode
from clicker.dream.packing import prefix_groups
from clicker.dream.transcript import (
    DreamRequest,
    Prediction,
    Transition,
    episode_transitions,
    format_reply,
)
from clicker.dream.world_model import WorldModel


def header_logprobs(wm: WorldModel, ts: Sequence[Transition], rows: int = 32) -> list[float]:
    """log p(each transition's reply header | its history) under wm: teacher forced, no grad,
    histories (the policy's ids, `WorldModel.own`) that are prefixes of one another sharing one
    forward pass."""
    out = [0.0] * len(ts)
    if not ts:
        return out
    wm.model.eval()
    ts = wm.own_transitions(ts, cut=False)
    with torch.no_grad():
        for chunk in prefix_groups([t.history for t in ts], rows):
            groups = [(list(root), [(len(ts[i].history), wm.reply_ids(ts[i]), 1.0)
                                    for i in members]) for root, members in chunk]
            nll = wm._reply_nll(groups, per_token=True)
            order = [i for _, members in chunk for i in members]
            for r, i in enumerate(order):
                header = format_reply(ts[i].reward, ts[i].done, "")  # no observation
                k = len(wm.tokenizer.encode(header, add_special_tokens=False))
                out[i] = -float(nll[r, :k].sum())
    return out


def lowest(events: Sequence[tuple[int, float]]) -> float:
    """A dream's agreement: its events' lowest (1.0 for a dream without one)."""
    return min((a for _, a in events), default=1.0)


class WorldModelEnsemble:
    """`members[0]` dreams; all of them judge its dreams (see the module doc)."""

    def __init__(self, members: Sequence[WorldModel]):
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 world models, got {len(members)}")
        self.members = list(members)
        self.lead = self.members[0]

    # the lead's interface, for DreamWorld, the planner and the Dreamer's trust gate
    def predict(self, requests: list[DreamRequest]) -> list[Prediction]:
        return self.lead.predict(requests)

    def track(self, keys: list[int], histories: list[list[int]]) -> None:
        self.lead.track(keys, histories)

    @property
    def event_recall(self) -> float | None:
        return self.lead.event_recall

    @property
    def false_reward_rate(self) -> float | None:
        return self.lead.false_reward_rate

    def transitions(self, episodes: Sequence[Episode]) -> list[list[Transition]]:
        """Each episode's transitions, imagined ones included."""
        lead, cap = self.lead, max(m.history_cap for m in self.members)
        groups = [episode_transitions(e, lead.max_turns, cap, dreams=True) for e in episodes]
        # as many as fit every member
        return [g[:min(len(m.own_transitions(g)) for m in self.members)] for g in groups]

    def header_probs(self, ts: Sequence[Transition]) -> list[list[float]]:
        """[member][transition] probability of the transition's reply header."""
        return [[math.exp(x) for x in header_logprobs(m, ts, m.cfg.micro_batch)]
                for m in self.members]

    def observe(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """Disagreement on the new real transitions (held out), then the lead's `observe`
        (its accuracy metrics, then training) and the others' training on the same episodes."""
        groups = [g for g in self.transitions([e for e in episodes if not e.imagined]) if g]
        new = [t for g in groups for t in g]
        metrics: dict[str, float] = {}
        if new:
            lead = self.lead
            sample = (lead.rng.sample(new, lead.cfg.eval_max) if len(new) > lead.cfg.eval_max
                      else new)
            probs = list(zip(*self.header_probs(sample)))
            metrics["dream/wm/disagreement"] = sum(max(p) - min(p) for p in probs) / len(probs)
            events = [t for t in new if lead.is_event(t)]
            if events:
                metrics["dream/wm/event_agreement"] = sum(
                    min(p) for p in zip(*self.header_probs(events))) / len(events)
        metrics |= self.lead.observe(episodes)
        for m in self.members[1:]:
            m.learn(groups)
        return metrics

    def event_agreements(self, episodes: Sequence[Episode], steps: bool = False
                         ) -> list[list[tuple[int, float]]]:
        """Per dream: (turn, lowest probability any member gives its header) for each of its
        events (transition i of an episode is its turn i), or with `steps` for each of its
        turns (`dream.judge: steps`: a rewardless header that some member doubts is a goal or
        an end it believes the dream missed)."""
        per = [[(i, t) for i, t in enumerate(g) if steps or self.lead.is_event(t)]
               for g in self.transitions(episodes)]
        flat = [t for g in per for _, t in g]
        if not flat:
            return [[] for _ in episodes]
        low = iter([min(p) for p in zip(*self.header_probs(flat))])
        return [[(i, next(low)) for i, _ in g] for g in per]

    def agreement(self, episodes: Sequence[Episode]) -> list[float]:
        """Per dream: the lowest probability any member gives the header of one of its events
        (1.0 for a dream without one)."""
        return [lowest(g) for g in self.event_agreements(episodes)]

    def state_dict(self) -> dict:
        return {"members": [m.state_dict() for m in self.members]}

    def load_state_dict(self, state: dict) -> None:
        if len(state["members"]) != len(self.members):
            raise ValueError(f"checkpoint has {len(state['members'])} world models, the run "
                             f"{len(self.members)} (dream.wm_members)")
        for m, s in zip(self.members, state["members"]):
            m.load_state_dict(s)
