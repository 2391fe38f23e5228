"""Dreams: a learned world model answers in place of the real env (issue 7).

`world_model`: a causal LM trained online on real transcripts to write the env's reply (reward,
done, observation) to each action. `world`: `DreamWorld`, a World whose envs ask a predictor
(the world model, or an exact oracle) instead of the real env, so the episode runner produces
imagined episodes (world_tokens 0).
"""

from clicker.dream.world import DreamEnv, DreamWorld, OracleModel
from clicker.dream.world_model import (
    DreamRequest,
    Prediction,
    Predictor,
    Transition,
    WorldModel,
    WorldModelConfig,
    format_reply,
    parse_reply,
    transitions,
)

__all__ = [
    "DreamEnv",
    "DreamRequest",
    "DreamWorld",
    "OracleModel",
    "Prediction",
    "Predictor",
    "Transition",
    "WorldModel",
    "WorldModelConfig",
    "format_reply",
    "parse_reply",
    "transitions",
]
