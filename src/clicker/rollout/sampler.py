"""Batched KV-cache sampling of G completions per prompt from a Hugging Face causal LM.

Why not `model.generate`: RL rollouts need the exact sampling log-prob of every token (the
trainer recomputes log_softmax(logits / T) and expects an importance ratio of 1 on-policy), and
they are dominated by per-step overhead on small models. This sampler prefills each distinct prompt
once, shares that KV cache across its G samples, decodes the whole batch with the cache and drops
rows from the batch (cache, mask, positions) as soon as they stop on EOS or a stop string, so
ragged completion lengths cost no compute. Prompts are left-padded with an attention mask and
explicit position ids, so padding does not change any row's result.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

# Extra tokens decoded beyond the longest stop string, so a stop string is still seen when some
# tokens decode to nothing on their own (byte-fallback pieces of a multi-byte character).
_STOP_WINDOW_SLACK = 4


@dataclass(frozen=True)
class Samples:
    """The sampled completions, one row per (prompt, sample), prompt-major.

    `tokens[r]` are the generated ids of row r including the EOS token or the tokens of the stop
    string that ended it; `logprobs[r][i]` is the log-prob `tokens[r][i]` was sampled with;
    `finished[r]` is True when the row stopped on EOS or a stop string, False when it ran into
    max_new_tokens.
    """

    tokens: list[list[int]]
    logprobs: list[list[float]]
    finished: list[bool]

    @property
    def num_tokens(self) -> int:
        """Total number of generated tokens over all rows."""
        return sum(len(t) for t in self.tokens)


def _pick(
    logits: torch.Tensor,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose one token per row of `logits` (B, V); return (token ids, their log-probs), both (B,).

    The log-prob is log_softmax(logits / T) in float32 before top-p truncation (T = 1 for greedy).
    """
    x = logits.float()
    if temperature > 0 and temperature != 1.0:
        x = x / temperature
    logp = torch.log_softmax(x, dim=-1)
    if temperature == 0:
        tok = logp.argmax(dim=-1)
    elif top_p < 1.0:
        probs, order = logp.exp().sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p: a token stays when the mass before it
        # is still below top_p (the most likely token always stays).
        probs = probs.masked_fill(probs.cumsum(dim=-1) - probs >= top_p, 0.0)
        choice = torch.multinomial(probs, 1, generator=generator)
        tok = order.gather(-1, choice).squeeze(-1)
    else:
        tok = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
    return tok, logp.gather(-1, tok.unsqueeze(-1)).squeeze(-1)


class Sampler:
    """Samples completions token-in-token-out from `model` with a shared-prefix KV cache.

    `eos_id` defaults to the tokenizer's EOS id together with the model's generation-config EOS
    ids; `pad_id` (only a filler, always masked) defaults to the tokenizer's pad id, else EOS, else
    0. The model is used in whatever train/eval mode the caller has put it in.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        eos_id: int | None = None,
        pad_id: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        if eos_id is not None:
            eos_ids = {int(eos_id)}
        else:
            eos_ids = set()
            for source in (
                getattr(tokenizer, "eos_token_id", None),
                getattr(getattr(model, "generation_config", None), "eos_token_id", None),
            ):
                if isinstance(source, int):
                    eos_ids.add(source)
                elif isinstance(source, (list, tuple)):
                    eos_ids.update(int(i) for i in source)
        self.eos_ids: frozenset[int] = frozenset(eos_ids)
        if pad_id is None:
            pad_id = getattr(tokenizer, "pad_token_id", None)
        if pad_id is None:
            pad_id = min(self.eos_ids) if self.eos_ids else 0
        self.pad_id = int(pad_id)
        params = inspect.signature(model.forward).parameters
        self._logits_kw: dict[str, int] = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        pos: torch.Tensor,
        cache: Any,
    ) -> torch.Tensor:
        """Run the model on `ids` (B, L) with the cache; return the last position's logits (B, V)."""
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            **self._logits_kw,
        )
        return out.logits[:, -1, :]

    @torch.no_grad()
    def sample(
        self,
        prompts: list[list[int]],
        *,
        num_samples: int = 1,
        max_new_tokens: int = 64,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        generator: torch.Generator | None = None,
    ) -> Samples:
        """Sample `num_samples` completions of each prompt (token ids); rows are prompt-major.

        temperature 0 is greedy decoding (log-probs then at temperature 1). All randomness is
        drawn from `generator` (it must live on the model's device), so a seed fixes the output.
        """
        if isinstance(stop, str):
            stop = (stop,)
        if not prompts:
            raise ValueError("prompts is empty")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt needs at least one token")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if any(not s for s in stop):
            raise ValueError("stop strings must be non-empty")

        device = self._device()
        # Distinct prompts are prefilled once; `src[r]` is the prefilled prompt behind row r.
        unique: dict[tuple[int, ...], int] = {}
        for p in prompts:
            unique.setdefault(tuple(p), len(unique))
        src = [unique[tuple(p)] for p in prompts for _ in range(num_samples)]
        n_rows = len(src)
        width = max(len(p) for p in unique)
        ids_rows = [[self.pad_id] * (width - len(p)) + list(p) for p in unique]
        mask_rows = [[0] * (width - len(p)) + [1] * len(p) for p in unique]
        ids = torch.tensor(ids_rows, dtype=torch.long, device=device)
        prompt_mask = torch.tensor(mask_rows, dtype=torch.long, device=device)
        padded = any(len(p) < width for p in unique)
        pos = (prompt_mask.cumsum(-1) - 1).clamp(min=0)

        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, prompt_mask if padded else None, pos, cache)
        src_t = torch.tensor(src, dtype=torch.long, device=device)
        if src != list(range(len(unique))):
            cache.batch_select_indices(src_t)  # repeat (and reorder) the prefix cache per row
            logits = logits.index_select(0, src_t)
        # Positions of the next token, and the attention mask over cache + every future token.
        pos = pos[:, -1:].index_select(0, src_t) + 1
        mask: torch.Tensor | None = None
        if padded:
            mask = torch.ones(n_rows, width + max_new_tokens, dtype=torch.long, device=device)
            mask[:, :width] = prompt_mask.index_select(0, src_t)

        out_tokens: list[list[int]] = [[] for _ in range(n_rows)]
        out_logprobs: list[list[float]] = [[] for _ in range(n_rows)]
        finished = [False] * n_rows
        rows = list(range(n_rows))  # output row of each active batch position
        eos = self.eos_ids
        window = max((len(s) for s in stop), default=0) + _STOP_WINDOW_SLACK
        decode = self.tokenizer.batch_decode

        tok, lp = _pick(logits, temperature, top_p, generator)
        for step in range(max_new_tokens):
            toks = tok.tolist()
            for r, t, v in zip(rows, toks, lp.tolist()):
                out_tokens[r].append(t)
                out_logprobs[r].append(v)
            done = [t in eos for t in toks]
            if stop:
                texts = decode(
                    [out_tokens[r][-window:] for r in rows],
                    skip_special_tokens=False,
                    clean_up_tokenization_spaces=False,
                )
                done = [d or any(s in text for s in stop) for d, text in zip(done, texts)]
            if any(done):
                keep = [i for i, d in enumerate(done) if not d]
                for i, d in enumerate(done):
                    if d:
                        finished[rows[i]] = True
                if not keep:
                    break
                if step == max_new_tokens - 1:
                    break
                keep_t = torch.tensor(keep, dtype=torch.long, device=device)
                cache.batch_select_indices(keep_t)
                tok = tok.index_select(0, keep_t)
                pos = pos.index_select(0, keep_t)
                if mask is not None:
                    mask = mask.index_select(0, keep_t)
                rows = [rows[i] for i in keep]
            elif step == max_new_tokens - 1:
                break
            step_mask = None if mask is None else mask[:, : width + step + 1]
            logits = self._forward(tok.unsqueeze(-1), step_mask, pos, cache)
            pos = pos + 1
            tok, lp = _pick(logits, temperature, top_p, generator)
        return Samples(tokens=out_tokens, logprobs=out_logprobs, finished=finished)
