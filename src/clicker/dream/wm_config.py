"""`WorldModelConfig`: how the world model (`clicker.dream.world_model`) trains and dreams."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldModelConfig:
    """How the world model trains.

    lr 5e-4: measured on keydoor (rooms=2) with the tiny model, batch 16: at 1e-4 the reply
    header is learned but held-out exact match was 8% after 40 steps (27% at 1e-3); 2e-3 and
    3e-3 were no faster and noisier; 5e-4 was the steadiest (65-68% after 250 steps, two seeds).
    A large pretrained LM will want less."""

    lr: float = 5e-4  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    steps: int = 32  # minibatch steps per observe(); 0: `epochs` passes over the buffer instead
    epochs: int = 1  # passes over the buffer per observe() when steps == 0
    batch_size: int = 16  # transitions per optimizer step (whole episodes: may run over a little)
    micro_batch: int = 32  # transitions per forward pass (gradient accumulation above it)
    buffer: int = 2048  # transitions kept (FIFO replay buffer of real transitions)
    max_reply_tokens: int = 64  # reply budget: generation cap, and history room kept for it
    eval_max: int = 64  # new transitions scored per observe() (a random subsample; 0: none)
    grad_clip: float = 1.0  # max gradient norm
    reward_weight: float = 1.0  # loss weight of replies with a reward or an end (rare events)
    event_share: float = 0.0  # share of minibatch draws from episodes holding such a reply
    augment: float = 0.0  # share of minibatch episodes renamed by a random symmetry of the world
    temperature: float = 0.0  # of replies in dreams (`predict`): 0 greedy; evaluation is greedy
    # a reply that claims a reward or an end is kept only when the model gave its header at
    # least this probability; otherwise it is written again after the quiet header [r=0]
    # (0: off; evaluation too, so its metrics score the replies dreams get). Trades missed
    # events for fewer invented ones (`clicker.dream.quiet`)
    event_threshold: float = 0.0
    recall_window: int = 5  # observes `event_recall` pools
    seed: int = 0  # replay sampling and evaluation subsample

    def __post_init__(self) -> None:
        for name in ("batch_size", "micro_batch", "buffer", "max_reply_tokens", "epochs",
                     "recall_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"WorldModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or self.eval_max < 0:
            raise ValueError("WorldModelConfig.steps and eval_max must be >= 0")
        if self.lr <= 0:
            raise ValueError(f"WorldModelConfig.lr must be > 0, got {self.lr}")
        if self.temperature < 0:
            raise ValueError(f"WorldModelConfig.temperature must be >= 0, got {self.temperature}")
        if not 0 <= self.event_threshold <= 1:
            raise ValueError(f"WorldModelConfig.event_threshold must be in [0, 1], got "
                             f"{self.event_threshold}")
        if not 0 <= self.augment <= 1:
            raise ValueError(f"WorldModelConfig.augment must be in [0, 1], got {self.augment}")
        if not 0 <= self.event_share <= 1:
            raise ValueError(f"WorldModelConfig.event_share must be in [0, 1], got "
                             f"{self.event_share}")
        if self.reward_weight < 1:
            raise ValueError(f"WorldModelConfig.reward_weight must be >= 1, got "
                             f"{self.reward_weight}")
