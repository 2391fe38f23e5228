"""Multi-turn sampling that keeps each row's KV cache between turns (`Sampler.session()`).

See `Session`. Shares the sampler's cache layers, token choice and argument checks.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import torch
from transformers import DynamicCache

from clicker.rollout.sampler import (
    _GROW_SLOTS,
    _STOP_WINDOW_SLACK,
    Sampler,
    Samples,
    _attention_kernels,
    _check_args,
    _new_cache,
    _pick,
)


class Session:
    """Samples several turns of the same rows, keeping each row's KV cache between turns.

    A multi-turn episode's context grows by an action and an observation each turn. Sampling each
    turn with `Sampler.sample` prefills the whole context again, so an episode of n turns costs
    O(n^2) prefill tokens (on 20-turn keydoor about 100x its decode tokens). A session prefills
    only what is new: the first call prefills the prompts (shared over their samples, as
    `Sampler.sample` does); every later call gets each continuing row's full context, finds how
    much of it the row's cache already holds (the longest common prefix with what was fed), and
    feeds the rest. Tokens the caller dropped (an action cut to a budget, or past a stop string)
    are masked out of the cache, not copied away.

    The cache therefore has holes (masked slots: padding, dropped tokens, steps a stopped row sat
    out). Every token gets its position in its own context as position id, and attention masks
    the holes, so a row computes what a fresh prefill of its context would (up to float rounding
    of different kernel shapes). Rows that stopped stay in the batch until the next call (their
    cache is needed then); rows left out of a call are dropped for good.

    Not for models with sliding-window or other non-full-attention cache layers: holes would count
    toward their window.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler
        self.cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (rows, capacity) 1 where a slot is valid
        self._slots = 0  # slots used (the cache's sequence length)
        self._ids: list[int] = []  # external row id of each batch row
        self._fed: list[list[int]] = []  # tokens whose keys are valid in the cache, in order
        self._slot_of: list[list[int]] = []  # the slot of each fed token

    @property
    def rows(self) -> list[int]:
        """The row ids the session still holds."""
        return list(self._ids)

    def _grow_mask(self, need: int) -> None:
        assert self._mask is not None
        if need > self._mask.shape[1]:
            new = self._mask.new_zeros(self._mask.shape[0], max(need + _GROW_SLOTS, 2 * need))
            new[:, : self._slots] = self._mask[:, : self._slots]
            self._mask = new

    def _keep(self, rows: list[int]) -> None:
        """Drop every batch row whose id is not in `rows` (which must be increasing)."""
        if rows == self._ids:
            return
        where = {r: i for i, r in enumerate(self._ids)}
        missing = [r for r in rows if r not in where]
        if missing:
            raise ValueError(f"rows {missing[:5]} are not in the session (dropped or never made)")
        keep = [where[r] for r in rows]
        if any(b <= a for a, b in itertools.pairwise(keep)):
            raise ValueError("rows must be given in increasing order")
        assert self.cache is not None and self._mask is not None
        keep_t = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        self.cache.batch_select_indices(keep_t)
        self._mask = self._mask.index_select(0, keep_t)
        self._ids = list(rows)
        self._fed = [self._fed[i] for i in keep]
        self._slot_of = [self._slot_of[i] for i in keep]

    @torch.no_grad()
    def feed(self, contexts: dict[int, list[int]]) -> None:
        """Extend the listed rows' caches to their full current contexts (row id -> context)
        without sampling; rows not listed are kept as they are (unlike `sample`)."""
        if self.cache is None or self._mask is None:
            raise ValueError("feed needs a session that has made its rows (call sample first)")
        missing = [r for r in contexts if r not in self._ids]
        if missing:
            raise ValueError(f"rows {missing[:5]} are not in the session (dropped or never made)")
        # an unlisted row gets its own fed tokens: only its last token is fed again (its old
        # slot masked), which leaves its cache as it was
        ctxs = [list(contexts.get(r, self._fed[i])) for i, r in enumerate(self._ids)]
        with _attention_kernels(self._mask.device):
            self._extend(ctxs, self._mask.device)

    def fork(self, rows: list[int], n: int = 1) -> Session:
        """A new session whose rows are copies of `rows`, each `n` times (ids 0.., row-major):
        candidates branching from shared states without prefilling them again. This session
        is left as it was."""
        if self.cache is None or self._mask is None:
            raise ValueError("fork needs a session that has made its rows (call sample first)")
        where = {r: i for i, r in enumerate(self._ids)}
        missing = [r for r in rows if r not in where]
        if missing or n < 1:
            raise ValueError(f"cannot fork rows {missing[:5]} x {n}")
        idx = [where[r] for r in rows]
        t = torch.tensor(idx, dtype=torch.long, device=self._mask.device)
        out = Session(self.sampler)
        out.cache = copy.deepcopy(self.cache)
        out.cache.batch_select_indices(t)
        if n > 1:
            out.cache.batch_repeat_interleave(n)
        out._mask = self._mask.index_select(0, t).repeat_interleave(n, dim=0)
        out._slots = self._slots
        out._ids = list(range(len(rows) * n))
        out._fed = [list(self._fed[i]) for i in idx for _ in range(n)]
        out._slot_of = [list(self._slot_of[i]) for i in idx for _ in range(n)]
        return out

    @torch.no_grad()
    def sample(
        self,
        contexts: list[list[int]],
        *,
        rows: list[int] | None = None,
        num_samples: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        generator: torch.Generator | None = None,
    ) -> Samples:
        """First call: like `Sampler.sample(contexts, num_samples=...)`; the rows get ids
        0..len(contexts)*num_samples-1, prompt-major. Later calls: `contexts[i]` is the full
        current context of row `rows[i]` (increasing ids; rows not listed are dropped) and one
        completion is sampled for each; num_samples must be 1."""
        stop = _check_args(contexts, num_samples, max_new_tokens, temperature, top_p, stop)
        s = self.sampler
        device = next(s.model.parameters()).device
        with _attention_kernels(device):
            if self.cache is None:
                if rows is not None:
                    raise ValueError("the first call of a session makes its rows; pass rows=None")
                logits = self._prefill(contexts, num_samples, device)
            else:
                if rows is None or len(rows) != len(contexts):
                    raise ValueError("later calls need one row id per context")
                if num_samples != 1:
                    raise ValueError("later calls sample one completion per row")
                self._keep(list(rows))
                logits = self._extend(contexts, device)
            return self._decode(logits, max_new_tokens, temperature, top_p, stop, generator)

    def _prefill(self, prompts: list[list[int]], n: int, device: torch.device) -> torch.Tensor:
        s = self.sampler
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[s.pad_id] * (width - len(p)) + list(p) for p in prompts],
                           dtype=torch.long, device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts],
                            dtype=torch.long, device=device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = _new_cache(s.model.config, 1 << 30)
        padded = any(len(p) < width for p in prompts)
        logits = s._forward(ids, mask if padded else None, pos, self.cache)
        if n > 1:
            self.cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, dim=0)
            mask = mask.repeat_interleave(n, dim=0)
        self._mask = mask
        self._slots = width
        self._ids = list(range(len(prompts) * n))
        self._fed = [list(p) for p in prompts for _ in range(n)]
        self._slot_of = [list(range(width - len(p), width)) for p in prompts for _ in range(n)]
        return logits

    def _extend(self, contexts: list[list[int]], device: torch.device) -> torch.Tensor:
        """Feed each row the part of its context its cache lacks; the last position's logits."""
        assert self._mask is not None and self.cache is not None
        chunks = []
        starts = []
        for i, ctx in enumerate(contexts):
            fed = self._fed[i]
            p, n = 0, min(len(fed), len(ctx) - 1)  # always feed at least the last token
            while p < n and fed[p] == ctx[p]:
                p += 1
            if p < len(fed):  # the caller dropped or changed tokens: mask their slots out
                self._mask[i, self._slot_of[i][p:]] = 0
                del fed[p:], self._slot_of[i][p:]
            chunks.append(ctx[p:])
            starts.append(p)
        width = max(len(c) for c in chunks)
        base = self._slots
        self._grow_mask(base + width)
        ids = torch.full((len(chunks), width), self.sampler.pad_id, dtype=torch.long)
        pos = torch.zeros((len(chunks), width), dtype=torch.long)
        new_mask = torch.zeros((len(chunks), width), dtype=torch.long)
        for i, (chunk, p) in enumerate(zip(chunks, starts)):
            off = width - len(chunk)
            ids[i, off:] = torch.tensor(chunk)
            pos[i, off:] = torch.arange(p, p + len(chunk))
            new_mask[i, off:] = 1
            self._fed[i].extend(chunk)
            self._slot_of[i].extend(range(base + off, base + width))
        self._mask[:, base : base + width] = new_mask.to(device)
        self._slots = base + width
        return self.sampler._forward(
            ids.to(device), self._mask[:, : self._slots], pos.to(device), self.cache
        )

    def _decode(
        self,
        logits: torch.Tensor,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: tuple[str, ...],
        generator: torch.Generator | None,
    ) -> Samples:
        """Sample one completion per batch row; live rows' tokens are fed to the cache as they
        come (all but the last), stopped rows sit out with their slots masked."""
        assert self._mask is not None and self.cache is not None
        s = self.sampler
        device = logits.device
        n_rows = len(self._ids)
        out_tokens: list[list[int]] = [[] for _ in range(n_rows)]
        out_logprobs: list[list[float]] = [[] for _ in range(n_rows)]
        finished = [False] * n_rows
        live = list(range(n_rows))
        window = max((len(x) for x in stop), default=0) + _STOP_WINDOW_SLACK
        tok, lp = _pick(logits, temperature, top_p, generator)
        for step in range(max_new_tokens):
            toks, lps = tok.tolist(), lp.tolist()
            for i in live:
                out_tokens[i].append(toks[i])
                out_logprobs[i].append(lps[i])
            ended = set(s._ended(live, toks, out_tokens, stop, window))
            for i in ended:
                finished[i] = True
            live = [i for i in live if i not in ended]
            if not live or step == max_new_tokens - 1:
                break
            slot = self._slots
            self._grow_mask(slot + 1)
            col = torch.zeros(n_rows, dtype=torch.long)
            pos = torch.zeros((n_rows, 1), dtype=torch.long)
            for i in live:
                col[i] = 1
                pos[i, 0] = len(self._fed[i])
                self._fed[i].append(toks[i])
                self._slot_of[i].append(slot)
            self._mask[:, slot] = col.to(device)
            self._slots = slot + 1
            logits = s._forward(
                tok.unsqueeze(-1), self._mask[:, : self._slots], pos.to(device), self.cache
            )
            tok, lp = _pick(logits, temperature, top_p, generator)
        return Samples(tokens=out_tokens, logprobs=out_logprobs, finished=finished)
