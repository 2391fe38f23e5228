"""Tasks and worlds: the built-in ones, the adapters, and `make_world` to build one by name.

Why a plain dict: the registry is five entries; a config names one and passes its arguments,
and a typo should fail at once with a one-line message listing what would have worked.
"""

from __future__ import annotations

import inspect
from typing import Any

from clicker.tasks.adapters import DatasetTask, GymnasiumWorld, ReasoningGymTask
from clicker.tasks.addition import Addition
from clicker.tasks.base import (
    SPLITS,
    Env,
    Problem,
    SingleTurnWorld,
    Split,
    Step,
    Task,
    World,
    as_world,
    split_of,
)
from clicker.tasks.code import CodeTask
from clicker.tasks.keydoor import KeyDoor, KeyDoorEnv
from clicker.tasks.letters import Letters

TASKS: dict[str, type] = {
    "addition": Addition,
    "letters": Letters,
    "keydoor": KeyDoor,
    "reasoning_gym": ReasoningGymTask,
    "code": CodeTask,
}


def make_world(name: str, **kwargs: Any) -> World:
    """Build the task or world registered as `name` with `kwargs`, as the runner's World."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    cls = TASKS[name]
    params = inspect.signature(cls).parameters
    accepted = [p for p, v in params.items() if v.kind is not v.VAR_KEYWORD]
    shown = ", ".join(accepted) + (", **dataset options" if len(accepted) < len(params) else "")
    if len(accepted) == len(params):
        for k in kwargs:
            if k not in params:
                raise ValueError(f"task {name!r} has no argument {k!r}; accepted: {shown}")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as e:
        raise ValueError(f"task {name!r}: {e}; accepted: {shown}") from None
    return as_world(cls(**kwargs))


__all__ = [
    "SPLITS",
    "TASKS",
    "Addition",
    "CodeTask",
    "DatasetTask",
    "Env",
    "GymnasiumWorld",
    "KeyDoor",
    "KeyDoorEnv",
    "Letters",
    "Problem",
    "ReasoningGymTask",
    "SingleTurnWorld",
    "Split",
    "Step",
    "Task",
    "World",
    "as_world",
    "split_of",
]
