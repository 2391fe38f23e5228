"""Guards on lesson text that need no model: the verbatim-copy check.

A lesson must teach a rule, not smuggle a training problem or its answer into the prompt: a
lesson that repeats a long stretch of an episode the reviewer was shown would let the policy
score on that problem by reading, not reasoning. The gate rejects such edits (issue 6).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DEFAULT_COPY_CHARS = 32  # long enough that stock phrases ("the answer is") never trip it
MIN_WHOLE_COPY_CHARS = 12  # a shorter lesson that is wholly shown text ("wrong: expected 82")
_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    # whitespace is collapsed so re-wrapping a copied line does not hide the copy
    return _SPACE.sub(" ", text).strip()


def copies_training_text(text: str, training_texts: Iterable[str],
                         n: int = DEFAULT_COPY_CHARS) -> bool:
    """True when `text` contains any run of `n` characters (after collapsing whitespace) that
    appears verbatim in one of `training_texts` (the prompts and completions shown to the
    reviewer). Case matters: a copy is verbatim by definition."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    lesson = _norm(text)
    # NUL cannot occur in the texts, so no window spans two training texts
    corpus = "\x00".join(_norm(t) for t in training_texts)
    if len(lesson) < n:  # a short lesson is a copy when the whole of it is shown text
        return len(lesson) >= MIN_WHOLE_COPY_CHARS and lesson in corpus
    return any(lesson[i:i + n] in corpus for i in range(len(lesson) - n + 1))
