"""Episode gallery: sample episodes with the credit each source gave each token.

Why: a table of tokens-to-target says whether dense credit helped, not where it clicked. The
gallery keeps a few episodes of a batch with, per token, its decoded text, whether the policy
produced it, and every credit channel's value there (the combined advantage, each source's
advantage and the parts sources publish, e.g. `value/click`, the adjudicators and their
differential). `clicker compare` puts them in report.html, one coloured line per channel.

The training loop writes the gallery of its last iteration to `gallery.json` in the run dir.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from clicker.core.types import Episode
from clicker.credit.base import CreditOutput
from clicker.train.checkpoint import write_atomic

GALLERY_FILE = "gallery.json"


def pick_episodes(episodes: list[Episode], k: int) -> list[int]:
    """Up to k episode indices, alternating success and failure where the batch has both (so any
    prefix of the list is balanced), from groups with mixed outcomes first (there the credit has
    something to tell apart)."""
    by_group: dict[int, list[int]] = {}
    for i, e in enumerate(episodes):
        by_group.setdefault(e.group, []).append(i)
    mixed = {g for g, idx in by_group.items() if len({episodes[i].success for i in idx}) > 1}
    order = sorted(range(len(episodes)), key=lambda i: (episodes[i].group not in mixed, i))
    wins = [i for i in order if episodes[i].success]
    losses = [i for i in order if not episodes[i].success]
    picked = [i for pair in zip(wins, losses) for i in pair][:k]
    rest = [i for i in order if i not in picked]
    return picked + rest[: k - len(picked)]


def gallery_records(
    episodes: list[Episode], credit: CreditOutput, tokenizer: Any, iteration: int, k: int = 4,
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """JSON-ready records of up to k episodes of a batch (row b of the credit = episode b).
    Credit is 0 on tokens that are not actions; values are rounded to 5 digits."""
    channels = {"advantage": credit.advantages.detach().float().cpu()}
    channels |= {name: t.detach().float().cpu() for name, t in sorted(credit.parts.items())}
    out = []
    for b in pick_episodes(episodes, k):
        e = episodes[b]
        n = len(e.tokens)
        action = torch.tensor(e.action_mask, dtype=torch.bool)
        credit_rows = {}
        for name, t in channels.items():
            row = t[b, :n] * action
            credit_rows[name] = [round(float(v), 5) for v in row]
        out.append({
            "seed": seed, "iteration": iteration, "reward": e.reward, "success": e.success,
            "group": e.group,
            "pieces": [tokenizer.decode([t], skip_special_tokens=False) for t in e.tokens],
            "action": list(e.action_mask), "credit": credit_rows,
        })
    return out


def write_gallery(run_dir: Path, records: list[dict[str, Any]]) -> None:
    write_atomic(Path(run_dir) / GALLERY_FILE, json.dumps({"episodes": records}))


def read_gallery(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / GALLERY_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text()).get("episodes", [])
