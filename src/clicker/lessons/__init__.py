"""Lessons (reflection): a reviewer turns groups of rollouts into written lessons that shape the
prompt; the lesson store, the reviewer, its gate and its LLM backends."""

from clicker.lessons.guards import copies_training_text
from clicker.lessons.records import Edit, EditRecord, Lesson, ReviewRecord
from clicker.lessons.store import BookError, LessonBook

__all__ = ["BookError", "Edit", "EditRecord", "Lesson", "LessonBook", "ReviewRecord",
           "copies_training_text"]
