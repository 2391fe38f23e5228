"""Reflection: review mixed groups, gate the reviewer's edits, keep the book small and honest.

Each iteration (`lessons.every`):
1. worth decays (extinction: a lesson must keep earning its place);
2. groups with mixed rewards go to the reviewer (`clicker.lessons.reviewer`); the call, its reply
   and the episodes shown are recorded in the book, whatever happens next;
3. each proposed edit passes the guards (a lesson that copies a long stretch of a shown episode
   is rejected; an add that is a near-duplicate of a lesson becomes a merge with it; an edit
   that would exceed the token budget is rejected), then the **gate**: held-out reward on a
   validation minibatch with the edited book must beat the current book's by `gate_margin`
   (GEPA's minibatch acceptance). The verdict, with both rewards, is stored with the edit;
4. every `revalidate_every` iterations the lowest-worth lesson is ablated on the same minibatch:
   if the book does as well without it, it loses worth (and is retired below the threshold),
   otherwise it gains.

The validation problems are train-split problems from an index range training never samples
(`VALIDATION_OFFSET`), scored greedily; the same problems score the book before and after an
edit, so the comparison is paired. Validation rollouts are real interactions with the task: their
tokens are world tokens, and the loop counts them.

A problem never reads lessons written from its own episodes (`render` excludes them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from clicker.core.config import LessonsConfig
from clicker.core.context import lesson_block
from clicker.core.types import Episode
from clicker.lessons.backends import ChatBackend
from clicker.lessons.dedup import Embedder
from clicker.lessons.guards import copies_training_text
from clicker.lessons.records import Edit, Lesson
from clicker.lessons.reviewer import Style, mixed_groups, parse_edits, review_messages
from clicker.lessons.store import BookError, LessonBook

VALIDATION_OFFSET = 2**40  # train-split indices at and above this are never training problems

Scorer = Callable[[Callable[[str, int], str] | None], tuple[float, int]]


SUCCESS = 0.5  # reward at or above which an attempt succeeded (as Episode.success)


def review_style(cfg: LessonsConfig) -> Style:
    """`auto`: the compact one-line review for the policy as reviewer, chat for real LLMs."""
    if cfg.style != "auto":
        return cfg.style
    return "compact" if cfg.reviewer == "policy" else "chat"


def book_context(book: LessonBook) -> Callable[[str, int], str]:
    """`context(split, index)` for the runner: the active lessons, minus any written from that
    very problem's episodes."""
    def context(split: str, index: int) -> str:
        return book.render(exclude_tasks=(f"{split}/{index}",))
    return context


def _after(active: Sequence[Lesson], edit: Edit) -> list[str]:
    """The active lesson texts as they would be with `edit` applied."""
    texts = {x.id: x.text for x in active}
    if edit.op == "update":
        texts[edit.target_ids[0]] = edit.text or ""
        return list(texts.values())
    for t in edit.target_ids:
        texts.pop(t, None)
    return [*texts.values(), *([edit.text] if edit.text else [])]


class Reflection:
    """Drives one book: `step(iteration, episodes, decode)` after each training iteration."""

    def __init__(self, book: LessonBook, backend: ChatBackend, score: Scorer,
                 cfg: LessonsConfig, embedder: Embedder | None = None):
        self.book, self.backend, self.score, self.s = book, backend, score, cfg
        self.style = review_style(cfg)
        self.embedder = embedder if embedder is not None else (Embedder() if cfg.dedup
                                                                 else None)

    def _score_texts(self, texts: Sequence[str]) -> tuple[float, int]:
        block = lesson_block(texts)
        return self.score((lambda split, index: block) if block else None)

    def step(self, iteration: int, episodes: Sequence[Episode], decode) -> dict[str, float]:
        s, book = self.s, self.book
        t0 = time.time()
        m = {"lessons/proposed": 0.0, "lessons/accepted": 0.0, "lessons/rejected": 0.0,
             "lessons/review_failed": 0.0, "lessons/world_tokens": 0.0}
        m["lessons/retired"] = float(len(book.decay(s.decay)))
        groups = mixed_groups(episodes, SUCCESS)[:s.max_groups]
        if groups:
            self._review(iteration, groups, decode, m)
        if s.revalidate_every and (iteration + 1) % s.revalidate_every == 0:
            self._revalidate(m)
        m["lessons/active"] = float(len(book.active()))
        m["lessons/tokens"] = float(book.tokens_used())
        m["time/lessons_s"] = time.time() - t0
        return m

    def _review(self, iteration: int, groups, decode, m: dict[str, float]) -> None:
        s, book = self.s, self.book
        active = book.active()
        messages, shown = review_messages(groups, active, self.style, decode,
                                          per_group=s.per_group, threshold=SUCCESS)
        reply = self.backend.chat(messages, max_tokens=s.reply_tokens, temperature=s.temperature)
        edits, why = parse_edits(reply.text or "", self.style, shown.task_keys) if reply.ok else (
            [], reply.reason)
        review_id = book.record_review(
            iteration=iteration, backend=self.backend.describe(), messages=messages,
            reply=reply.raw if not reply.ok else (reply.text or ""), ok=reply.ok and bool(edits),
            reason=why, episode_ids=[f"{e.meta.get('split')}/{e.meta.get('index')}/{e.group}"
                                     for e in shown.episodes], seconds=reply.seconds)
        if not edits:
            m["lessons/review_failed"] += 1
            return
        base, spent = self._score_texts([x.text for x in active])
        m["lessons/world_tokens"] += spent
        for edit in edits[:s.max_edits]:
            active = book.active()
            edit = self._dedup(edit, active)
            m["lessons/proposed"] += 1
            try:
                edit_id = book.propose(edit, iteration=iteration, review_id=review_id)
            except BookError:  # it names a lesson that does not exist: nothing to record
                m["lessons/rejected"] += 1
                continue
            problem = ""
            if edit.text and copies_training_text(edit.text, shown.texts):
                problem = "copies training text verbatim"
            elif not book.would_fit(edit):
                problem = "over budget"
            if problem:
                book.apply(edit_id, {"accepted": False, "reason": problem})
                m["lessons/rejected"] += 1
                continue
            after, spent = self._score_texts(_after(active, edit))
            m["lessons/world_tokens"] += spent
            gain = after - base
            accepted = gain >= s.gate_margin
            verdict = {"accepted": accepted, "before": base, "after": after,
                       "margin": s.gate_margin,
                       "reason": "" if accepted else f"gain {gain:+.3f} < margin {s.gate_margin}"}
            changed = book.apply(edit_id, verdict)
            if accepted and changed:
                base = after
                m["lessons/accepted"] += 1
            else:
                m["lessons/rejected"] += 1

    def _dedup(self, edit: Edit, active: Sequence[Lesson]) -> Edit:
        """An add that paraphrases an active lesson becomes a merge with it."""
        if edit.op != "add" or self.embedder is None or not active:
            return edit
        dups = self.embedder.near_duplicates(edit.text or "", active, self.s.dedup_threshold)
        if not dups:
            return edit
        return Edit("merge", edit.text, (dups[0][0],),
                    reason=f"near-duplicate of lesson {dups[0][0]} ({dups[0][1]:.2f})",
                    source_tasks=edit.source_tasks)

    def _revalidate(self, m: dict[str, float]) -> None:
        """Ablate the lowest-worth lesson: credit it by how much the book needs it."""
        active = self.book.active()
        if not active:
            return
        weakest = min(active, key=lambda x: x.worth)
        with_it, a = self._score_texts([x.text for x in active])
        without, b = self._score_texts([x.text for x in active if x.id != weakest.id])
        m["lessons/world_tokens"] += a + b
        need = with_it - without
        self.book.credit(weakest.id, 0.2 if need >= self.s.gate_margin else -0.3)
        m["lessons/revalidated_gain"] = need
