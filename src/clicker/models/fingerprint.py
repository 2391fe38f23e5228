"""Which weights a run started from: a short fingerprint of a model directory's weight files.

Two builds of the built-in tiny model from the same seed and recipe are bitwise equal in one
environment, but not across environments: the tenth round of issue 7 found a rebuilt cache
(new `.venv`) starting keydoor_long at held-out success 0.14 where the old one started at
0.22. Runs record the fingerprint of their initial weights (`summary.json`,
`model_fingerprint`) and `clicker compare` warns when one table mixes several, so rows from
different builds are not read as one experiment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WHOLE_BELOW = 256 * 2**20  # hash weight files this small whole; larger ones by size and ends
END_BYTES = 2**20


def weights_fingerprint(model_dir: str | Path | None) -> str | None:
    """12 hex digits of a sha256 over the directory's weight files (`*.safetensors`, else
    `*.bin`), in name order: their whole content when they total under 256 MiB (the tiny
    model: exact), else each file's name, size and first and last MiB (a cheap identity for
    multi-GB checkpoints). None when the directory holds no weight files."""
    if model_dir is None:
        return None
    d = Path(model_dir)
    files = sorted(d.glob("*.safetensors")) or sorted(d.glob("*.bin"))
    if not files:
        return None
    whole = sum(f.stat().st_size for f in files) < WHOLE_BELOW
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}:".encode())
        with open(f, "rb") as fh:
            if whole:
                for block in iter(lambda: fh.read(2**20), b""):
                    h.update(block)
            else:
                h.update(fh.read(END_BYTES))
                fh.seek(max(0, size - END_BYTES))
                h.update(fh.read(END_BYTES))
    return h.hexdigest()[:12]


def mixed_fingerprints(summaries: dict[str, dict]) -> dict[str, list[str]]:
    """{fingerprint: run names} over runs' summaries when they started from more than one set
    of weights (runs from before fingerprints were recorded count as 'unrecorded'); empty when
    they all agree."""
    seen: dict[str, list[str]] = {}
    for name, s in summaries.items():
        seen.setdefault(s.get("model_fingerprint") or "unrecorded", []).append(name)
    return seen if len(seen) > 1 else {}
