"""The lesson book: one SQLite file (WAL mode) holding lessons, every proposed edit with the
gate's verdict, and the provenance of every reviewer call (issue 6).

Why a database and not a JSON file: rollout workers, the trainer and `clicker lessons` read and
write one book at once; WAL lets readers run beside one writer, a busy timeout queues writers,
and every change is one short `BEGIN IMMEDIATE` transaction, so concurrent processes lose no rows
and the token-budget check and the write it guards cannot interleave with another writer.

The book has a fixed token budget (ACE's playbook bloated to 100K tokens without one) and an
edit that would exceed it is refused. Worth decays every iteration unless credit says a lesson
still helps; below `retire_below` a lesson is retired (extinction, ExpeL's rule scores).

Usage: `book = LessonBook("runs/x/lessons.db", token_budget=512)`, then `record_review`,
`propose`, `apply(edit_id, gate)`; `render(exclude_tasks=...)` is the prompt block.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from clicker.core.context import lesson_block
from clicker.lessons.records import BookError, Edit, EditRecord, Lesson, ReviewRecord
from clicker.lessons.transfer import export_book, import_book, scrub

SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS lessons (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        text TEXT NOT NULL,
        worth REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'deleted')),
        tokens INTEGER NOT NULL CHECK (tokens >= 0),
        source_tasks TEXT NOT NULL DEFAULT '[]',
        created_iteration INTEGER NOT NULL,
        updated_iteration INTEGER NOT NULL,
        uses INTEGER NOT NULL DEFAULT 0,
        helped INTEGER NOT NULL DEFAULT 0,
        merged_into INTEGER REFERENCES lessons(id),
        origin TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS reviews (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        iteration INTEGER NOT NULL,
        backend TEXT NOT NULL,
        messages TEXT NOT NULL,
        reply TEXT NOT NULL,
        ok INTEGER NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        episode_ids TEXT NOT NULL DEFAULT '[]',
        seconds REAL NOT NULL DEFAULT 0,
        origin TEXT NOT NULL DEFAULT '')""",
    """CREATE TABLE IF NOT EXISTS edits (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        op TEXT NOT NULL CHECK (op IN ('add', 'update', 'merge', 'delete')),
        text TEXT,
        target_ids TEXT NOT NULL DEFAULT '[]',
        reason TEXT NOT NULL DEFAULT '',
        source_tasks TEXT NOT NULL DEFAULT '[]',
        iteration INTEGER NOT NULL,
        review_id INTEGER REFERENCES reviews(id),
        status TEXT NOT NULL CHECK (status IN ('proposed', 'applied', 'rejected')),
        gate TEXT,
        decision TEXT NOT NULL DEFAULT '',
        result_ids TEXT NOT NULL DEFAULT '[]',
        origin TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX IF NOT EXISTS lessons_status ON lessons(status, worth)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_LESSON_COLS = ("id, text, worth, status, tokens, source_tasks, created_iteration, "
                "updated_iteration, uses, helped, merged_into, origin")
_EDIT_COLS = ("id, op, text, target_ids, reason, source_tasks, iteration, review_id, status, "
              "gate, decision, result_ids, origin")
_REVIEW_COLS = "id, iteration, backend, messages, reply, ok, reason, episode_ids, seconds, origin"


def approx_tokens(text: str) -> int:
    """About four characters per token (BPE on English); pass the policy tokenizer's count
    for an exact budget."""
    return max(1, math.ceil(len(text) / 4))


def _lesson(row: Sequence[Any]) -> Lesson:
    return Lesson(id=row[0], text=row[1], worth=row[2], status=row[3], tokens=row[4],
                  source_tasks=tuple(json.loads(row[5])), created_iteration=row[6],
                  updated_iteration=row[7], uses=row[8], helped=row[9], merged_into=row[10],
                  origin=row[11])


def _edit(row: Sequence[Any]) -> EditRecord:
    edit = Edit(op=row[1], text=row[2], target_ids=tuple(json.loads(row[3])), reason=row[4],
                source_tasks=tuple(json.loads(row[5])))
    return EditRecord(id=row[0], edit=edit, iteration=row[6], review_id=row[7], status=row[8],
                      gate=json.loads(row[9]) if row[9] else None, reason=row[10],
                      result_ids=tuple(json.loads(row[11])), origin=row[12])


def _review(row: Sequence[Any]) -> ReviewRecord:
    return ReviewRecord(id=row[0], iteration=row[1], backend=json.loads(row[2]),
                        messages=tuple(json.loads(row[3])), reply=row[4], ok=bool(row[5]),
                        reason=row[6], episode_ids=tuple(json.loads(row[7])), seconds=row[8],
                        origin=row[9])


class LessonBook:
    """A lesson book in one SQLite file; see the module docstring. The token budget is stored in
    the book: give it to create a book (or to change it), leave it None to use the stored one.
    `create=False` opens only an existing book (the CLI: a mistyped path must not create one)."""

    def __init__(self, path: str | Path, *, token_budget: int | None = None,
                 count_tokens: Callable[[str], int] = approx_tokens,
                 initial_worth: float = 1.0, retire_below: float = 0.2,
                 busy_timeout_s: float = 30.0, create: bool = True) -> None:
        if token_budget is not None and token_budget < 1:
            raise BookError(f"token_budget must be >= 1, got {token_budget}")
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise BookError(f"no lesson book at {self.path}")
        self.count_tokens = count_tokens
        self.initial_worth = initial_worth
        self.retire_below = retire_below
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self.token_budget = self._migrate(token_budget)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise BookError(f"{self.path} is not a readable lesson book: {e}") from None
        except BaseException:
            self._db.close()
            raise

    def _migrate(self, token_budget: int | None) -> int:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BookError(f"{self.path} has schema {version}; this clicker reads up to "
                                f"{SCHEMA_VERSION}: upgrade clicker")
            tables = {r[0] for r in db.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")}
            if version == 0 and tables:
                raise BookError(f"{self.path} is an SQLite file but not a lesson book")
            for stmt in _SCHEMA:
                db.execute(stmt)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if token_budget is not None:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('token_budget', ?)",
                           (str(token_budget),))
                return token_budget
            row = db.execute("SELECT value FROM meta WHERE key = 'token_budget'").fetchone()
            if row is None:
                raise BookError(f"{self.path} is a new lesson book: give it a token_budget")
            return int(row[0])

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front: a check (budget, status) and the write it
        # guards see the same book even with other processes writing
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- provenance and proposals -------------------------------------------------------

    def record_review(self, *, iteration: int, backend: Mapping[str, Any],
                      messages: Sequence[Mapping[str, Any]], reply: str, ok: bool,
                      reason: str = "", episode_ids: Iterable[Any] = (),
                      seconds: float = 0.0) -> int:
        """Store one reviewer call; keys that look like secrets in `backend` are redacted."""
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO reviews (iteration, backend, messages, reply, ok, reason, "
                "episode_ids, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (iteration, json.dumps(scrub(dict(backend))), json.dumps(list(messages)), reply,
                 int(ok), reason, json.dumps(list(episode_ids)), float(seconds)))
            return int(cur.lastrowid)

    def propose(self, edit: Edit, *, iteration: int, review_id: int | None = None) -> int:
        """Store a proposed edit (not yet applied); returns its id for `apply`. Every target
        must be a lesson of this book (a reviewer that invents ids is caught here), so the
        history and exports never point at lessons that do not exist."""
        with self._write() as db:
            for tid in edit.target_ids:
                self.get(tid)
            cur = db.execute(
                "INSERT INTO edits (op, text, target_ids, reason, source_tasks, iteration, "
                "review_id, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'proposed')",
                (edit.op, edit.text, json.dumps(list(edit.target_ids)), edit.reason,
                 json.dumps(list(edit.source_tasks)), iteration, review_id))
            return int(cur.lastrowid)

    def apply(self, edit_id: int, gate: Mapping[str, Any]) -> list[Lesson]:
        """Decide a proposed edit with the gate's verdict, in one transaction. `gate` holds at
        least `accepted` (bool), usually before/after reward, margin and reason. A rejected
        edit, one whose targets are gone, or one over the token budget is recorded as rejected
        and changes no lesson. Returns the lessons the edit created or changed."""
        if "accepted" not in gate:
            raise BookError("gate result needs an 'accepted' key")
        with self._write() as db:
            rec = self._edit_record(edit_id)
            if rec.status != "proposed":
                raise BookError(f"edit {edit_id} was already {rec.status}")
            edit = rec.edit
            problem = "" if gate["accepted"] else str(gate.get("reason") or "rejected by gate")
            problem = problem or self._target_problem(edit)
            if not problem and not self.would_fit(edit):
                problem = "over budget"
            ids = [] if problem else self._do(edit, rec.iteration)
            # default=float: gate numbers often arrive as numpy or torch scalars
            db.execute("UPDATE edits SET status = ?, gate = ?, decision = ?, result_ids = ? "
                       "WHERE id = ?", ("rejected" if problem else "applied",
                                        json.dumps(dict(gate), default=float), problem,
                                        json.dumps(ids), edit_id))
            return [self.get(i) for i in ids]

    def _target_problem(self, edit: Edit) -> str:
        allowed = ("active", "retired") if edit.op == "delete" else ("active",)
        for tid in edit.target_ids:
            status = self.get(tid).status
            if status not in allowed:
                return f"lesson {tid} is {status}"
        return ""

    def _do(self, edit: Edit, iteration: int) -> list[int]:
        db, targets = self._db, [self.get(t) for t in edit.target_ids]
        if edit.op == "update":
            old = targets[0]
            tasks = sorted({*old.source_tasks, *edit.source_tasks})
            db.execute("UPDATE lessons SET text = ?, tokens = ?, source_tasks = ?, "
                       "updated_iteration = ? WHERE id = ?",
                       (edit.text, self.count_tokens(edit.text or ""), json.dumps(tasks),
                        iteration, old.id))
            return [old.id]
        if edit.op == "delete":
            db.executemany("UPDATE lessons SET status = 'deleted', updated_iteration = ? "
                           "WHERE id = ?", [(iteration, t.id) for t in targets])
            return [t.id for t in targets]
        # add, or merge: one new lesson; a merge inherits the best worth and the counts
        tasks = sorted({*edit.source_tasks, *(s for t in targets for s in t.source_tasks)})
        worth = max([self.initial_worth, *(t.worth for t in targets)])
        cur = db.execute(
            "INSERT INTO lessons (text, worth, status, tokens, source_tasks, created_iteration, "
            "updated_iteration, uses, helped) VALUES (?, ?, 'active', ?, ?, ?, ?, ?, ?)",
            (edit.text, worth, self.count_tokens(edit.text or ""), json.dumps(tasks), iteration,
             iteration, sum(t.uses for t in targets), sum(t.helped for t in targets)))
        new = int(cur.lastrowid)
        db.executemany("UPDATE lessons SET status = 'deleted', merged_into = ?, "
                       "updated_iteration = ? WHERE id = ?",
                       [(new, iteration, t.id) for t in targets])
        return [new, *(t.id for t in targets)]

    # ---- budget -------------------------------------------------------------------------

    def tokens_used(self) -> int:
        """Tokens of the active lessons: what the rendered block costs every prompt."""
        return int(self._db.execute(
            "SELECT COALESCE(SUM(tokens), 0) FROM lessons WHERE status = 'active'").fetchone()[0])

    def would_fit(self, edit: Edit) -> bool:
        """Whether applying `edit` keeps the active lessons within the token budget. An edit
        that does not grow the book always fits (a book opened with a smaller budget than it
        was filled under can still shrink)."""
        used = self.tokens_used()
        freed = sum(t.tokens for t in map(self._maybe, edit.target_ids)
                    if t is not None and t.status == "active")
        after = used - freed + (self.count_tokens(edit.text) if edit.text else 0)
        return after <= self.token_budget or after <= used

    # ---- worth and extinction -----------------------------------------------------------

    def credit(self, lesson_id: int, delta: float) -> Lesson:
        """Add `delta` to a lesson's worth after it was used (positive: it helped); an active
        lesson whose worth falls below `retire_below` is retired."""
        with self._write() as db:
            self.get(lesson_id)
            db.execute("UPDATE lessons SET worth = worth + ?, uses = uses + 1, "
                       "helped = helped + ? WHERE id = ?", (delta, int(delta > 0), lesson_id))
            self._retire()
            return self.get(lesson_id)

    def decay(self, rate: float) -> list[Lesson]:
        """Multiply every active lesson's worth by (1 - rate), once per iteration, and retire
        those that fall below `retire_below`; returns the lessons retired now."""
        if not 0.0 <= rate < 1.0:
            raise BookError(f"decay rate must be in [0, 1), got {rate}")
        with self._write() as db:
            db.execute("UPDATE lessons SET worth = worth * ? WHERE status = 'active'",
                       (1.0 - rate,))
            return [self.get(i) for i in self._retire()]

    def _retire(self) -> list[int]:
        ids = [r[0] for r in self._db.execute(
            "SELECT id FROM lessons WHERE status = 'active' AND worth < ?", (self.retire_below,))]
        self._db.executemany("UPDATE lessons SET status = 'retired' WHERE id = ?",
                             [(i,) for i in ids])
        return ids

    # ---- reading ------------------------------------------------------------------------

    def _maybe(self, lesson_id: int) -> Lesson | None:
        row = self._db.execute(f"SELECT {_LESSON_COLS} FROM lessons WHERE id = ?",
                               (lesson_id,)).fetchone()
        return _lesson(row) if row else None

    def get(self, lesson_id: int) -> Lesson:
        lesson = self._maybe(lesson_id)
        if lesson is None:
            raise BookError(f"no lesson {lesson_id} in {self.path}")
        return lesson

    def lessons(self, statuses: Iterable[str] = ("active", "retired", "deleted")) -> list[Lesson]:
        """Lessons with the given statuses, highest worth first (ties: oldest first)."""
        wanted = tuple(statuses)
        marks = ", ".join("?" * len(wanted))
        rows = self._db.execute(f"SELECT {_LESSON_COLS} FROM lessons WHERE status IN ({marks}) "
                                "ORDER BY worth DESC, id", wanted)
        return [_lesson(r) for r in rows]

    def active(self) -> list[Lesson]:
        return self.lessons(("active",))

    def _edit_record(self, edit_id: int) -> EditRecord:
        row = self._db.execute(f"SELECT {_EDIT_COLS} FROM edits WHERE id = ?",
                               (edit_id,)).fetchone()
        if row is None:
            raise BookError(f"no edit {edit_id} in {self.path}")
        return _edit(row)

    def edits(self) -> list[EditRecord]:
        return [_edit(r) for r in self._db.execute(f"SELECT {_EDIT_COLS} FROM edits ORDER BY id")]

    def history(self, lesson_id: int) -> list[EditRecord]:
        """Every edit that targeted the lesson or created/changed it, oldest first."""
        rows = self._db.execute(
            f"SELECT {_EDIT_COLS} FROM edits WHERE "
            "EXISTS (SELECT 1 FROM json_each(edits.target_ids) WHERE value = ?1) OR "
            "EXISTS (SELECT 1 FROM json_each(edits.result_ids) WHERE value = ?1) ORDER BY id",
            (lesson_id,))
        return [_edit(r) for r in rows]

    def review(self, review_id: int) -> ReviewRecord:
        row = self._db.execute(f"SELECT {_REVIEW_COLS} FROM reviews WHERE id = ?",
                               (review_id,)).fetchone()
        if row is None:
            raise BookError(f"no review {review_id} in {self.path}")
        return _review(row)

    def reviews(self) -> list[ReviewRecord]:
        return [_review(r) for r in self._db.execute(
            f"SELECT {_REVIEW_COLS} FROM reviews ORDER BY id")]

    def render(self, exclude_tasks: Iterable[str] = ()) -> str:
        """The prompt block of active lessons, best first: one "Lesson: ...\n" line each
        (`clicker.core.context`, the format the tiny model reads), or "" when none apply.
        Lessons written from any task in `exclude_tasks` are left out, so a task never reads
        lessons distilled from its own episodes."""
        skip = set(exclude_tasks)
        return lesson_block([x.text for x in self.active() if not skip.intersection(x.source_tasks)])

    def check(self) -> list[str]:
        """Problems found by SQLite's integrity and foreign-key checks; [] when sound."""
        problems = [r[0] for r in self._db.execute("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in
                     self._db.execute("PRAGMA foreign_key_check")]
        return problems

    # ---- moving books -------------------------------------------------------------------

    def export(self, path: str | Path) -> None:
        """Write lessons, edits and reviews to a JSON file (backend secrets redacted)."""
        export_book(self, Path(path))

    def import_(self, path: str | Path) -> dict[str, int]:
        """Merge an exported book into this one with fresh ids, in one transaction; see
        `transfer.import_book`. Returns counts of what was brought in."""
        with self._write() as db:
            return import_book(self, db, Path(path))
