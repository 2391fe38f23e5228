"""Row packing for the world model's batched forwards: histories that share a prefix share
one pass (`prefix_groups`, training) and requests that share a state share one prefill
(`group_rows`, dreaming)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


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
