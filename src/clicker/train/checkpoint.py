"""Atomic checkpoints in Hugging Face format, plus the trainer state needed to resume.

A checkpoint is a directory `checkpoints/iter-NNNNNN` holding the model and tokenizer
(`save_pretrained`, safetensors) and `trainer_state.pt` (optimizer, RNG states, iteration, world
tokens, credit-model weights). It is written under a temporary name, flushed, then renamed, and
`checkpoints/latest` (a one-line file, also replaced atomically) names the newest. A run killed
at any moment leaves either the old or the new checkpoint whole.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from clicker.models.policy import Policy


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state(generator: torch.Generator) -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "sampler": generator.get_state(),
    }


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["sampler"])


def save_checkpoint(run_dir: Path, iteration: int, policy: Policy, state: dict, keep: int = 2,
                    weights: dict | None = None):
    """Write checkpoints/iter-<iteration> atomically and point `latest` at it (`weights`: the
    policy's state dict, when the module does not hold it whole)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"iter-{iteration:06d}"
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    policy.save(tmp, state_dict=weights)
    torch.save(state, tmp / "trainer_state.pt")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    write_atomic(root / "latest", name + "\n")
    olds = sorted(p for p in root.glob("iter-*") if p.is_dir() and p.name != name)
    for p in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    return path if (path / "trainer_state.pt").is_file() else None


def load_trainer_state(ckpt: Path) -> dict:
    return torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=False)
