"""Crash safety (issue 9): a training run SIGKILLed at random moments, resumed after each kill,
ends with every iteration's metrics exactly once and in order, and a lesson book that passes
SQLite's integrity check."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time

import pytest

CMD = [sys.executable, "-m", "clicker.cli", "train"]
SETS = ["task.name=addition", "rollout.prompts=2", "rollout.group_size=2",
        "train.iterations=50", "train.eval_every=5", "train.eval_problems=4",
        "train.checkpoint_every=1", "train.keep_checkpoints=1", "train.progress=false",
        "lessons.enabled=true", "lessons.reviewer=policy", "lessons.max_groups=1",
        "lessons.reply_tokens=16"]


def _start(run, fresh: bool) -> subprocess.Popen:
    args = ["--run-dir", str(run)] + [x for s in SETS for x in ("--set", s)] if fresh \
        else ["--resume", str(run)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(CMD + args, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _iterations(run) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["iteration"] for line in path.read_text().splitlines()
            if line.strip()]


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path, tiny_dir):
    rng = random.Random(0)
    run = tmp_path / "run"
    kills = 0
    deadline = time.monotonic() + 240  # bounded: the test ends even on a very slow machine
    while kills < 10 and time.monotonic() < deadline:
        fresh = not (run / "checkpoints" / "latest").exists()
        if fresh and run.exists():  # killed before its first checkpoint: nothing to resume
            for p in sorted(run.rglob("*"), reverse=True):
                p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
            run.rmdir()
        before = _iterations(run)
        proc = _start(run, fresh)
        # wait for the run to make progress (startup: imports, the model), then kill at a
        # random moment within the next couple of iterations
        t0 = time.monotonic()
        while proc.poll() is None and _iterations(run) == before and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is not None:  # it finished (or failed) before the kill
            assert proc.returncode == 0, proc.stderr.read()[-2000:]
            break
        proc.kill()
        proc.wait()
        kills += 1
    assert kills >= 10
    final = _start(run, fresh=False)
    assert final.wait(timeout=300) == 0, final.stderr.read()[-2000:]
    assert _iterations(run) == list(range(-1, 50))  # no gap, no duplicate, in order
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 50
    db = sqlite3.connect(run / "lessons.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
