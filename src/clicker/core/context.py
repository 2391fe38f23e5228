"""Privileged context blocks: text placed before a prompt that the policy may read.

Self-distillation (SDPO/OPSD) conditions its teacher on a successful sibling's transcript, the
verifier's feedback on a failed attempt, or the reference solution; the lessons book puts its
lessons before every rollout prompt. All of them use this one format, one labelled block per
item, so that the built-in tiny model, whose warm-start shows the same format
(`clicker.models.tiny`, recipe `context`), can learn to read them:

    Solution: 37+45=82
    Feedback: wrong: expected 82, got 72
    Lesson: carry the one.
    37+45=

A real instruction-tuned LLM reads any reasonable format; this one is plain on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Kind = Literal["solution", "feedback", "lesson", "reference"]
LABELS: dict[str, str] = {"solution": "Solution", "feedback": "Feedback", "lesson": "Lesson",
                          "reference": "Answer"}


def context_block(kind: Kind, text: str) -> str:
    """One labelled block, ending with exactly one newline: `Solution: 37+45=82\\n`."""
    if kind not in LABELS:
        raise ValueError(f"unknown context kind {kind!r}; choose from {', '.join(LABELS)}")
    body = text.rstrip("\n")
    return f"{LABELS[kind]}: {body}\n"


def lesson_block(texts: Sequence[str]) -> str:
    """The lessons book as it goes before a prompt: one `Lesson: ...` line per lesson."""
    return "".join(context_block("lesson", t) for t in texts)


def without_context(text: str, block: str) -> str:
    """A decoded transcript without the context block we put before its prompt (the env never
    saw it): what a reviewer or a teacher is shown of another episode."""
    return text[len(block):] if block and text.startswith(block) else text


def with_context(prompt: str, blocks: Sequence[str]) -> str:
    """The prompt with its context blocks before it (no blocks: the prompt unchanged)."""
    return "".join(blocks) + prompt


def review_prompt(attempts: Sequence[tuple[str, str]]) -> str:
    """The compact review a small policy can read (and the tiny model is warm-started on):
    each attempt's transcript and its verifier feedback on one line, then `Lesson: ` for the
    reviewer to complete. attempts: (transcript, feedback) pairs."""
    lines = [f"{t.strip()} ({f.strip() or 'no feedback'})" for t, f in attempts]
    return "Review: " + "; ".join(lines) + "\nLesson: "
