"""Reflection: the reviewer's prompt and parser, the gate, the guards, and the loop with a book."""

from __future__ import annotations

import json

import pytest

from clicker.core.config import LessonsConfig
from clicker.core.context import lesson_block
from clicker.core.types import Episode, Turn
from clicker.lessons.backends import ChatReply
from clicker.lessons.reflect import Reflection, book_context
from clicker.lessons.reviewer import mixed_groups, parse_edits, review_messages
from clicker.lessons.store import LessonBook


def _ep(group: int, reward: float, text: str, index: int = 0) -> Episode:
    return Episode(tokens=[ord(c) for c in text], action_mask=[False] * len(text),
                   logprobs=[0.0] * len(text), prompt=text,
                   turns=(Turn("x", "", reward, "correct" if reward else "wrong: expected 9"),),
                   group=group, meta={"split": "train", "index": index})


def _decode_map(eps):
    table = {tuple(e.tokens): e.prompt for e in eps}
    return lambda ids: table[tuple(ids)]


def test_only_mixed_groups_are_reviewed():
    eps = [_ep(0, 1, "a"), _ep(0, 0, "b"), _ep(1, 1, "c"), _ep(1, 1, "d"), _ep(2, 0, "e")]
    assert [[e.prompt for e in g] for g in mixed_groups(eps)] == [["a", "b"]]


def test_parse_chat_edits_and_reasons():
    reply = """Here you go:
ADD: carry the one.
UPDATE 3: count every copy of the letter.
MERGE 1, 2: add digits right to left.
DELETE 4,5
MERGE 6,6: a repeated id is skipped, not fatal
nonsense line"""
    edits, why = parse_edits(reply, "chat", ["train/1"])
    assert why == ""
    assert [(e.op, e.text, e.target_ids) for e in edits] == [
        ("add", "carry the one.", ()), ("update", "count every copy of the letter.", (3,)),
        ("merge", "add digits right to left.", (1, 2)), ("delete", None, (4, 5))]
    assert all(e.source_tasks == ("train/1",) for e in edits)
    assert parse_edits("", "chat") == ([], "empty reply")
    assert parse_edits("NONE", "chat")[1] == "reviewer proposed no edit"
    assert parse_edits("I think the model should try harder", "chat")[1] == \
        "no edit in the expected form"
    edits, _ = parse_edits("carry the one.\nmore text", "compact")
    assert [(e.op, e.text) for e in edits] == [("add", "carry the one.")]


def test_review_messages_show_successes_beside_failures():
    eps = [_ep(0, 1, "12+3=15"), _ep(0, 0, "12+3=14"), _ep(0, 0, "12+3=16")]
    msgs, shown = review_messages([eps], [], "chat", _decode_map(eps), per_group=1)
    assert msgs[0]["role"] == "system" and "ADD:" in msgs[0]["content"]
    assert "SUCCESS" in msgs[1]["content"] and "FAILURE" in msgs[1]["content"]
    assert "12+3=16" not in msgs[1]["content"]  # per_group=1: one failure
    assert shown.task_keys == ("train/0",)
    compact, _ = review_messages([eps], [], "compact", _decode_map(eps))
    assert compact == [{"role": "user", "content":
                        "Review: 12+3=15 (correct); 12+3=14 (wrong: expected 9); "
                        "12+3=16 (wrong: expected 9)\nLesson: "}]


class FakeBackend:
    def __init__(self, replies):
        self.replies = list(replies)

    def chat(self, messages, *, max_tokens, temperature):
        text = self.replies.pop(0)
        if text is None:
            return ChatReply(None, False, "timed out after 0.5 s", "", 0.5, 3)
        return ChatReply(text, True, "", text, 0.01, 1)

    def describe(self):
        return {"kind": "fake"}


def _score_by_words(context):
    """Validation reward: 0.5, +0.2 for 'good', -0.2 for 'bad' in the block."""
    block = context("train", 0) if context else ""
    return 0.5 + 0.2 * ("good" in block) - 0.2 * ("bad" in block), 10


def _mixed():
    return [_ep(0, 1, "7+8=15", 1), _ep(0, 0, "7+8=14", 1)]


def _reflect(tmp_path, replies, budget=64, **kw):
    book = LessonBook(tmp_path / "b.db", token_budget=budget, count_tokens=len)
    s = LessonsConfig(style="chat", dedup=False, revalidate_every=0, **kw)
    return book, Reflection(book, FakeBackend(replies), _score_by_words, s)


def test_gate_accepts_an_edit_that_helps_and_rejects_one_that_hurts(tmp_path):
    eps = _mixed()
    book, r = _reflect(tmp_path, ["ADD: a good habit\nADD: a bad habit\nADD: a neutral habit"])
    m = r.step(0, eps, _decode_map(eps))
    assert [x.text for x in book.active()] == ["a good habit"]
    assert m["lessons/proposed"] == 3 and m["lessons/accepted"] == 1 and m["lessons/rejected"] == 2
    assert m["lessons/world_tokens"] == 40  # the base book + 3 candidates, 10 tokens each
    recs = book.edits()
    assert [x.status for x in recs] == ["applied", "rejected", "rejected"]
    assert recs[0].gate["before"] == 0.5 and recs[0].gate["after"] == pytest.approx(0.7)
    assert "margin" in recs[1].reason
    assert book.history(book.active()[0].id)[0].review_id == book.reviews()[0].id


def test_a_lesson_that_copies_training_text_is_rejected(tmp_path):
    eps = [_ep(0, 1, "Q: How many r in strawberry? A: 3 good", 1), _ep(0, 0, "x", 1)]
    book, r = _reflect(tmp_path, ["ADD: Q: How many r in strawberry? A: 3 good"], budget=500)
    r.step(0, eps, _decode_map(eps))
    assert book.active() == []
    assert book.edits()[0].reason == "copies training text verbatim"


def test_the_book_never_exceeds_its_budget(tmp_path):
    eps = _mixed()
    book, r = _reflect(tmp_path, [f"ADD: good lesson number {i}" for i in range(8)], budget=50,
                       gate_margin=-1.0)  # the gate accepts everything: only the budget binds
    for it in range(8):
        r.step(it, eps, _decode_map(eps))
        assert book.tokens_used() <= 50
    assert any(x.reason == "over budget" for x in book.edits())


def test_failed_or_malformed_replies_are_recorded_not_raised(tmp_path):
    eps = _mixed()
    book, r = _reflect(tmp_path, [None, "blah blah", "MERGE 99: good merge of lessons"])
    for it in range(3):
        assert r.step(it, eps, _decode_map(eps))["lessons/review_failed"] in (0.0, 1.0)
    reviews = book.reviews()
    assert [x.ok for x in reviews] == [False, False, True]
    assert "timed out" in reviews[0].reason and reviews[1].reason == "no edit in the expected form"
    assert book.active() == [] and book.edits() == []  # lesson 99 does not exist


def test_a_problem_never_reads_lessons_written_from_it(tmp_path):
    eps = _mixed()  # index 1
    book, r = _reflect(tmp_path, ["ADD: a good habit"])
    r.step(0, eps, _decode_map(eps))
    ctx = book_context(book)
    assert ctx("train", 1) == ""
    assert ctx("train", 2) == ctx("test", 1) == lesson_block(["a good habit"]) == \
        "Lesson: a good habit\n"


def test_dedup_turns_a_paraphrase_into_a_merge(tmp_path):
    eps = _mixed()
    book = LessonBook(tmp_path / "b.db", token_budget=500, count_tokens=len)
    s = LessonsConfig(style="chat", revalidate_every=0, gate_margin=-1.0)  # gate accepts all
    r = Reflection(book, FakeBackend([
        "ADD: Always carry the one when a column sums past nine.",
        "ADD: When digits add to more than 9, carry 1 to the next column.",
        "ADD: Count every occurrence of the letter, including repeats."]), _score_by_words, s)
    for it in range(3):
        r.step(it, eps, _decode_map(eps))
    ops = [x.edit.op for x in book.edits()]
    assert ops == ["add", "merge", "add"]
    assert len(book.active()) == 2


def test_revalidation_takes_worth_from_a_lesson_the_book_does_not_need(tmp_path):
    eps = _mixed()
    book = LessonBook(tmp_path / "b.db", token_budget=500, count_tokens=len)
    s = LessonsConfig(style="chat", dedup=False, revalidate_every=1, decay=0.0)
    r = Reflection(book, FakeBackend(["ADD: a good habit", "ADD: a habit", "NONE", "NONE", "NONE"]),
                   _score_by_words, s)
    r.step(0, eps, _decode_map(eps))
    assert book.active()[0].worth == pytest.approx(1.2)  # needed: +0.2
    r.score = lambda ctx: (0.5, 10)  # the world changed: the lesson no longer helps
    for it in (1, 2, 3, 4):
        r.step(it, eps, _decode_map(eps))
    assert book.active() == []  # 1.2 - 4 * 0.3 < 0.2: retired
    assert book.lessons(("retired",))[0].text == "a good habit"


def test_records_are_json(tmp_path):
    eps = _mixed()
    book, r = _reflect(tmp_path, ["ADD: a good habit"])
    r.step(0, eps, _decode_map(eps))
    json.dumps(book.reviews()[0].messages)


def test_training_with_an_http_reviewer_never_writes_the_api_key(tmp_path, monkeypatch, tiny_dir):
    """A short run whose reviewer is `clicker serve` on loopback, with an API key in the
    environment: the run works (reviews recorded, gate rollouts counted as world tokens), and
    the key appears in no file of the run directory."""
    import secrets
    import threading

    from clicker.core.config import build_config
    from clicker.models.policy import Policy
    from clicker.serve import build_server
    from clicker.train.loop import train
    from clicker.train.metrics import read_metrics

    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("CLICKER_TEST_REVIEWER_KEY", key)
    srv = build_server(Policy.load(None, device="cpu", dtype="float32"), model_name="reviewer",
                       quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = build_config({
            "model": {"device": "cpu", "dtype": "float32"},
            "task": {"name": "letters"},
            "rollout": {"prompts": 4, "group_size": 4},
            "credit": {"sources": {"grpo": 1.0, "distill": 1.0}},
            "lessons": {"enabled": True, "reviewer": "http", "base_url": f"{srv.url}/v1",
                        "model": "reviewer", "api_key_env": "CLICKER_TEST_REVIEWER_KEY",
                        "gate_problems": 8, "reply_tokens": 16, "timeout_s": 20},
            "train": {"iterations": 2, "eval_every": 2, "eval_problems": 8, "progress": False},
        })
        run = tmp_path / "run"
        train(cfg, run)
    finally:
        srv.shutdown()
        srv.server_close()
    rows = read_metrics(run)
    trained = [r for r in rows if r["iteration"] >= 0]
    assert len(trained) == 2 and all("loss/distill" in r for r in trained)
    book = LessonBook(run / "lessons.db", create=False)
    assert book.check() == [] and len(book.reviews()) >= 1
    assert book.reviews()[0].backend["api_key_env"] == "CLICKER_TEST_REVIEWER_KEY"
    gate = sum(r.get("lessons/world_tokens", 0) for r in trained)
    assert trained[-1]["world/tokens"] >= gate
    files = [p for p in run.rglob("*") if p.is_file()]
    assert len(files) > 5
    for p in files:
        assert key.encode() not in p.read_bytes(), p
