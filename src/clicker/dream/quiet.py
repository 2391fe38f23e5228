"""Reading a world model's sampled replies, and writing doubted events again as quiet replies
(`WorldModelConfig.event_threshold`).

A greedy reply claims a reward or an end whenever its header's deciding token is likelier than
the quiet one's. On keydoor_long a words world model that had learned every other rule still
invented a reward on 1-2% of rewardless held-out steps (docs/dreaming_rounds.md, "More data"),
and a 20-step dream then holds an invented event about a time in four: the replay check found
dreams going wrong first at ordinary moves. A threshold keeps an event reply only when the model
gave its whole header at least that probability; any other is written again after the quiet
header `[r=0]`. The real events it then misses are the price.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from clicker.dream.transcript import (
    FAILED,
    QUIET,
    Prediction,
    format_reply,
    header_prob,
    parse_reply,
)


def parse_samples(tokenizer: Any, samples: Any, threshold: float = 0.0
                  ) -> tuple[list[Prediction | None], list[tuple[int, float]]]:
    """Each sampled row's reply parsed (None: it did not end or does not parse, or it is
    doubted), with confidence its least probable token; and the doubted rows: (row, p) for each
    event reply (a reward or an end) whose header the model gave a probability p below
    `threshold` (0: none is doubted)."""
    preds: list[Prediction | None] = []
    doubted: list[tuple[int, float]] = []
    for k, (toks, lps, fin) in enumerate(zip(samples.tokens, samples.logprobs,
                                             samples.finished)):
        parsed = (parse_reply(tokenizer.decode(toks[:-1], skip_special_tokens=True))
                  if fin else None)
        if parsed is not None and threshold and (parsed[0] != 0 or parsed[1]):
            p = header_prob(tokenizer.decode, toks, lps, format_reply(parsed[0], parsed[1], ""))
            if p < threshold:
                doubted.append((k, p))
                parsed = None
        preds.append(None if parsed is None else Prediction(parsed[2], parsed[0], parsed[1],
                                                            math.exp(min(lps)), True))
    return preds, doubted


def quiet_replies(sampler: Any, tokenizer: Any, histories: list[list[int]], ps: list[float],
                  max_reply_tokens: int, temperature: float = 0.0,
                  generator: torch.Generator | None = None) -> list[Prediction]:
    """Replies to `histories` written after the quiet header (one batched generation of the
    rest, within the reply budget), as Predictions with reward 0, no end, and confidence the
    lesser of 1 - p (the doubted event's header probability) and the least probable new token;
    FAILED (from `clicker.dream.transcript`) where the text does not end within the budget."""
    head = tokenizer.encode(QUIET, add_special_tokens=False)
    samples = sampler.sample([list(h) + head for h in histories],
                             max_new_tokens=max(1, max_reply_tokens - len(head)),
                             temperature=temperature, generator=generator)
    out = []
    for p, toks, lps, fin in zip(ps, samples.tokens, samples.logprobs, samples.finished):
        parsed = parse_reply(QUIET + tokenizer.decode(toks[:-1], skip_special_tokens=True))
        out.append(FAILED if not fin or parsed is None else
                   Prediction(parsed[2], 0.0, False, min(1 - p, math.exp(min(lps))), True))
    return out
