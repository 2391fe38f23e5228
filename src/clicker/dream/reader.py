"""`Reader`: a world model's view of the policy's token ids when their tokenizers differ.

Episodes, transitions and dream requests carry the policy's token ids. A world model with
another tokenizer (`dream.wm_init: words`, or a checkpoint of another family) reads them as
text and encodes that with its own tokenizer; its buffer, checkpoints and KV sessions hold its
own ids. A request's shared state (`DreamRequest.shared`) is converted on its own, so requests
that shared a state in the policy's ids share one in the model's. Tokens the policy's tokenizer
calls special (an EOS inside an action) are dropped: the env never saw them as text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from clicker.dream.transcript import DreamRequest, Transition


class Reader:
    """`source` ids as `tokenizer`'s; the identity when `source` is None or has the same
    vocabulary and EOS token (then `source` is None here too)."""

    def __init__(self, source: Any, tokenizer: Any):
        same = source is None or (source.get_vocab() == tokenizer.get_vocab()
                                  and source.eos_token_id == tokenizer.eos_token_id)
        self.source = None if same else source
        self.tokenizer = tokenizer

    def ids(self, ids: Sequence[int]) -> list[int]:
        if self.source is None:
            return list(ids)
        text = self.source.decode(list(ids), skip_special_tokens=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def transitions(self, ts: Sequence[Transition], max_history: int | None = None
                    ) -> list[Transition]:
        """Transitions with their histories converted; with `max_history`, up to the first
        whose converted history is longer (one episode's histories grow)."""
        if self.source is None:
            return list(ts)
        out = []
        for t in ts:
            h = tuple(self.ids(t.history))
            if max_history is not None and len(h) > max_history:
                break
            out.append(Transition(h, t.reward, t.done, t.observation))
        return out

    def request(self, r: DreamRequest) -> DreamRequest:
        if self.source is None:
            return r
        return dataclasses.replace(r, history=self.ids(r.history),
                                   shared=len(self.ids(r.history[:r.shared])) if r.shared else 0)
