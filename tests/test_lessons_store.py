"""The lesson book (issue 6): typed edits with history, the gate's verdict, the token budget,
extinction, task exclusion, concurrent writers, export/import, and `clicker lessons`."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clicker.lessons import BookError, Edit, LessonBook, copies_training_text

OK = {"accepted": True, "before": 0.4, "after": 0.6, "margin": 0.2, "reason": "helps"}
NO = {"accepted": False, "before": 0.5, "after": 0.45, "margin": -0.05, "reason": "no gain"}


def words(text: str) -> int:
    return len(text.split())


def book_at(path: Path, budget: int = 100) -> LessonBook:
    return LessonBook(path, token_budget=budget, count_tokens=words)


def add(book: LessonBook, text: str, tasks: tuple[str, ...] = (), it: int = 0) -> int:
    [lesson] = book.apply(book.propose(Edit("add", text, source_tasks=tasks), iteration=it), OK)
    return lesson.id


def test_add_update_merge_delete_with_history(tmp_path):
    book = book_at(tmp_path / "b.db")
    review = book.record_review(iteration=0, backend={"kind": "openai", "api_key": "sk-x"},
                                messages=[{"role": "user", "content": "review"}],
                                reply="ADD carry", ok=True, episode_ids=[3, 4], seconds=1.5)
    e = book.propose(Edit("add", "carry the one", source_tasks=("add:1",)), iteration=0,
                     review_id=review)
    [a] = book.apply(e, OK)
    assert (a.text, a.status, a.tokens, a.source_tasks, a.worth) == (
        "carry the one", "active", 3, ("add:1",), 1.0)
    assert book.review(review).backend == {"kind": "openai", "api_key": "<redacted>"}
    assert book.review(review).episode_ids == (3, 4)

    e = book.propose(Edit("update", "carry one to the next column", (a.id,),
                          source_tasks=("add:2",)), iteration=1)
    [u] = book.apply(e, OK)
    assert (u.id, u.text, u.tokens, u.updated_iteration) == (a.id, u.text, 6, 1)
    assert u.source_tasks == ("add:1", "add:2")

    b = add(book, "align digits by place value", it=1)
    e = book.propose(Edit("merge", "align digits, then carry", (a.id, b), reason="dup"),
                     iteration=2)
    merged, *gone = book.apply(e, OK)
    assert merged.status == "active" and merged.source_tasks == ("add:1", "add:2")
    assert [(g.id, g.status, g.merged_into) for g in gone] == [(a.id, "deleted", merged.id),
                                                              (b, "deleted", merged.id)]
    assert [x.id for x in book.active()] == [merged.id]

    [d] = book.apply(book.propose(Edit("delete", None, (merged.id,)), iteration=3), OK)
    assert d.status == "deleted" and book.active() == [] and book.tokens_used() == 0

    hist = book.history(a.id)
    assert [(h.edit.op, h.status, h.iteration) for h in hist] == [
        ("add", "applied", 0), ("update", "applied", 1), ("merge", "applied", 2)]
    assert hist[0].review_id == review and hist[0].gate == OK
    assert [h.edit.op for h in book.history(merged.id)] == ["merge", "delete"]
    assert book.check() == []


def test_rejected_edit_is_recorded_not_applied(tmp_path):
    book = book_at(tmp_path / "b.db")
    a = add(book, "carry the one")
    e = book.propose(Edit("update", "never carry", (a,)), iteration=1)
    assert book.apply(e, NO) == []
    assert book.get(a).text == "carry the one"
    [rec] = [h for h in book.history(a) if h.id == e]
    assert (rec.status, rec.reason, rec.gate) == ("rejected", "no gain", NO)
    with pytest.raises(BookError, match="already rejected"):
        book.apply(e, OK)
    # targets that are gone by the time the gate accepts: rejected, nothing changes
    d = book.propose(Edit("delete", None, (a,)), iteration=2)
    u = book.propose(Edit("update", "carry twice", (a,)), iteration=2)
    book.apply(d, OK)
    assert book.apply(u, OK) == [] and book.edits()[-1].reason == f"lesson {a} is deleted"
    with pytest.raises(BookError, match="no lesson 99"):
        book.propose(Edit("delete", None, (99,)), iteration=3)
    with pytest.raises(ValueError, match="exactly one target"):
        Edit("update", "x", (1, 2))


def test_over_budget_edit_is_refused(tmp_path):
    book = book_at(tmp_path / "b.db", budget=6)
    a = add(book, "one two three four")
    e = book.propose(Edit("add", "five six seven"), iteration=1)
    assert not book.would_fit(Edit("add", "five six seven"))
    assert book.apply(e, OK) == [] and book.edits()[-1].reason == "over budget"
    assert book.tokens_used() == 4
    # a merge that frees the old lesson's tokens fits
    [m, _] = book.apply(book.propose(Edit("merge", "one two three four five", (a,)),
                                     iteration=2), OK)
    assert book.tokens_used() == 5 and m.status == "active"
    # the budget is stored in the book
    book.close()
    assert LessonBook(tmp_path / "b.db", count_tokens=words).token_budget == 6


def _step() -> st.SearchStrategy:
    """(op, text, target picks, gate accepts?) for one random edit."""
    text = st.lists(st.sampled_from(["ab", "cd", "ef", "gh"]), min_size=1, max_size=9).map(" ".join)
    return st.tuples(st.sampled_from(["add", "update", "merge", "delete"]), text,
                     st.lists(st.integers(0, 50), min_size=1, max_size=3), st.booleans())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step(), min_size=1, max_size=25), st.integers(1, 20))
def test_budget_is_never_exceeded(steps, budget):
    with tempfile.TemporaryDirectory() as d:
        book = book_at(Path(d) / "b.db", budget=budget)
        for it, (op, text, picks, accepted) in enumerate(steps):
            ids = [x.id for x in book.lessons()]  # any status: edits on gone ones are refused
            if op != "add" and not ids:
                continue
            targets = tuple(dict.fromkeys(ids[p % len(ids)] for p in picks)) if ids else ()
            edit = Edit(op, None if op == "delete" else text,
                        () if op == "add" else targets[:1] if op == "update" else targets)
            fits = book.would_fit(edit)
            changed = book.apply(book.propose(edit, iteration=it), {"accepted": accepted})
            assert book.tokens_used() <= budget
            assert not changed or (accepted and fits)
        book.close()


def test_credit_decay_and_extinction(tmp_path):
    book = LessonBook(tmp_path / "b.db", token_budget=50, count_tokens=words, retire_below=0.5)
    a, b = add(book, "carry the one"), add(book, "count repeats")
    assert book.credit(a, +0.5).worth == pytest.approx(1.5)
    assert (book.get(a).uses, book.get(a).helped) == (1, 1)
    assert book.decay(0.4) == []  # 1.5 -> 0.9, 1.0 -> 0.6
    [gone] = book.decay(0.4)  # 0.9 -> 0.54 stays, 0.6 -> 0.36 retires
    assert gone.id == b and gone.status == "retired"
    assert [x.id for x in book.active()] == [a] and book.tokens_used() == 3
    assert book.credit(a, -0.2).status == "retired"


def test_render_excludes_own_tasks_and_orders_by_worth(tmp_path):
    book = book_at(tmp_path / "b.db")
    add(book, "carry the one", ("add:1",))
    c = add(book, "count repeated letters", ("letters:7", "letters:8"))
    book.credit(c, 1.0)
    assert book.render() == "Lesson: count repeated letters\nLesson: carry the one\n"
    assert book.render(exclude_tasks={"letters:8"}) == "Lesson: carry the one\n"
    assert book.render(exclude_tasks={"add:1", "letters:7"}) == ""


def test_wal_mode_and_integrity(tmp_path):
    book = book_at(tmp_path / "b.db")
    add(book, "carry the one")
    db = sqlite3.connect(tmp_path / "b.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert book.check() == []


def _writer(path: str, worker: int, n: int) -> None:
    book = LessonBook(path, token_budget=100_000, count_tokens=words)
    for i in range(n):
        review = book.record_review(iteration=i, backend={}, messages=[], reply="r", ok=True)
        e = book.propose(Edit("add", f"lesson {worker}-{i}"), iteration=i, review_id=review)
        book.apply(e, OK)
    book.close()


def test_four_processes_lose_no_rows(tmp_path):
    path = str(tmp_path / "b.db")
    book_at(Path(path), budget=100_000).close()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, w, 50)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    book = book_at(Path(path), budget=100_000)
    assert {x.text for x in book.active()} == {f"lesson {w}-{i}" for w in range(4)
                                                for i in range(50)}
    assert len(book.edits()) == 200 and {e.status for e in book.edits()} == {"applied"}
    assert len(book.reviews()) == 200 and book.check() == []


def test_export_import_round_trip(tmp_path):
    src = book_at(tmp_path / "a.db")
    r = src.record_review(iteration=0, backend={"model": "m", "headers": {"Authorization": "x"}},
                          messages=[{"role": "user", "content": "hi"}], reply="ok", ok=True)
    a = add(src, "carry the one", ("add:1",))
    b = add(src, "align digits")
    src.apply(src.propose(Edit("merge", "align, then carry", (a, b)), iteration=1,
                          review_id=r), OK)
    src.propose(Edit("delete", None, (a,)), iteration=2)  # still proposed
    src.export(tmp_path / "book.json")
    assert "Authorization\": \"<redacted>" in (tmp_path / "book.json").read_text()

    dst = book_at(tmp_path / "b.db")
    own = add(dst, "count repeats")
    counts = dst.import_(tmp_path / "book.json")
    assert counts == {"lessons": 3, "edits": 4, "reviews": 1, "over_budget": 0}
    texts = {x.text: x for x in dst.lessons()}
    assert set(texts) == {"count repeats", "carry the one", "align digits", "align, then carry"}
    assert len({x.id for x in dst.lessons()}) == 4 and texts["count repeats"].id == own
    new = texts["align, then carry"]
    assert texts["carry the one"].merged_into == new.id and new.source_tasks == ("add:1",)
    assert new.origin == f"imported from {tmp_path / 'book.json'}"
    merge = next(h for h in dst.history(new.id) if h.edit.op == "merge")
    assert set(merge.edit.target_ids) == {texts["carry the one"].id, texts["align digits"].id}
    assert dst.review(merge.review_id).reply == "ok" and dst.check() == []
    # a full book takes the rest retired, and its budget holds
    small = book_at(tmp_path / "c.db", budget=2)
    assert small.import_(tmp_path / "book.json")["over_budget"] == 1
    assert small.tokens_used() == 0
    assert [x.text for x in small.lessons(("retired",))] == ["align, then carry"]
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(BookError, match="not a clicker lesson export"):
        dst.import_(tmp_path / "bad.json")


def test_verbatim_copy_guard():
    prompt = "Alice has 17 apples and buys 25 more. How many apples does Alice have now?"
    assert copies_training_text("Remember: Alice has 17 apples and buys 25 more, so add.",
                                [prompt])
    assert copies_training_text("alice has 17  apples\nand buys 25 more. How many", [prompt],
                                n=16)  # case differs in the first window only; later match
    assert not copies_training_text("Add the two quantities; carry when a column passes 9.",
                                    [prompt])
    assert not copies_training_text("short", [prompt])
    # no window spans two training texts
    assert not copies_training_text("abcdefgh", ["xxabcd", "efghxx"], n=8)
    # a lesson shorter than the window is a copy when all of it is shown text (12+ chars)
    fb = "wrong: expected 1088, got 8"
    assert copies_training_text("wrong: expected 1088", [fb])
    assert not copies_training_text("carry the one.", [fb, prompt])


def test_not_a_book(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite " * 100)
    with pytest.raises(BookError, match="not a readable lesson book"):
        book_at(bad)
    with pytest.raises(BookError, match="no lesson book"):
        LessonBook(tmp_path / "missing.db", create=False)
    with pytest.raises(BookError, match="give it a token_budget"):
        LessonBook(tmp_path / "new.db")


def clicker(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CLICKER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "clicker.cli", "lessons", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_cli_lessons(tmp_path):
    path = tmp_path / "b.db"
    book = book_at(path)
    r = book.record_review(iteration=0, backend={"model": "m"}, messages=[],
                           reply="ADD: carry the [one]", ok=True)
    a = book.apply(book.propose(Edit("add", "carry the [one]"), iteration=0, review_id=r), OK)
    b = add(book, "count repeats")
    book.apply(book.propose(Edit("delete", None, (b,)), iteration=1), OK)
    book.close()

    out = clicker("list", "--book", str(path))
    assert out.returncode == 0, out.stderr
    assert "carry the [one]" in out.stdout and "count repeats" not in out.stdout
    assert "count repeats" in clicker("list", "--all", "--book", str(path)).stdout

    out = clicker("show", str(a[0].id), "--book", str(path))
    assert out.returncode == 0, out.stderr
    assert "ADD: carry the [one]" in out.stdout and "applied" in out.stdout

    out = clicker("export", str(tmp_path / "x.json"), "--book", str(path))
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "x.json").read_text())["format"] == "clicker-lessons"
    out = clicker("import", str(tmp_path / "x.json"), "--book", str(tmp_path / "new.db"),
                  "--budget", "50")
    assert out.returncode == 0, out.stderr
    assert len(book_at(tmp_path / "new.db").lessons()) == 2

    (tmp_path / "bad.db").write_bytes(b"garbage " * 200)
    for args, msg in [(["list", "--book", str(tmp_path / "nope.db")], "no lesson book"),
                      (["list"], "--book"),
                      (["show", "42", "--book", str(path)], "no lesson 42"),
                      (["list", "--book", str(tmp_path / "bad.db")], "not a readable"),
                      (["import", str(tmp_path / "x.json"), "--book", str(tmp_path / "n2.db")],
                       "no lesson book")]:
        out = clicker(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert msg in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "n2.db").exists()
