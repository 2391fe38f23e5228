"""Learning tests: GRPO must raise held-out success from the warm start within a fixed budget.

These train for real (tens of seconds each on 2 CPU cores) and so are the slowest tests; the
budgets below are fixed, not tuned per run, and the thresholds leave room for seed noise.
"""

from __future__ import annotations

import pytest

from clicker.core.config import build_config
from clicker.train.loop import train
from clicker.train.metrics import read_metrics

pytestmark = pytest.mark.slow


def _run(tmp_path, overrides: dict) -> tuple[float, float, list[dict]]:
    base = {
        "train": {"progress": False, "eval_problems": 128, "checkpoint_every": 0},
        "update": {"lr": 3e-5},
    }
    for section, values in overrides.items():
        base.setdefault(section, {}).update(values)
    summary = train(build_config(base), tmp_path / "run")
    return summary["initial_eval_success"], summary["final_eval_success"], read_metrics(
        tmp_path / "run")


def test_grpo_learns_two_digit_addition(tiny_dir, tmp_path):
    """Sampled held-out success on 512 problems, the measure the keydoor tests use. Measured on
    one thread on two builds of the tiny model under the pinned libraries (the 1-thread build
    every machine now makes, and the 2-thread build CI made before), seeds 0-2: 0.04-0.06 -> 0.09-0.15 after 200 iterations
    (at least 1.8x and +0.04); training success 0.06-0.08 -> 0.13-0.15 (first and last 20
    iterations, at least 1.9x). Greedy success, which this test asked to gain 0.12 in 100
    iterations on earlier builds, gained 0.06-0.13 in 100-300 iterations on these."""
    before, after, rows = _run(tmp_path, {
        "task": {"name": "addition", "args": {"digits": 2}},
        "rollout": {"prompts": 16, "group_size": 8},
        "train": {"iterations": 200, "eval_every": 200, "eval_temperature": 1.0,
                  "eval_problems": 512},
    })
    assert 0.0 < before < 0.7, "the warm start should leave room to learn"
    assert after >= 1.5 * before and after >= before + 0.025, (before, after)
    assert all(r["world/tokens"] > 0 for r in rows if r["iteration"] >= 0)
    train = [r["rollout/success"] for r in rows if r["iteration"] >= 0]
    assert sum(train[-20:]) > 1.5 * sum(train[:20]), train  # training reward rises too


def test_grpo_learns_short_keydoor(tiny_dir, tmp_path):
    """Measured on one thread with evals every 5 iterations: 0.47 -> 0.56, 0.64, 0.65, 0.73
    held-out success after 5, 10, 15 and 20."""
    before, after, _ = _run(tmp_path, {
        "task": {"name": "keydoor", "args": {"rooms": 2}},
        "rollout": {"prompts": 8, "group_size": 8},
        "update": {"lr": 1e-4},
        "train": {"iterations": 20, "eval_every": 20, "eval_temperature": 1.0,
                  "eval_problems": 128},
    })
    assert after >= before + 0.12, (before, after)


def test_value_credit_learns_short_keydoor(tiny_dir, tmp_path):
    """The clicker alone (no outcome baseline): a TD-learned value model as the potential.
    One value pass per batch (the default is 2) and 15 iterations: the suite's slowest test
    (226 s at 30). Measured on one thread with evals every 5 iterations: 0.47 -> 0.65, 0.65,
    0.81 held-out success after 5, 10 and 15 (0.88 at 30)."""
    before, after, rows = _run(tmp_path, {
        "task": {"name": "keydoor", "args": {"rooms": 2}},
        "rollout": {"prompts": 8, "group_size": 8},
        "credit": {"sources": {"value": 1.0}, "value": {"epochs": 1}},
        "update": {"lr": 1e-4},
        "train": {"iterations": 15, "eval_every": 15, "eval_temperature": 1.0,
                  "eval_problems": 128},
    })
    assert after >= before + 0.12, (before, after)
    ev = [r["credit/value/explained_variance"] for r in rows if r["iteration"] >= 0]
    assert max(ev[-5:]) > 0.0, ev  # the value model predicts returns better than their mean
