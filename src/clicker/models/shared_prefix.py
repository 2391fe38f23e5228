"""One forward pass over a batch whose rows share prompts: each distinct prompt is run once.

A GRPO batch holds G episodes per prompt. The training forward of a causal LM over the whole
batch computes the prompt's hidden states G times, identically. Here the common leading tokens
(the first `prefix` positions, shared by every row of a group) go through the model once per
distinct prefix, their KV cache is repeated to the rows, and only the rest of each row is run
on top of it. Gradients flow through the shared prefix as through G copies of it (the repeat
is differentiable), so logits and gradients equal the plain forward's up to float rounding;
`tests/test_runner_update.py` checks both. Compute saved: (G - 1) / G of the prefix tokens.

The rows' remainders run in a few length buckets, each cut to its longest row: right padding
to the batch's longest completion otherwise costs as much as the completions themselves. On
2-digit addition (a 6-token prompt, 1-6 completion tokens, 16 groups of 8) a forward+backward
took 0.134 s plain, 0.090 s sharing the prompt, 0.075 s with 2 buckets, 0.078 with 4 and
0.097 with 8 (one thread; each pass has a fixed cost).
"""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import DynamicCache


def shared_prefix_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         prefix: int, buckets: int = 2, *,
                         next_token_only: bool = False) -> torch.Tensor:
    """(B, T, V) logits of `model` on right-padded `input_ids` (B, T), running each distinct
    row prefix `input_ids[:, :prefix]` once. The first `prefix` positions must be real tokens
    (attention_mask 1) in every row; prefix <= 0 or >= T, or rows that all differ, fall back to
    the plain forward. The rest of the rows runs in up to `buckets` passes of rows of similar
    length, each cut to its longest row, so little compute goes to padding. Logits at padded
    positions are 0. With `next_token_only`, the logits a caller needs to score the rows' own
    tokens (positions 0 .. length-2 of each row) are exact and the rest may be 0: each bucket's
    pass then stops one token short, since the logits after a bucket's longest row's last token
    predict nothing (on 2-digit addition, 3-token completions, that is a third of the pass)."""
    B, T = input_ids.shape
    if prefix <= 0 or prefix >= T:
        return model(input_ids=input_ids, attention_mask=attention_mask.long()).logits
    heads, inverse = torch.unique(input_ids[:, :prefix], dim=0, return_inverse=True)
    if len(heads) == B:  # nothing shared
        return model(input_ids=input_ids, attention_mask=attention_mask.long()).logits
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    shared = DynamicCache(config=model.config)
    head = model(input_ids=heads, use_cache=True, **{kw: shared}).logits  # (U, prefix, V)
    kv = [(layer.keys, layer.values) for layer in shared.layers]
    out = head.new_zeros(B, T, head.shape[-1])
    out[:, :prefix] = head[inverse]
    lengths = attention_mask.sum(1)
    for rows in torch.tensor_split(torch.argsort(lengths), buckets):
        end = int(lengths[rows].max()) if len(rows) else 0
        end -= int(next_token_only)
        if end <= prefix:
            continue
        cache = DynamicCache(config=model.config)
        for i, (k, v) in enumerate(kv):  # the rows' prompts, repeated (differentiably)
            cache.update(k[inverse[rows]], v[inverse[rows]], i)
        pos = torch.arange(prefix, end, device=input_ids.device).expand(len(rows), -1)
        out[rows, prefix:end] = model(
            input_ids=input_ids[rows, prefix:end], attention_mask=attention_mask[rows, :end].long(),
            position_ids=pos, use_cache=True, **{kw: cache}).logits
    return out
