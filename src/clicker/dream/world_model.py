"""`world_model`: a causal LM that learns the environment's side of the conversation (issue 7).

Real interaction is scarce: every world token costs. A world model trained online on real
episode transcripts predicts what the env would answer to an action, so the policy can roll out
in imagination (`clicker.dream.world.DreamWorld`: imagined episodes, world_tokens 0), as in Dyna
(Sutton 1991) and the learned world models of Dreamer (Hafner et al. 2020); here the model is a
language model and its "latent state" is the transcript itself.

One transition is text. The *history* is the episode's own token ids up to the end of an action
(what the policy saw plus its action); the *reply* is `[r=<reward>]` or `[r=<reward> end]`, the
observation text, then the tokenizer's EOS token. Reward and done come first, so that the greedy
reply commits to them before it writes the observation, and one next-token loss trains all
three. The model starts as a copy of the policy's LM, which knows the text of the world. (The
tiny model knows less than one might hope: continuing keydoor transcripts greedily, it gets
~10% of observations exactly right; after 250 steps of 16 transitions the world model gets
~60% of held-out ones; `tests/test_dream_world_model.py`.)

Training packs an episode: all its transitions share one forward pass over the transcript, and
each reply reads that pass's KV cache up to its own history (`_reply_nll`), so an episode of n
turns costs about one transcript instead of n (keydoor rooms=2: 2.6x less forward time at the
same loss and gradient).

Departures and choices:
- Uncertainty is the model's own probability of the least probable token of its greedy reply
  (EOS included): cheap, but a confident wrong reply stays hidden (`clicker.dream.ensemble`
  has members judge each other's dreams instead; compare
  `dream/wm/confidence` with `dream/wm/obs_exact`). The reply's whole probability (the product)
  was the first choice; it punishes long observations for their length: on a keydoor_long smoke
  run it averaged 0.04 and dropped every Dyna dream at min_confidence 0.5.
- Dreams are generated in a KV session (`predict`): the candidates of one state share one
  prefill of it, and an imagined episode's next turn feeds only its new tokens, as the runner
  does for the policy. Training the model ends the session.
- Histories drop the episode's own leading context (a lessons block): the env never saw it, and
  a DreamEnv, which builds histories from prompt, actions and observations, does not have it.
- An episode's last turn is not learned when the episode was truncated or used the runner's
  whole turn limit: the env may have ended it for the limit, which a DreamWorld enforces itself,
  so the model must not learn to guess it.
- The replay buffer is kept in `state_dict` (token ids as plain lists, small for short
  transcripts) so a resumed run trains on the same data.

Evaluation is held out by construction: `observe` scores the new real transitions before it
trains on them.
"""

from __future__ import annotations

import inspect
import random
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from clicker.core.types import Episode
from clicker.dream.members import member_model
from clicker.dream.packing import group_rows, prefix_groups, reply_nll
from clicker.dream.quiet import parse_samples, quiet_replies
from clicker.dream.reader import Reader
from clicker.dream.transcript import (  # noqa: F401  (re-exported: the module's public names)
    FAILED,
    DreamRequest,
    Prediction,
    Predictor,
    Transition,
    episode_transitions,
    format_reply,
    is_event,
    parse_reply,
    score,
    transitions,
)
from clicker.dream.wm_config import WorldModelConfig
from clicker.rollout.sampler import Sampler
from clicker.rollout.session import Session


class WorldModel:
    """A causal LM trained online to write the env's reply to each action (see the module doc).

    `max_turns`: the runner's turn limit, to skip last turns the limit may have ended.
    `symmetry`: the world's `symmetry(rng)`, a random text map of a transcript under which the
    world's rules do not change (`clicker.tasks.keydoor.KeyDoorSymmetry`); a share cfg.augment
    of the episodes in each minibatch is renamed by a fresh one (`renamed`).
    `source`: the tokenizer of the token ids in the episodes, transitions and requests it is
    given (the policy's), when it is not `tokenizer`: they are read as text and encoded with
    its own (`own`). Its buffer, state and sessions hold its own ids.
    """

    def __init__(self, model: Any, tokenizer: Any, cfg: WorldModelConfig, *, max_turns: int,
                 symmetry: Callable[[random.Random], Callable[[str], str]] | None = None,
                 source: Any = None):
        if cfg.augment > 0 and symmetry is None:
            raise ValueError("WorldModelConfig.augment needs the world's symmetry (a world "
                             "without a `symmetry(rng)` method cannot be renamed)")
        self.model, self.tokenizer, self.cfg, self.max_turns = model, tokenizer, cfg, max_turns
        self.symmetry = symmetry
        # the tokenizer of the ids it is given (episodes, requests); None: they are its own
        self.reader = Reader(source, tokenizer)
        self.source = self.reader.source
        self.eos_id: int = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else self.eos_id
        self.max_length = int(getattr(model.config, "max_position_embeddings", 2048))
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
        # real transitions, grouped by episode (the unit of a minibatch); cfg.buffer caps the
        # number of transitions, dropping the oldest episodes first
        self.buffer: deque[tuple[Transition, ...]] = deque()
        self.size = 0
        self.rng = random.Random(cfg.seed)
        self._generator: torch.Generator | None = None  # dream sampling (cfg.temperature > 0)
        self.updates = 0
        self.quieted = 0  # event replies written again as quiet ones (cfg.event_threshold)
        # per evaluate: (events right, events, non-events given a reward, non-events)
        self.event_log: deque[tuple[int, ...]] = deque(maxlen=cfg.recall_window)
        self.sampler = Sampler(model, tokenizer, eos_id=self.eos_id, pad_id=self.pad_id)
        self._session: Session | None = None  # dreams in flight (see predict)
        self._row_of: dict[int, int] = {}  # request key -> its session row
        self._trunk: Session | None = None  # the real states dreamed from (see track)
        self._trunk_rows: dict[int, int] = {}
        self._trunk_len: dict[int, int] = {}
        params = inspect.signature(model.forward).parameters
        self._one_logit = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def from_policy(cls, policy: Any, cfg: WorldModelConfig | None = None, *, max_turns: int,
                    symmetry: Callable[[random.Random], Callable[[str], str]] | None = None,
                    init: str = "policy", world: Any = None) -> WorldModel:
        """A world model for the policy's episodes, starting from `init`
        (`clicker.dream.members`: by default a float32 deep copy of the policy's LM and its
        tokenizer; `words` needs the world)."""
        cfg = cfg or WorldModelConfig()
        model, tokenizer = member_model(init, policy, world, seed=cfg.seed)
        return cls(model, tokenizer, cfg, max_turns=max_turns, symmetry=symmetry,
                   source=policy.tokenizer)

    # ---- the ids it reads (`clicker.dream.reader`) ------------------------------------------

    def own(self, ids: Sequence[int]) -> list[int]:
        """`source` token ids as its own (the same ids when it has no other source)."""
        return self.reader.ids(ids)

    def own_transitions(self, ts: Sequence[Transition], cut: bool = True) -> list[Transition]:
        """Transitions with their histories in its own ids; with `cut`, up to the first whose
        history has no room left for a reply (`max_history`)."""
        return self.reader.transitions(ts, self.max_history if cut else None)

    @property
    def history_cap(self) -> int:
        """The longest history, in `source` ids, worth converting: `max_history` when they are
        its own ids; else no cap (`own_transitions` cuts in its own)."""
        return self.max_history if self.source is None else 10**9

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_history(self) -> int:
        return self.max_length - self.cfg.max_reply_tokens

    def reply_ids(self, t: Transition) -> list[int]:
        text = format_reply(t.reward, t.done, t.observation)
        return self.tokenizer.encode(text, add_special_tokens=False) + [self.eos_id]

    # ---- prediction ------------------------------------------------------------------------

    def predict(self, requests: list[DreamRequest]) -> list[Prediction]:
        """Predictor: replies to each request's history, in one batched generation: greedy, or
        sampled at cfg.temperature (a world with hidden state, such as keydoor's unseen rooms,
        is then dreamed as often as the model believes it is, not as its most likely guess
        every time).

        Continues the KV session when every request's key is a row of it (the same imagined
        episodes, one turn on); otherwise starts one, prefilling each distinct state (a
        request's first `shared` tokens) once for all the requests that share it."""
        out = [FAILED] * len(requests)
        requests = [self.reader.request(r) for r in requests]
        rows = [i for i, r in enumerate(requests) if 0 < len(r.history) <= self.max_history]
        if not rows:
            return out
        self.model.eval()
        reqs = [requests[i] for i in rows]
        keys = [r.key for r in reqs]
        if (self._session is not None and None not in keys and len(set(keys)) == len(keys)
                and all(k in self._row_of for k in keys)):  # the same dreams, a turn on
            row = [self._row_of[k] for k in keys]  # type: ignore[index]
        elif self._trunk is not None and all(self._on_trunk(r) for r in reqs):
            # candidates from tracked real states: fork the states' rows, no prefill
            bases, row, n = group_rows([r.base for r in reqs])
            self._session = self._trunk.fork([self._trunk_rows[b] for b in bases], n)
        else:  # prefill each distinct state once, repeated to the requests that share it
            states, row, n = group_rows(
                [tuple(r.history[:min(max(1, r.shared), len(r.history))]) for r in reqs])
            self._session = self.sampler.session()
            self._session.sample([list(p) for p in states], num_samples=n, max_new_tokens=1,
                                 temperature=0.0)
        assert self._session is not None
        order = sorted(range(len(reqs)), key=row.__getitem__)
        samples = self._session.sample(
            [reqs[j].history for j in order], rows=[row[j] for j in order],
            max_new_tokens=self.cfg.max_reply_tokens, temperature=self.cfg.temperature,
            generator=self.generator if self.cfg.temperature > 0 else None)
        self._row_of = {k: row[j] for j in order if (k := keys[j]) is not None}
        self._parse([rows[j] for j in order], samples, out, [reqs[j].history for j in order],
                    self.cfg.temperature)
        return out

    @property
    def generator(self) -> torch.Generator:
        """The dreams' sampling stream (seeded by cfg.seed, on the model's device)."""
        if self._generator is None:
            self._generator = torch.Generator(device=self.device).manual_seed(self.cfg.seed)
        return self._generator

    def predict_histories(self, histories: list[list[int]]) -> list[Prediction]:
        """Greedy reply to each history (one batched generation, no session). A history with
        no room left for the reply budget, a reply that never ends (no EOS within
        max_reply_tokens) or one that does not parse gives FAILED. Histories are `source`
        ids (`own`)."""
        histories = [self.own(h) for h in histories]
        out = [FAILED] * len(histories)
        rows = [i for i, h in enumerate(histories) if 0 < len(h) <= self.max_history]
        if not rows:
            return out
        self.model.eval()
        samples = self.sampler.sample([list(histories[i]) for i in rows],
                                      max_new_tokens=self.cfg.max_reply_tokens, temperature=0.0)
        self._parse(rows, samples, out, [histories[i] for i in rows], 0.0)
        return out

    def track(self, keys: list[int], histories: list[list[int]]) -> None:
        """Hold the real states the planner dreams from (key -> its token ids so far) in a
        trunk KV session: it prefills them once and then only their new tokens each turn, and
        `predict` forks candidates from it (requests whose `base` is a tracked key)."""
        self.model.eval()
        histories = [self.own(h) for h in histories]
        if self._trunk is None or any(k not in self._trunk_rows for k in keys):
            self._trunk = self.sampler.session()
            self._trunk.sample([list(h) for h in histories], max_new_tokens=1, temperature=0.0)
            self._trunk_rows = {k: i for i, k in enumerate(keys)}
        else:
            self._trunk.feed({self._trunk_rows[k]: list(h) for k, h in zip(keys, histories)})
        self._trunk_len = {k: len(h) for k, h in zip(keys, histories)}

    def _on_trunk(self, r: DreamRequest) -> bool:
        """Whether r branches from a tracked state as it now is."""
        return r.base in self._trunk_rows and self._trunk_len.get(r.base) == r.shared

    def _parse(self, rows: list[int], samples: Any, out: list[Prediction],
               histories: list[list[int]], temperature: float) -> None:
        """out[rows[k]] = the parsed reply of samples' row k to histories[k] (its own ids; left
        FAILED when it did not end or does not parse); an event whose header the model gave
        less than cfg.event_threshold is written again as a quiet reply at `temperature` (the
        samples' own: greedy in evaluation; `clicker.dream.quiet`)."""
        preds, doubted = parse_samples(self.tokenizer, samples, self.cfg.event_threshold)
        for i, p in zip(rows, preds):
            if p is not None:
                out[i] = p
        if doubted:
            self.quieted += len(doubted)
            again = quiet_replies(self.sampler, self.tokenizer, [histories[k] for k, _ in doubted],
                                  [p for _, p in doubted], self.cfg.max_reply_tokens,
                                  temperature, self.generator if temperature > 0 else None)
            for (k, _), p in zip(doubted, again):
                out[rows[k]] = p

    # ---- learning --------------------------------------------------------------------------

    def observe(self, episodes: Sequence[Episode]) -> dict[str, float]:
        """Score the model on the episodes' new real transitions (held out: not trained on yet),
        add them to the buffer, then train. Returns `dream/wm/*` metrics (empty when there was
        nothing to learn from). A random subsample of cfg.eval_max transitions is scored, and
        every event among them besides (`is_event`: rare, and what a dream's return hangs on)."""
        groups = [episode_transitions(e, self.max_turns, self.history_cap) for e in episodes]
        if self.source is not None:  # as many as fit in its own ids
            groups = [g[:len(self.own_transitions(g))] for g in groups]
        groups = [g for g in groups if g]
        new = [t for g in groups for t in g]
        sample = self.rng.sample(new, self.cfg.eval_max) if len(new) > self.cfg.eval_max else new
        events = [t for t in new if self.is_event(t)]
        metrics = self.evaluate(sample, events) if new else {}
        return metrics | self.learn(groups)

    def learn(self, groups: Sequence[Sequence[Transition]]) -> dict[str, float]:
        """Add episodes' transitions (`source` ids) to the buffer and train (`fit`); the loss and
        buffer size."""
        for g in groups:
            if g := self.own_transitions(g):
                self.add(g)
        if not self.buffer:
            return {}
        return {"dream/wm/loss": self.fit(), "dream/wm/buffer": float(self.size)}

    @property
    def event_recall(self) -> float | None:
        """Held-out event recall over the last cfg.recall_window observes: the share of real
        events whose reward and end the greedy reply got right (None before any event)."""
        seen = sum(x[1] for x in self.event_log)
        return sum(x[0] for x in self.event_log) / seen if seen else None

    @property
    def false_reward_rate(self) -> float | None:
        """Over the same window: the share of held-out non-events (rewardless steps that do
        not end) whose greedy reply gave them a reward (None before any): the dreams a policy
        could farm."""
        seen = sum(x[3] for x in self.event_log)
        return sum(x[2] for x in self.event_log) / seen if seen else None

    def add(self, episode: Sequence[Transition]) -> None:
        """Put one episode's transitions in the buffer, dropping the oldest episodes while it
        holds more than cfg.buffer transitions."""
        self.buffer.append(tuple(episode))
        self.size += len(episode)
        while self.size > self.cfg.buffer and len(self.buffer) > 1:
            self.size -= len(self.buffer.popleft())

    def evaluate(self, data: Sequence[Transition], events: Sequence[Transition] = ()
                 ) -> dict[str, float]:
        """Greedy predictions against the real replies of `data` (`dream/wm/*` metrics), and
        of `events` (`dream/wm/event_recall`: the share whose reward and end are right, also
        logged in `event_recall`'s window; `dream/wm/false_rewards` and `false_ends`: the
        shares of data's non-events given a reward (logged in `false_reward_rate`'s window) and
        an end)."""
        inside = set(data)
        data, events = list(data), [t for t in events if t not in inside]
        if not data and not events:
            return {}
        preds = self.predict_histories([list(t.history) for t in data + events])  # source ids
        metrics, counts = score(preds, data, events)
        self.event_log.append(counts)
        return metrics

    def fit(self) -> float:
        """Train on the buffer: cfg.steps minibatches of whole episodes drawn at random (a
        share cfg.event_share of the draws from the episodes that hold an event, `is_event`:
        prioritised replay of the rare replies), or cfg.epochs shuffled passes when steps is 0.
        A minibatch takes episodes until it holds cfg.batch_size transitions (whole episodes, so
        their transitions share one forward of the transcript; see `_reply_nll`), each one
        `renamed` with probability cfg.augment. Returns the mean loss per reply token over the
        steps."""
        cfg, groups = self.cfg, list(self.buffer)
        if not groups:
            raise ValueError("the world model's buffer is empty: observe() real episodes first")
        if cfg.steps:
            events = [i for i, g in enumerate(groups) if any(map(self.is_event, g))]
            share = cfg.event_share if events else 0.0
            order = [self.rng.choice(events) if share and self.rng.random() < share
                     else self.rng.randrange(len(groups))
                     for _ in range(cfg.steps * cfg.batch_size)]
        else:
            order = []
            for _ in range(cfg.epochs):
                idx = list(range(len(groups)))
                self.rng.shuffle(idx)
                order += idx
        batches: list[list[Transition]] = [[]]
        for i in order:
            if len(batches[-1]) >= cfg.batch_size:
                if cfg.steps and len(batches) == cfg.steps:
                    break
                batches.append([])
            aug = cfg.augment and self.rng.random() < cfg.augment
            batches[-1].extend(self.renamed(groups[i]) if aug else groups[i])
        losses = [self.train_step(b) for b in batches if b]
        return sum(losses) / len(losses)

    def renamed(self, episode: Sequence[Transition]) -> list[Transition]:
        """One episode's transitions under a fresh random symmetry of the world: histories and
        observations mapped as text (one map for the whole episode, so its histories stay
        prefixes of one another)."""
        assert self.symmetry is not None
        rename, tok = self.symmetry(self.rng), self.tokenizer
        return [Transition(tuple(tok.encode(rename(tok.decode(list(t.history))),
                                            add_special_tokens=False)),
                           t.reward, t.done, rename(t.observation)) for t in episode]

    is_event = staticmethod(is_event)

    def weight(self, t: Transition) -> float:
        """A transition's loss weight: cfg.reward_weight for an event (`is_event`), else 1."""
        return self.cfg.reward_weight if self.is_event(t) else 1.0

    def train_step(self, batch: Sequence[Transition]) -> float:
        """One AdamW step of cross-entropy on the reply tokens (header, observation, EOS) only;
        the mean is over all reply tokens of the batch, each reply's tokens weighted by
        `weight` (a weighted mean). Returns that mean."""
        self.model.train()
        self._session = self._trunk = None  # their caches hold the old weights' keys
        replies = [self.reply_ids(t) for t in batch]
        weights = [self.weight(t) for t in batch]
        total = sum(w * len(r) for w, r in zip(weights, replies))
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for chunk in prefix_groups([t.history for t in batch], self.cfg.micro_batch):
            groups = [(list(root), [(len(batch[i].history), replies[i], weights[i])
                                    for i in members])
                      for root, members in chunk]
            loss = self._reply_nll(groups) / total
            loss.backward()
            loss_sum += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.updates += 1
        return loss_sum

    def _reply_nll(self, groups: list[tuple[list[int], list[tuple[int, list[int], float]]]],
                   per_token: bool = False) -> torch.Tensor:
        """Summed weighted NLL of replies given histories that share a root, one pass per root
        (`clicker.dream.packing.reply_nll`)."""
        return reply_nll(self.model, groups, pad_id=self.pad_id, per_token=per_token,
                         cache_kw=self._cache_kw, one_logit=self._one_logit)

    # ---- checkpoints -----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Model, optimizer, update count, RNG and the replay buffer (plain lists and numbers,
        so `torch.load(weights_only=True)` reads it)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "updates": self.updates,
            "rng": self.rng.getstate(),
            "event_log": [list(x) for x in self.event_log],
            "generator": self.generator.get_state(),
            "buffer": [[(list(t.history), t.reward, t.done, t.observation) for t in g]
                       for g in self.buffer],
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = state["updates"]
        self.rng.setstate(state["rng"])
        if "generator" in state:
            self.generator.set_state(state["generator"])
        self.event_log.clear()
        self.event_log.extend(tuple(int(v) for v in x) for x in state.get("event_log", []))
        self.buffer.clear()
        self.size = 0
        for g in state["buffer"]:
            self.add([Transition(tuple(h), r, d, o) for h, r, d, o in g])
