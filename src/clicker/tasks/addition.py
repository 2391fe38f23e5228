"""Addition: the smallest verifiable task, `"37+45="` answered by `"82\\n"`.

Why: a tiny character-level policy can learn it in seconds, the reward is exact, and `digits`
turns difficulty up smoothly (carries, longer answers). Problems are a pure function of
(seed, split, index); train and test are disjoint by `split_of` on the unordered operand pair,
so `37+45` and `45+37` always land in the same split.

The integer checking and "plausibly wrong number" helpers here are shared with `letters`.
"""

from __future__ import annotations

import random
import re

from clicker.core.types import Verdict
from clicker.tasks.base import Problem, Split, split_of

_INT = re.compile(r"-?\d+")
MAX_ATTEMPTS = 10_000  # rejection-sampling cap; only a degenerate split can exhaust it
P_CORRECT_WARMUP = 0.35  # share of warm-up transcripts that carry the right answer
# Addition's warm-up errs systematically, the way a model half-taught does: most wrong answers
# forget every carry (37+45 -> 72). The model's mode is then the wrong habit on carry problems
# while the right answer keeps real mass, so RL has something to select (greedy success starts
# near the share of carry-free problems, about a quarter for 2 digits).
P_CORRECT_ADDITION = 0.3
P_NO_CARRY_ADDITION = 0.55


def check_integer(reference: str, completion: str) -> Verdict:
    """Reward 1.0 when the first integer in `completion` equals `reference`, else 0.0."""
    m = _INT.search(completion.strip())
    if m is None:
        return Verdict(0.0, "no number found")
    got, want = int(m.group()), int(reference)
    if got == want:
        return Verdict(1.0, "correct")
    return Verdict(0.0, f"wrong: expected {want}, got {got}")


def no_carry_sum(a: int, b: int) -> int:
    """a + b computed digit by digit with every carry dropped (37+45 -> 72, 85+69 -> 44)."""
    out, place = 0, 1
    while a or b:
        out += ((a % 10 + b % 10) % 10) * place
        a, b, place = a // 10, b // 10, place * 10
    return out


def wrong_number(correct: int, rng: random.Random) -> int:
    """A non-negative integer != `correct` that looks like a plausible slip: one digit changed,
    off by 1..10, or a random number of the same length."""
    s = str(correct)
    for _ in range(100):
        mode = rng.randrange(3)
        if mode == 0:
            i = rng.randrange(len(s))
            lo = 1 if (i == 0 and len(s) > 1) else 0
            cand = int(s[:i] + str(rng.randint(lo, 9)) + s[i + 1 :])
        elif mode == 1:
            cand = correct + rng.choice((-1, 1)) * rng.randint(1, 10)
        else:
            cand = rng.randint(10 ** (len(s) - 1) if len(s) > 1 else 0, 10 ** len(s) - 1)
        if cand != correct and cand >= 0:
            return cand
    return correct + 1


class Addition:
    """Add two `digits`-digit numbers. Completion: the sum followed by a newline."""

    name = "addition"
    stop: tuple[str, ...] = ("\n",)

    def __init__(self, digits: int = 2, seed: int = 0):
        if digits < 1:
            raise ValueError(f"digits must be >= 1, got {digits}")
        self.digits, self.seed = digits, seed
        self.max_new_tokens = digits + 4
        self._lo = 10 ** (digits - 1) if digits > 1 else 0
        self._hi = 10**digits - 1

    @staticmethod
    def key(a: int, b: int) -> str:
        """Split key: the unordered operand pair."""
        return f"addition:{min(a, b)}+{max(a, b)}"

    def operands(self, split: Split, index: int) -> tuple[int, int]:
        for attempt in range(MAX_ATTEMPTS):
            rng = random.Random(f"addition/{self.digits}/{self.seed}/{split}/{index}/{attempt}")
            a, b = rng.randint(self._lo, self._hi), rng.randint(self._lo, self._hi)
            if split_of(self.key(a, b)) == split:
                return a, b
        raise RuntimeError(f"no {split} addition problem found for digits={self.digits}")

    def problem(self, split: Split, index: int) -> Problem:
        a, b = self.operands(split, index)
        return Problem(
            prompt=f"{a}+{b}=",
            reference=str(a + b),
            id=f"addition/{split}/{index}",
            meta={"a": a, "b": b},
        )

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return check_integer(problem.reference, completion)

    def warmup_text(self, index: int, rng: random.Random) -> str:
        p = self.problem("train", index)
        correct = int(p.reference)
        u = rng.random()
        if u < P_CORRECT_ADDITION:
            answer = correct
        elif u < P_CORRECT_ADDITION + P_NO_CARRY_ADDITION:
            answer = no_carry_sum(p.meta["a"], p.meta["b"])
        else:
            answer = wrong_number(correct, rng)
        return f"{p.prompt}{answer}\n"
