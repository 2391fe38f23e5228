"""Isolating the user's reward code: an env step (a verifier, a reward function, a user's env)
that raises, hangs or returns a non-finite reward ends its episode with reward 0 and an error,
and training goes on (issue 9).

A hang is cut off by `SIGALRM` after `timeout_s` (a real-time interval timer), which interrupts
Python code, and C calls that release the GIL and wait (sleep, I/O); a C extension that spins
without returning to the interpreter cannot be interrupted in-process (run such code in the
sandbox, `clicker.tasks.sandbox`). Signals exist only in the main thread: elsewhere the step runs
without a timeout. The episode's error shows as `meta["verifier_error"]` and as
`rollout/verifier_errors` in the metrics.
"""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable
from dataclasses import replace

from clicker.tasks.base import Step


class StepTimeout(Exception):
    """Raised in the step by SIGALRM when it runs past its timeout."""


def _alarm(signum, frame):
    raise StepTimeout


def guarded(call: Callable[[], Step], timeout_s: float | None) -> Step:
    """call() as a Step; its failures as a done Step with reward 0 and `error` set."""
    timer = (timeout_s is not None and timeout_s > 0
             and threading.current_thread() is threading.main_thread())
    previous = signal.signal(signal.SIGALRM, _alarm) if timer else None
    try:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
        step = call()
    except StepTimeout:
        return Step("", 0.0, True, error=f"timed out after {timeout_s:g} s")
    except Exception as e:  # noqa: BLE001 - any failure of user code is the episode's, not ours
        detail = " ".join(str(e).split())[:200]
        return Step("", 0.0, True, error=f"{type(e).__name__}: {detail}" if detail
                    else type(e).__name__)
    finally:
        if timer:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    try:
        reward = float(step.reward)
    except (TypeError, ValueError):
        return Step("", 0.0, True, error=f"reward {step.reward!r} is not a number")
    if not math.isfinite(reward):
        return Step("", 0.0, True, error=f"reward is {reward}")
    return replace(step, reward=reward) if reward is not step.reward else step
