"""Typed records of the lesson book: a Lesson, a proposed Edit, its stored EditRecord, and the
ReviewRecord of the reviewer call that proposed it (issue 6).

Edits are typed and ID-addressed (add / update / merge / delete) rather than whole-book rewrites:
Dynamic Cheatsheet showed that rewriting the whole sheet silently loses entries, and ACE that a
book with no merge/delete bloats (REFERENCES.md, "Reflective lessons").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["active", "retired", "deleted"]
Op = Literal["add", "update", "merge", "delete"]
OPS: tuple[str, ...] = ("add", "update", "merge", "delete")


class BookError(ValueError):
    """A lesson book (or export) that cannot be opened or used as asked: one line, for the CLI."""


@dataclass(frozen=True)
class Lesson:
    """One lesson of the book. `worth` falls each iteration unless the lesson keeps helping
    (extinction); `source_tasks` are the task keys whose episodes it was written from, so a task
    never retrieves a lesson written from its own episodes (ReasoningBank's leak)."""

    id: int
    text: str
    worth: float
    status: Status
    tokens: int
    source_tasks: tuple[str, ...]
    created_iteration: int
    updated_iteration: int
    uses: int
    helped: int
    merged_into: int | None = None  # set on a lesson a merge replaced
    origin: str = ""  # "imported from <file>" for lessons brought in by import_


@dataclass(frozen=True)
class Edit:
    """A typed edit the reviewer proposes. add: `text`, no targets; update: `text`, exactly one
    target; merge: `text` replaces one or more targets (one target: an add that duplicated an
    existing lesson); delete: targets, no text."""

    op: Op
    text: str | None
    target_ids: tuple[int, ...] = ()
    reason: str = ""
    source_tasks: tuple[str, ...] = ()  # task keys of the episodes the reviewer was shown

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"edit op must be one of {', '.join(OPS)}, got {self.op!r}")
        needs_text = self.op != "delete"
        if needs_text and not (self.text and self.text.strip()):
            raise ValueError(f"a {self.op} edit needs non-empty text")
        if not needs_text and self.text is not None:
            raise ValueError("a delete edit takes no text")
        n = len(self.target_ids)
        want = {"add": n == 0, "update": n == 1, "merge": n >= 1, "delete": n >= 1}[self.op]
        if not want:
            rule = {"add": "no targets", "update": "exactly one target",
                    "merge": "at least one target", "delete": "at least one target"}[self.op]
            raise ValueError(f"a {self.op} edit needs {rule}, got target_ids={self.target_ids}")
        if len(set(self.target_ids)) != n:
            raise ValueError(f"edit target_ids repeat an id: {self.target_ids}")


@dataclass(frozen=True)
class EditRecord:
    """An edit as the book stored it: what was proposed, and what the gate decided.
    status: proposed (not yet decided) | applied | rejected; `result_ids` are the lessons the
    applied edit created or changed."""

    id: int
    edit: Edit
    iteration: int
    review_id: int | None
    status: Literal["proposed", "applied", "rejected"]
    gate: dict[str, Any] | None
    reason: str  # why it was rejected ("over budget", the gate's reason); "" when applied
    result_ids: tuple[int, ...]
    origin: str = ""


@dataclass(frozen=True)
class ReviewRecord:
    """Provenance of one reviewer call: which backend, the exact messages, the raw reply, and
    which episodes it was shown, so any lesson can be traced to the text that produced it."""

    id: int
    iteration: int
    backend: dict[str, Any]  # description of the reviewer backend; secrets are never stored
    messages: tuple[dict[str, Any], ...]
    reply: str
    ok: bool
    reason: str
    episode_ids: tuple[Any, ...]
    seconds: float
    origin: str = ""
