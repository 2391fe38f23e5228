"""Which weights a run started from: a short fingerprint of a model directory's weight files.

Two builds of the built-in tiny model from the same seed and recipe are bitwise equal in one
environment, but not across environments: the tenth round of issue 7 found a rebuilt cache
(new `.venv`) starting keydoor_long at held-out success 0.14 where the old one started at
0.22. Runs record the fingerprint of their initial weights (`summary.json`,
`model_fingerprint`) and `clicker compare` warns when one table mixes several, so rows from
different builds are not read as one experiment.

Which libraries made a build is recorded next to it (`environment`: the tiny model's
`built_with`, each run's summary, each compare task's `environments`). The thirteenth round found
a fresh `.venv` (transformers 5.25.0) building different weights from the same seed again, so the
Makefile installs with `constraints.txt`: the exact versions of that round's runs.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib import metadata
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


LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy")


def _cpu() -> str:
    info = Path("/proc/cpuinfo")  # Linux; elsewhere platform's answer
    lines = info.read_text().splitlines() if info.is_file() else []
    names = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def environment() -> dict[str, str]:
    """What can change a build or a run's numbers besides the code: Python, the machine's
    architecture and CPU model, the versions of the numeric libraries ("absent" when one is
    not installed), and the threads torch's CPU kernels use now (they split sums by thread
    count: the tiny model built on 1 and on 2 threads differed, and a training run's losses
    differ in their last digits)."""
    import torch

    env = {"python": sys.version.split()[0], "machine": platform.machine(), "cpu": _cpu()}
    for lib in LIBRARIES:
        try:
            env[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            env[lib] = "absent"
    env["torch_threads"] = str(torch.get_num_threads())
    return env


def environments_of(summaries: dict[str, dict]) -> dict[str, dict]:
    """{fingerprint: environment} over runs' summaries: the libraries each set of weights was
    run with (the first run's; runs from before environments were recorded give none)."""
    out: dict[str, dict] = {}
    for s in summaries.values():
        fp = s.get("model_fingerprint") or "unrecorded"
        if fp not in out or not out[fp]:
            out[fp] = s.get("environment") or {}
    return out


def mixed_fingerprints(summaries: dict[str, dict]) -> dict[str, list[str]]:
    """{fingerprint: run names} over runs' summaries when they started from more than one set
    of weights (runs from before fingerprints were recorded count as 'unrecorded'); empty when
    they all agree."""
    seen: dict[str, list[str]] = {}
    for name, s in summaries.items():
        seen.setdefault(s.get("model_fingerprint") or "unrecorded", []).append(name)
    return seen if len(seen) > 1 else {}
