"""The reviewer's side of reflection: which groups to show, the meta-prompt, and parsing its reply
into typed edits.

Only groups with mixed rewards are reviewed (Training-Free GRPO): a group where every attempt
succeeded or every one failed shows no contrast to learn from. The reviewer sees the successes
beside the failures, each with the verifier's feedback, and (in the `chat` style, for real chat
models) the current book with ids, so it can address lessons: ADD, UPDATE id, MERGE ids,
DELETE ids. The `compact` style is the one-line review a small policy can read and the built-in
tiny model was warm-started on (`clicker.core.context.review_prompt`); its reply is one lesson,
an add.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from clicker.core.context import review_prompt, without_context
from clicker.core.types import Episode
from clicker.lessons.records import Edit, Lesson

Style = Literal["chat", "compact"]

SYSTEM = """You review attempts at a task and maintain a short book of lessons that will be \
shown to the solver before each new problem. Successes are shown beside failures, with the \
checker's feedback. Write general lessons that would turn failures into successes on other \
problems of the same kind. Never copy a problem, an answer or an attempt into a lesson.

Reply with edits only, one per line, in exactly these forms:
ADD: <lesson>
UPDATE <id>: <new text of lesson id>
MERGE <id>,<id>: <one lesson replacing those>
DELETE <id>
Keep each lesson under 25 words. Reply NONE if no edit would help."""


@dataclass(frozen=True)
class Shown:
    """What the reviewer was shown: the episodes (for provenance and the copy guard) and their
    task keys (so a lesson is never retrieved by the tasks it was written from)."""

    episodes: tuple[Episode, ...]
    task_keys: tuple[str, ...]
    texts: tuple[str, ...]  # transcripts shown, for the verbatim-copy guard


def task_key(e: Episode) -> str:
    """The problem an episode came from: split/index."""
    return f"{e.meta.get('split', '?')}/{e.meta.get('index', '?')}"


def mixed_groups(episodes: Sequence[Episode], threshold: float = 0.5) -> list[list[Episode]]:
    """The groups holding at least one success (reward >= threshold) and one failure."""
    groups: dict[int, list[Episode]] = {}
    for e in episodes:
        groups.setdefault(e.group, []).append(e)
    return [g for g in groups.values()
            if any(e.reward >= threshold for e in g) and any(e.reward < threshold for e in g)]


def review_messages(groups: Sequence[Sequence[Episode]], lessons: Sequence[Lesson], style: Style,
                    decode, *, per_group: int = 2, threshold: float = 0.5,
                    ) -> tuple[list[dict[str, str]], Shown]:
    """The reviewer's messages for these groups: up to `per_group` successes and as many failures
    from each. Returns the messages and what was shown."""
    shown: list[Episode] = []
    for g in groups:
        wins = [e for e in g if e.reward >= threshold][:per_group]
        fails = [e for e in g if e.reward < threshold][:per_group]
        shown += wins + fails
    if style == "compact":  # a small model reads a short review: one group, 2 + 2 at most
        shown = shown[:2 * per_group]
    texts = [without_context(decode(e.tokens), e.meta.get("context", "")).strip() for e in shown]
    feedback = [e.feedback for e in shown if e.feedback]  # shown too: a lesson must not copy it
    info = Shown(tuple(shown), tuple(sorted({task_key(e) for e in shown})),
                 tuple(texts + feedback))
    if style == "compact":
        return [{"role": "user", "content": review_prompt(
            [(t, e.feedback or ("correct" if e.reward >= threshold else "wrong"))
             for t, e in zip(texts, shown, strict=True)])}], info
    book = "\n".join(f"[{x.id}] {x.text}" for x in lessons) or "(empty)"
    attempts = "\n\n".join(
        f"{'SUCCESS' if e.reward >= threshold else 'FAILURE'} (reward {e.reward:g})\n{t}\n"
        f"feedback: {e.feedback or '-'}" for t, e in zip(texts, shown, strict=True))
    user = f"Current lessons:\n{book}\n\nAttempts:\n{attempts}"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], info


_ADD = re.compile(r"^\s*ADD\s*:\s*(.+)$", re.IGNORECASE)
_UPDATE = re.compile(r"^\s*UPDATE\s+(\d+)\s*:\s*(.+)$", re.IGNORECASE)
_MERGE = re.compile(r"^\s*MERGE\s+([\d,\s]+?)\s*:\s*(.+)$", re.IGNORECASE)
_DELETE = re.compile(r"^\s*DELETE\s+([\d,\s]+)$", re.IGNORECASE)
MAX_LESSON_CHARS = 300


def parse_edits(reply: str, style: Style, source_tasks: Sequence[str] = ()
                ) -> tuple[list[Edit], str]:
    """Typed edits in a reviewer reply, and why there are none ("" when some were found).

    compact: the first non-empty line is one lesson (an add). chat: every line in one of the
    SYSTEM forms; other lines are ignored; NONE means no edit."""
    src = tuple(source_tasks)
    lines = [ln.strip().strip("`*-").strip() for ln in reply.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return [], "empty reply"
    if style == "compact":
        text = lines[0]
        if len(text) < 3 or len(text) > MAX_LESSON_CHARS:
            return [], f"lesson of {len(text)} characters"
        return [Edit("add", text, reason="compact review", source_tasks=src)], ""
    if lines[0].upper() == "NONE":
        return [], "reviewer proposed no edit"
    edits: list[Edit] = []
    for ln in lines:
        try:
            if m := _ADD.match(ln):
                edits.append(Edit("add", m[1].strip(), source_tasks=src))
            elif m := _UPDATE.match(ln):
                edits.append(Edit("update", m[2].strip(), (int(m[1]),), source_tasks=src))
            elif m := _MERGE.match(ln):
                ids = tuple(int(x) for x in re.split(r"[,\s]+", m[1].strip()) if x)
                edits.append(Edit("merge", m[2].strip(), ids, source_tasks=src))
            elif m := _DELETE.match(ln):
                ids = tuple(int(x) for x in re.split(r"[,\s]+", m[1].strip()) if x)
                edits.append(Edit("delete", None, ids, source_tasks=src))
        except ValueError:  # e.g. MERGE 3,3: a malformed edit is skipped, not fatal
            continue
    edits = [e for e in edits if e.text is None or len(e.text) <= MAX_LESSON_CHARS]
    return edits, "" if edits else "no edit in the expected form"
