"""Code: complete a small Python function; verified by running hidden tests in the sandbox.

The prompt is a comment stating what the function does and its `def` line; the completion is
the indented body, ended by a blank line (the stop string, "\n\n"):

    # Return x plus 7.
    def add(x):
        return x + 7

Why: the smallest task whose verifier runs the policy's output, so it exercises
`clicker.tasks.sandbox` on every reward. Problems come from a few templates, each with one
parameter (a constant, a letter, a count); a problem is a pure function of (seed, split, index),
and train and test are disjoint by `split_of` on (template, parameter). The hidden tests are
inputs picked so no constant or near miss passes; their expected outputs are computed here from
the template's own Python function and never enter the sandbox (`run_cases`): the child sends
back what the function returned, and the parent compares.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clicker.core.types import Verdict
from clicker.tasks.addition import MAX_ATTEMPTS, P_CORRECT_WARMUP
from clicker.tasks.base import Problem, Split, split_of
from clicker.tasks.sandbox import SandboxLimits, run_cases

STOP = "\n\n"
INTS = (0, 1, -3, 7, 12, 25, 100)
WORDS = ("", "a", "banana", "hello world", "Python", "racecar", "xyzzy", "aeiou", "abracadabra!")
LISTS = ([], [5], [3, 1, 2], [-4, -9, -1], [7, 7, 0, 7, 1, 8, 2, 9], list(range(1, 13)))


@dataclass(frozen=True)
class Template:
    """One function family. For parameter k: `describe(k)` is the prompt's comment, `body(k)` the
    reference body, `fn(k)` the same function in Python (for expected values), and `inputs(k)`
    the test inputs, chosen so that no constant or near miss passes them all."""

    name: str
    args: str
    params: tuple
    describe: Callable[[Any], str]
    body: Callable[[Any], str]
    fn: Callable[[Any], Callable[[Any], Any]]
    inputs: Callable[[Any], tuple]


TEMPLATES: tuple[Template, ...] = (
    Template("add", "x", tuple(range(1, 100)), lambda k: f"Return x plus {k}.",
             lambda k: f"return x + {k}", lambda k: lambda x: x + k, lambda k: INTS),
    Template("is_multiple", "n", tuple(range(2, 13)),
             lambda k: f"Return True if n is a multiple of {k}, else False.",
             lambda k: f"return n % {k} == 0", lambda k: lambda n: n % k == 0,
             lambda k: (0, 1, k, k + 1, 2 * k, 3 * k - 1, -k, 7 * k + 2)),
    Template("repeat", "s", tuple(range(2, 10)),
             lambda k: f"Return the string s repeated {k} times.",
             lambda k: f"return s * {k}", lambda k: lambda s: s * k, lambda k: WORDS),
    Template("count_char", "s", tuple(string.ascii_lowercase),
             lambda c: f"Return how many times the letter {c!r} occurs in s.",
             lambda c: f"return s.count({c!r})", lambda c: lambda s: s.count(c),
             lambda c: (*WORDS, c, c * 3, f"x{c}y{c}", c.upper() + c)),
    Template("at_most", "x", tuple(range(-20, 60)),
             lambda k: f"Return x, or {k} if x is larger than {k}.",
             lambda k: f"return min(x, {k})", lambda k: lambda x: min(x, k),
             lambda k: (k - 5, k - 1, k, k + 1, k + 30, 0, 100)),
    Template("sum_first", "xs", tuple(range(1, 10)),
             lambda k: f"Return the sum of the first {k} items of the list xs.",
             lambda k: f"return sum(xs[:{k}])", lambda k: lambda xs: sum(xs[:k]), lambda k: LISTS),
    Template("max_or", "xs", tuple(range(-9, 10)),
             lambda k: f"Return the largest item of the list xs, or {k} if xs is empty.",
             lambda k: f"return max(xs) if xs else {k}",
             lambda k: lambda xs: max(xs) if xs else k, lambda k: LISTS),
    Template("reversed_prefix", "s", tuple(range(1, 10)),
             lambda k: f"Return the first {k} characters of s, reversed.",
             lambda k: f"return s[:{k}][::-1]", lambda k: lambda s: s[:k][::-1], lambda k: WORDS),
)


def prompt(template: Template, param: Any) -> str:
    return f"# {template.describe(param)}\ndef {template.name}({template.args}):\n"


class CodeTask:
    """Complete a small Python function. Completion: the indented body, then a blank line."""

    name = "code"
    stop: tuple[str, ...] = (STOP,)
    max_new_tokens = 128

    def __init__(self, seed: int = 0, cpu_s: int = 2, wall_s: float = 5.0, memory_mb: int = 256):
        self.seed = seed
        self.limits = SandboxLimits(cpu_s=cpu_s, wall_s=wall_s, memory_mb=memory_mb)

    @staticmethod
    def key(template: Template, param: Any) -> str:
        return f"code:{template.name}:{param!r}"

    def pick(self, split: Split, index: int) -> tuple[Template, Any]:
        """The (template, parameter) of problem `index` of `split`."""
        for attempt in range(MAX_ATTEMPTS):
            rng = random.Random(f"code/{self.seed}/{split}/{index}/{attempt}")
            template = rng.choice(TEMPLATES)
            param = rng.choice(template.params)
            if split_of(self.key(template, param)) == split:
                return template, param
        raise RuntimeError(f"no {split} code problem found")

    def problem(self, split: Split, index: int) -> Problem:
        t, k = self.pick(split, index)
        fn = t.fn(k)
        return Problem(
            prompt=prompt(t, k),
            reference=f"    {t.body(k)}",
            id=f"code/{split}/{index}",
            meta={"template": t.name, "param": k, "cases": [[[x], fn(x)] for x in t.inputs(k)]},
        )

    def verify(self, problem: Problem, completion: str) -> Verdict:
        """Run the function in the sandbox on the test inputs; its outputs are compared here."""
        body = completion.removesuffix(STOP)
        result = run_cases(problem.prompt + body, problem.meta["template"],
                           problem.meta["cases"], limits=self.limits)
        return Verdict(1.0 if result.passed else 0.0, result.detail)

    def warmup_text(self, index: int, rng: random.Random) -> str:
        """A train prompt and a body: the reference, or a plausible slip (another parameter)."""
        t, k = self.pick("train", index)
        said = k if rng.random() < P_CORRECT_WARMUP else rng.choice([q for q in t.params if q != k])
        return f"{prompt(t, k)}    {t.body(said)}{STOP}"
