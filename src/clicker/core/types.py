"""The data shapes that flow through the loop: Verdict, Turn, Episode, Batch.

An `Episode` is the one data shape every part shares (DESIGN.md): the exact token ids the policy
saw and produced, which of them the policy produced (`action_mask`), the log-probs it sampled them
with, and the rewards and feedback of each turn. A `Batch` is episodes padded to (B, T) tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Verdict:
    """What a verifier says about a completion or an env step."""

    reward: float
    feedback: str = ""
    error: str | None = None  # set when the verifier itself failed (raised, NaN, timeout)

    @property
    def success(self) -> bool:
        return self.reward > 0.5


@dataclass(frozen=True)
class Turn:
    """One exchange: the policy's action text and what the world answered."""

    action: str
    observation: str  # what the world said after the action ("" when the episode ended)
    reward: float
    feedback: str = ""
    action_span: tuple[int, int] = (0, 0)  # [start, end) of the action's tokens in Episode.tokens


@dataclass(frozen=True)
class Episode:
    """One rollout, token-in-token-out.

    `tokens` holds prompt, actions and observations in order; `action_mask[i]` is True exactly
    where the policy sampled token i (the only tokens trained on); `logprobs[i]` is the sampling
    log-prob of token i (0.0 where not an action). `world_tokens` counts every token exchanged
    with the real task or env (prompt, observations, actions); an imagined episode has 0.
    """

    tokens: list[int]
    action_mask: list[bool]
    logprobs: list[float]
    turns: tuple[Turn, ...]
    prompt: str
    reference: str = ""
    group: int = 0  # episodes sampled from the same prompt share a group id
    world_tokens: int = 0
    imagined: bool = False
    truncated: bool = False  # hit max turns / max tokens before the env said done
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.tokens) == len(self.action_mask) == len(self.logprobs)):
            raise ValueError(
                f"Episode lengths differ: tokens={len(self.tokens)} "
                f"action_mask={len(self.action_mask)} logprobs={len(self.logprobs)}"
            )

    @property
    def reward(self) -> float:
        """Total real reward of the episode (sum over turns)."""
        return float(sum(t.reward for t in self.turns))

    @property
    def success(self) -> bool:
        return self.reward > 0.5

    @property
    def num_action_tokens(self) -> int:
        return int(sum(self.action_mask))

    @property
    def completion(self) -> str:
        """All action texts joined (the completion, for a single-turn task)."""
        return "".join(t.action for t in self.turns)

    @property
    def feedback(self) -> str:
        return "\n".join(t.feedback for t in self.turns if t.feedback)


@dataclass(frozen=True)
class Batch:
    """Episodes padded on the right to (B, T) tensors, ready for one forward pass.

    input_ids     (B, T) long   token ids, pad where attention_mask is 0
    attention_mask(B, T) bool   real tokens
    action_mask   (B, T) bool   tokens the policy sampled (trained on)
    old_logprobs  (B, T) float  sampling log-probs, 0 off the action mask
    rewards       (B,)   float  episode rewards
    groups        (B,)   long   group id per episode
    token_rewards (B, T) float  each turn's reward on the last action token of that turn
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    action_mask: torch.Tensor
    old_logprobs: torch.Tensor
    rewards: torch.Tensor
    groups: torch.Tensor
    episodes: tuple[Episode, ...]
    token_rewards: torch.Tensor

    @staticmethod
    def from_episodes(episodes: list[Episode], pad_id: int) -> Batch:
        if not episodes:
            raise ValueError("cannot build a Batch from zero episodes")
        T = max(len(e.tokens) for e in episodes)
        pad = [T - len(e.tokens) for e in episodes]
        # one tensor from padded Python lists: far cheaper than B row copies
        input_ids = torch.tensor([list(e.tokens) + [pad_id] * p for e, p in zip(episodes, pad)],
                                 dtype=torch.long)
        attention = torch.tensor([[True] * len(e.tokens) + [False] * p
                                  for e, p in zip(episodes, pad)], dtype=torch.bool)
        action = torch.tensor([list(e.action_mask) + [False] * p for e, p in zip(episodes, pad)],
                              dtype=torch.bool)
        old = torch.tensor([list(e.logprobs) + [0.0] * p for e, p in zip(episodes, pad)],
                           dtype=torch.float32)
        rows = []
        for e in episodes:
            row = [0.0] * T
            for turn in e.turns:
                row[_reward_position(e, turn)] += turn.reward
            rows.append(row)
        tok_r = torch.tensor(rows, dtype=torch.float32)
        rewards = torch.tensor([e.reward for e in episodes], dtype=torch.float32)
        groups = torch.tensor([e.group for e in episodes], dtype=torch.long)
        return Batch(input_ids, attention, action, old, rewards, groups, tuple(episodes), tok_r)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.action_mask.to(device),
            self.old_logprobs.to(device),
            self.rewards.to(device),
            self.groups.to(device),
            self.episodes,
            self.token_rewards.to(device),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)  # type: ignore[return-value]


def _reward_position(e: Episode, turn: Turn) -> int:
    """Token index where a turn's reward lands: its last action token (its span's end - 1).

    A turn that produced no tokens (an empty action) credits the last action token before it,
    or the last token of the episode when there is none.
    """
    start, end = turn.action_span
    if end > start:
        return end - 1
    before = [i for i in range(min(start, len(e.tokens))) if e.action_mask[i]]
    return before[-1] if before else len(e.tokens) - 1


@dataclass(frozen=True)
class DistillTargets:
    """A teacher's next-token distributions for the update to distil (SDPO's top-k form).

    Position t describes the distribution of token t given tokens < t (the update scores
    logits[:, t - 1] against it).

    logp   (B, T, k) float  the teacher's log-probs of its top-k ids
    index  (B, T, k) long   those ids
    mask   (B, T)    bool   action tokens of episodes that had teacher context
    alpha  generalised-JSD alpha (0 forward KL, 1 reverse KL)
    weight the loss's coefficient (the credit source's weight)
    is_clip  per-token weight min(pi_theta / pi_old, is_clip), detached (SDPO)
    """

    logp: torch.Tensor
    index: torch.Tensor
    mask: torch.Tensor
    alpha: float = 0.5
    weight: float = 1.0
    is_clip: float = 2.0

    def to(self, device: torch.device | str) -> DistillTargets:
        return DistillTargets(self.logp.to(device), self.index.to(device), self.mask.to(device),
                              self.alpha, self.weight, self.is_clip)
