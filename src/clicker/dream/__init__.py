"""Dreams: a learned world model answers in place of the real env (issue 7).

`transcript`: the reply format and the transitions of real episodes. `world_model`: a causal
LM trained online on real transcripts to write the env's reply (reward, done, observation) to
each action; `ensemble`: several of them, whose disagreement gates dreams. `world`:
`DreamWorld`, a World whose envs ask a predictor (the world model, or an exact oracle) instead
of the real env, so the episode runner produces imagined episodes (world_tokens 0). `cut`: a
doubted dream stops before its first doubted step and V bootstraps the rest.
"""

from clicker.dream.cut import cut_dreams, cut_episode, first_doubted
from clicker.dream.ensemble import WorldModelEnsemble
from clicker.dream.transcript import (
    DreamRequest,
    Prediction,
    Predictor,
    Transition,
    format_reply,
    parse_reply,
    transitions,
)
from clicker.dream.world import DreamEnv, DreamWorld, OracleModel
from clicker.dream.world_model import WorldModel, WorldModelConfig

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
    "WorldModelEnsemble",
    "cut_dreams",
    "cut_episode",
    "first_doubted",
    "format_reply",
    "parse_reply",
    "transitions",
]
