"""Moving lesson books between runs: JSON export and a merging import (issue 6).

An import gives every lesson, edit and review a fresh id in the receiving book (remapping the
links between them) and marks each with where it came from, so two books merged into one never
collide and a lesson can still be traced back to the reviewer reply that wrote it. The receiving
book's token budget holds: imported active lessons that do not fit arrive retired.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clicker.lessons.records import BookError

if TYPE_CHECKING:
    from clicker.lessons.store import LessonBook

FORMAT = "clicker-lessons"
VERSION = 1
# api_key, hf_token, Authorization, password... but not max_tokens or key_order
_SECRET = re.compile(r"(^|[_-])(api_?key|key|secret|password|passwd|token|authorization|auth)$")


def scrub(value: Any) -> Any:
    """A copy of a JSON-like value with every secret-looking key's value redacted: a backend
    description must never carry an API key into the book or an export."""
    if isinstance(value, dict):
        return {k: "<redacted>" if _SECRET.search(str(k).lower()) else scrub(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def export_book(book: LessonBook, path: Path) -> None:
    """Write every lesson (any status), edit and review of `book` to `path` as JSON."""
    reviews = [dataclasses.asdict(r) | {"backend": scrub(r.backend)} for r in book.reviews()]
    data = {"format": FORMAT, "version": VERSION,
            "lessons": [dataclasses.asdict(x) for x in book.lessons()],
            "edits": [dataclasses.asdict(e) for e in book.edits()], "reviews": reviews}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # never a half-written export


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BookError(f"no lesson export at {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BookError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BookError(f"{path} is not a clicker lesson export (format {FORMAT!r})")
    if data.get("version", 0) > VERSION:
        raise BookError(f"{path} is export version {data['version']}; upgrade clicker")
    return data


def import_book(book: LessonBook, db: sqlite3.Connection, path: Path) -> dict[str, int]:
    """Insert the export at `path` into `book` through `db`, inside the caller's transaction
    (a malformed file changes nothing). Returns counts: lessons, edits, reviews, and
    over_budget (active lessons that arrived retired because the budget was full)."""
    data, origin = _read(path), f"imported from {path}"
    try:
        return _insert(book, db, data, origin)
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, BookError):
            raise
        raise BookError(f"{path}: malformed lesson export ({type(e).__name__}: {e})") from None


def _insert(book: LessonBook, db: sqlite3.Connection, data: dict[str, Any],
            origin: str) -> dict[str, int]:
    reviews: dict[int, int] = {}
    for r in data["reviews"]:
        cur = db.execute(
            "INSERT INTO reviews (iteration, backend, messages, reply, ok, reason, episode_ids, "
            "seconds, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (int(r["iteration"]), json.dumps(scrub(r["backend"])), json.dumps(r["messages"]),
             str(r["reply"]), int(bool(r["ok"])), str(r["reason"]),
             json.dumps(r["episode_ids"]), float(r["seconds"]), origin))
        reviews[int(r["id"])] = int(cur.lastrowid)

    lessons: dict[int, int] = {}
    used, over = book.tokens_used(), 0
    # active lessons first, best first: when the budget runs out the weakest are retired
    order = sorted(data["lessons"], key=lambda x: (x["status"] != "active", -x["worth"], x["id"]))
    for x in order:
        tokens, status = book.count_tokens(str(x["text"])), str(x["status"])
        if status == "active" and used + tokens > book.token_budget:
            status, over = "retired", over + 1
        used += tokens if status == "active" else 0
        cur = db.execute(
            "INSERT INTO lessons (text, worth, status, tokens, source_tasks, created_iteration, "
            "updated_iteration, uses, helped, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (str(x["text"]), float(x["worth"]), status, tokens,
             json.dumps(list(x["source_tasks"])), int(x["created_iteration"]),
             int(x["updated_iteration"]), int(x["uses"]), int(x["helped"]), origin))
        lessons[int(x["id"])] = int(cur.lastrowid)
    db.executemany("UPDATE lessons SET merged_into = ? WHERE id = ?",
                   [(lessons[int(x["merged_into"])], lessons[int(x["id"])])
                    for x in order if x.get("merged_into") is not None])

    for e in data["edits"]:
        edit = e["edit"]
        review = e["review_id"]
        db.execute(
            "INSERT INTO edits (op, text, target_ids, reason, source_tasks, iteration, review_id, "
            "status, gate, decision, result_ids, origin) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (edit["op"], edit["text"], json.dumps([lessons[int(i)] for i in edit["target_ids"]]),
             str(edit["reason"]), json.dumps(list(edit["source_tasks"])), int(e["iteration"]),
             None if review is None else reviews[int(review)], e["status"],
             None if e["gate"] is None else json.dumps(e["gate"]), str(e["reason"]),
             json.dumps([lessons[int(i)] for i in e["result_ids"]]), origin))
    return {"lessons": len(lessons), "edits": len(data["edits"]), "reviews": len(reviews),
            "over_budget": over}
