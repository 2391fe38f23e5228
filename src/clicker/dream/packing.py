"""Row packing for the world model's batched forwards: histories that share a prefix share
one pass (`prefix_groups`, and `reply_nll`, the packed loss of replies), and requests that
share a state share one prefill (`group_rows`, dreaming)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache


def prefix_groups(histories: Sequence[tuple[int, ...]], rows: int
                   ) -> list[list[tuple[tuple[int, ...], list[int]]]]:
    """Forward chunks of at most `rows` histories: each chunk is a list of (root, indices) where
    every indexed history is a prefix of root, the longest of them (greedy, longest first)."""
    order = sorted(range(len(histories)), key=lambda i: -len(histories[i]))
    groups: list[tuple[tuple[int, ...], list[int]]] = []
    for i in order:
        h = histories[i]
        for root, members in groups:
            if len(members) < rows and root[len(h) - 1] == h[-1] and root[:len(h)] == h:
                members.append(i)
                break
        else:
            groups.append((h, [i]))
    chunks: list[list[tuple[tuple[int, ...], list[int]]]] = [[]]
    n = 0
    for g in groups:
        if chunks[-1] and n + len(g[1]) > rows:
            chunks.append([])
            n = 0
        chunks[-1].append(g)
        n += len(g[1])
    return chunks


def group_rows(keys: Sequence[Any]) -> tuple[list[Any], list[int], int]:
    """Distinct keys in first-seen order, each item's row when every distinct key gets n rows
    (its items in order, the rest unused), and n (the largest group)."""
    groups: dict[Any, list[int]] = {}
    for j, k in enumerate(keys):
        groups.setdefault(k, []).append(j)
    n = max(len(g) for g in groups.values())
    row = [0] * len(keys)
    for g, members in enumerate(groups.values()):
        for m, j in enumerate(members):
            row[j] = g * n + m
    return list(groups), row, n


def reply_nll(model: Any, groups: list[tuple[list[int], list[tuple[int, list[int], float]]]], *,
              pad_id: int, per_token: bool = False, cache_kw: str = "past_key_values",
              one_logit: dict | None = None) -> torch.Tensor:
    """Summed NLL of replies given histories that are prefixes of a shared root, each
    reply's tokens times its weight.

    groups: (root token ids, [(n, reply ids, weight)]) where each history is root[:n]. Each root
    runs through the model once (its KV cache kept with gradients, as in
    `clicker.models.shared_prefix`); then every reply row reads the cache of its root up to
    n - 1 and runs its history's last token and its reply but the last token (positions
    n - 1 onwards), so its logits predict the reply. An episode's transitions cost one pass
    over its transcript plus their replies instead of one pass per history: the same loss
    and gradient as scoring each history + reply on its own. `per_token`: the weighted NLL
    of each reply token instead (rows in the order of groups and items; padding 0).
    """
    dev, pad = next(model.parameters()).device, pad_id
    P = max(len(root) for root, _ in groups)
    ids = torch.tensor([r + [pad] * (P - len(r)) for r, _ in groups], device=dev)
    mask = torch.tensor([[1] * len(r) + [0] * (P - len(r)) for r, _ in groups], device=dev)
    shared = DynamicCache(config=model.config)
    model(input_ids=ids, attention_mask=mask, use_cache=True, **{cache_kw: shared},
          **(one_logit or {}))
    rows = [(g, n, reply) for g, (_, items) in enumerate(groups) for n, reply, _ in items]
    weight = torch.tensor([w for _, items in groups for _, _, w in items], device=dev)
    R = max(len(reply) for _, _, reply in rows)
    inp = torch.tensor([[groups[g][0][n - 1]] + reply[:-1] + [pad] * (R - len(reply))
                        for g, n, reply in rows], device=dev)
    target = torch.tensor([reply + [pad] * (R - len(reply)) for _, _, reply in rows],
                          device=dev)
    on = torch.tensor([[1] * len(reply) + [0] * (R - len(reply)) for _, _, reply in rows],
                      device=dev)
    seen = torch.tensor([[1] * (n - 1) + [0] * (P - n + 1) for _, n, _ in rows], device=dev)
    pos = torch.tensor([n - 1 for _, n, _ in rows], device=dev)[:, None] + torch.arange(
        R, device=dev)
    which = torch.tensor([g for g, _, _ in rows], device=dev)
    cache = DynamicCache(config=model.config)
    for i, layer in enumerate(shared.layers):  # each row's root, repeated (differentiably)
        cache.update(layer.keys[which], layer.values[which], i)
    logits = model(input_ids=inp, attention_mask=torch.cat([seen, on], 1), position_ids=pos,
                   use_cache=True, **{cache_kw: cache}).logits
    nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), target,
                                            reduction="none")
    nll = nll * on * weight[:, None]
    return nll if per_token else nll.sum()
