"""Letters: count a letter in a word, `"Q: How many r in strawberry?\\nA: "` -> `"3\\n"`.

Why: the classic tokenizer-blind probe, and for a character-level policy a small counting task
whose answer is always 0..3. Words come from a hard-coded list of common English words (no
download); the letter is chosen so the count spreads over 0..3 (`COUNT_WEIGHTS`). Problems are a
pure function of (seed, split, index); train and test are disjoint by `split_of` on
(word, letter). Verification and warm-up conventions follow `addition`.
"""

from __future__ import annotations

import random
import string

from clicker.core.types import Verdict
from clicker.tasks.addition import MAX_ATTEMPTS, P_CORRECT_WARMUP, check_integer
from clicker.tasks.base import Problem, Split, split_of

COUNT_WEIGHTS: dict[int, float] = {0: 0.2, 1: 0.35, 2: 0.3, 3: 0.15}

_WORD_TEXT = """
    about above across after again against almost along already also always among animal
    another answer apple around arrive baby back balloon banana basket battle beach because
    become before begin behind believe belong better between bicycle bird black blanket blood
    blossom board body book bottle bottom bread break bridge bright bring brother brown bubble
    build business butter butterfly cabbage camera candle carrot castle cattle cause center
    chair change cheese cherry chicken child children church circle city class clean clock
    close cloud coffee color committee common corner cotton country course cover cream cricket
    daddy dance danger daughter deep degree desert dessert difference dinner direction doctor
    dollar door double dream dress drink during early earth east eight eleven elephant engine
    engineer enough evening every example excellent family father feather fellow field finger
    finish flower follow football forest forget forward freedom friend garden giggle glass
    grass green ground group guess hammer happen happy heavy hello hidden history holiday
    horse hospital house hundred hunger idea important inside island jacket jelly jungle kettle
    kitchen kitten ladder language laugh leather letter level little lemon library listen
    lollipop machine market matter meeting member middle minute mirror misses money monkey
    morning mother mountain music narrow nature nineteen noodle number office orange paddle
    paper parallel parrot party pattern pencil people pepper picture pineapple planet pocket
    popcorn possible potato pretty problem puppet puppy purple question rabbit rather reason
    referee remember ribbon river rocket rubber saddle school season second seventeen sentence
    settle shadow shallow silver simple sister slipper small speech spinner spring square
    squirrel stamp station statistics stone story strawberry street strong success summer
    sunny supper sweet table tattoo teacher teeth temper tennis thirteen thousand through
    ticket tiger toffee together tomato tomorrow tonight total traffic travel treasure tree
    trouble turtle umbrella under until valley village violin visitor voice wagon water
    weather wheel whisper window winter wonder woman wooden yellow yesterday young zebra
    zipper
    alpaca attempt barrier beetle bookkeeper bubbly cannon caravan carrier cassava cinnamon
    error fluff freezer horror intention keepsake mammal mammoth muddled mummy nanny needle
    pajama papaya pennant poppy savanna settee sleeve tattle teeter terror
    """
WORDS: tuple[str, ...] = tuple(_WORD_TEXT.split())


class Letters:
    """How many times does a letter occur in a word? Completion: the count and a newline."""

    name = "letters"
    stop: tuple[str, ...] = ("\n",)
    max_new_tokens = 4

    def __init__(self, seed: int = 0, min_len: int = 4, max_len: int = 10):
        words = sorted({w for w in WORDS if min_len <= len(w) <= max_len})
        if not words:
            raise ValueError(f"no words with {min_len} <= length <= {max_len}")
        self.seed, self.min_len, self.max_len = seed, min_len, max_len
        self.words = tuple(words)
        by_count: dict[int, list[tuple[str, str]]] = {c: [] for c in COUNT_WEIGHTS}
        for w in self.words:
            for letter in string.ascii_lowercase:
                c = w.count(letter)
                if c in by_count:
                    by_count[c].append((w, letter))
        self._by_count = {c: pairs for c, pairs in by_count.items() if pairs}
        self._counts = sorted(self._by_count)
        self._weights = [COUNT_WEIGHTS[c] for c in self._counts]

    @staticmethod
    def key(word: str, letter: str) -> str:
        return f"letters:{word}:{letter}"

    def pair(self, split: Split, index: int) -> tuple[str, str]:
        """The (word, letter) of problem `index` of `split`."""
        for attempt in range(MAX_ATTEMPTS):
            rng = random.Random(
                f"letters/{self.min_len}/{self.max_len}/{self.seed}/{split}/{index}/{attempt}"
            )
            count = rng.choices(self._counts, weights=self._weights)[0]
            word, letter = rng.choice(self._by_count[count])
            if split_of(self.key(word, letter)) == split:
                return word, letter
        raise RuntimeError(f"no {split} letters problem found")

    def problem(self, split: Split, index: int) -> Problem:
        word, letter = self.pair(split, index)
        return Problem(
            prompt=f"Q: How many {letter} in {word}?\nA: ",
            reference=str(word.count(letter)),
            id=f"letters/{split}/{index}",
            meta={"word": word, "letter": letter},
        )

    def verify(self, problem: Problem, completion: str) -> Verdict:
        return check_integer(problem.reference, completion)

    def warmup_text(self, index: int, rng: random.Random) -> str:
        p = self.problem("train", index)
        correct = int(p.reference)
        if rng.random() < P_CORRECT_WARMUP:
            answer = correct
        else:
            answer = rng.choice([c for c in range(max(5, correct + 2)) if c != correct])
        return f"{p.prompt}{answer}\n"
