"""Data-parallel updates over torch.distributed (issue 8): 2 processes on CPU with gloo, launched
with torchrun, take the step one process takes with the same global batch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


def _case():
    spec = importlib.util.spec_from_file_location("dist_update", HERE / "dist_update.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("aggregation", ["token", "sequence"])
def test_two_process_update_equals_one_process(tmp_path, aggregation):
    out = tmp_path / "dist.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "dist_update.py"), str(out), aggregation],
        check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist_run = torch.load(out)
    params, metrics = _case().run(None, aggregation)
    before = _case().make_case(aggregation)[0].model.state_dict()
    moved = 0
    for name, p in params.items():  # 4 SGD steps (2 epochs x 2 minibatches)
        torch.testing.assert_close(dist_run["params"][name], p, rtol=1e-5, atol=1e-6)
        moved += int(not torch.equal(p, before[name]))
    assert moved > 0  # the update did something to compare
    for k in ("loss/policy", "policy/approx_kl", "policy/clip_frac", "loss/grad_norm",
              "update/trained_fraction"):
        assert dist_run["metrics"][k] == pytest.approx(metrics[k], rel=1e-4, abs=1e-7), k


def test_clicker_train_under_torchrun(tmp_path, tiny_dir):
    """`torchrun --nproc_per_node 2 -m clicker.cli train`: each rank samples half the prompts,
    every rank trains on all the episodes, and both ranks end with the same weights; rank 0
    writes the run dir (metrics, eval), rank 1 its own checkpoints under ranks/1."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    sets = ["task.name=addition", "rollout.prompts=4", "rollout.group_size=4",
            "train.iterations=2", "train.eval_every=2", "train.eval_problems=8",
            "train.progress=false", "update.lr=1e-4"]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "clicker.cli", "train", "--run-dir", str(run)]
        + [x for s in sets for x in ("--set", s)],
        check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["iteration"] for r in rows] == [-1, 0, 1]
    assert all(r["rollout/episodes"] == 16 for r in rows[1:]) and "eval/success" in rows[-1]
    assert not (run / "ranks" / "1" / "metrics.jsonl").exists() or all(
        "eval/success" not in json.loads(line)
        for line in (run / "ranks" / "1" / "metrics.jsonl").open())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["ranks_in_sync"] is True
    from safetensors.torch import load_file

    trained = load_file(next((run / "checkpoints").glob("iter-*/model.safetensors")))
    init = load_file(Path(tiny_dir) / "model.safetensors")
    assert any(not torch.equal(trained[k], init[k]) for k in trained)  # it trained
