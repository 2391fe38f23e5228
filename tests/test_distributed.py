"""Data-parallel updates over torch.distributed (issue 8): 2 processes on CPU with gloo, launched
with torchrun, take the step one process takes with the same global batch."""

from __future__ import annotations

import importlib.util
import json
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


@pytest.mark.parametrize("aggregation,mode", [("token", "ddp"), ("sequence", "ddp"),
                                              ("token", "fsdp")])
def test_two_process_update_equals_one_process(tmp_path, aggregation, mode):
    """Gradients all-reduced (ddp) or the model sharded with FSDP2 (fsdp: each rank holds half
    of every tensor; ranks with fewer rows run padding passes): the single process's step."""
    out = tmp_path / "dist.pt"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "dist_update.py"), str(out), aggregation, mode],
        check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dist_run = torch.load(out)
    micro = 1 if mode == "fsdp" else 2
    params, metrics = _case().run(None, aggregation, micro)
    before = _case().make_case(aggregation, micro)[0].model.state_dict()
    moved = 0
    for name, p in params.items():  # 4 SGD steps (2 epochs x 2 minibatches)
        torch.testing.assert_close(dist_run["params"][name], p, rtol=1e-5, atol=1e-6)
        moved += int(not torch.equal(p, before[name]))
    assert moved > 0  # the update did something to compare
    for k in ("loss/policy", "policy/approx_kl", "policy/clip_frac", "loss/grad_norm",
              "update/trained_fraction"):
        assert dist_run["metrics"][k] == pytest.approx(metrics[k], rel=1e-4, abs=1e-7), k


SETS = ["task.name=addition", "rollout.prompts=4", "rollout.group_size=4", "train.eval_problems=8",
        "train.progress=false", "update.lr=1e-4"]


def _torchrun(run: Path, *sets: str, resume: bool = False) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    where = ["--resume", str(run)] if resume else ["--run-dir", str(run)]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "clicker.cli", "train", *where]
        + [x for s in (*SETS, *sets) for x in ("--set", s)],
        check=False, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_clicker_train_under_torchrun(tmp_path, tiny_dir):
    """`torchrun --nproc_per_node 2 -m clicker.cli train`: each rank samples half the prompts,
    every rank trains on all the episodes, and both ranks end with the same weights; rank 0
    writes the run dir (metrics, eval), rank 1 its own checkpoints under ranks/1."""
    run = tmp_path / "run"
    _torchrun(run, "train.iterations=2", "train.eval_every=2")
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


def test_torchrun_resume_continues_as_the_uninterrupted_run(tmp_path, tiny_dir):
    """A 2-rank run stopped after 2 iterations and resumed to 4 trains exactly as a 4-iteration
    run: rank 0's checkpoint holds the weights, the optimizer and every rank's RNG streams."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    _torchrun(whole, "train.iterations=4", "train.eval_every=0")
    _torchrun(split, "train.iterations=2", "train.eval_every=0")
    assert not (split / "ranks" / "1" / "checkpoints").exists()  # rank 0 writes them all
    _torchrun(split, "train.iterations=4", "train.eval_every=0", resume=True)
    a, b = ([json.loads(line) for line in (d / "metrics.jsonl").open()] for d in (whole, split))
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b] == [0, 1, 2, 3]
    keys = ("world/tokens", "rollout/success", "loss/policy", "policy/entropy")
    assert [[r[k] for k in keys] for r in a[2:]] == [[r[k] for k in keys] for r in b[2:]]
    assert json.loads((split / "summary.json").read_text())["ranks_in_sync"] is True


def test_fsdp_training_under_torchrun_saves_whole_weights_and_resumes_exactly(tmp_path, tiny_dir):
    """`train.fsdp`: each rank holds half of every weight, gradient and optimizer tensor and
    samples on a whole replica; rank 0 saves the whole model (a normal HF checkpoint) and the
    whole optimizer state, so a run resumed after 2 iterations matches the 4-iteration run."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    sets = ("train.fsdp=true", "train.eval_every=2")
    _torchrun(whole, "train.iterations=4", *sets)
    _torchrun(split, "train.iterations=2", *sets)
    _torchrun(split, "train.iterations=4", *sets, resume=True)
    a, b = ([json.loads(line) for line in (d / "metrics.jsonl").open()] for d in (whole, split))
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b] == [-1, 0, 1, 2, 3]
    keys = ("world/tokens", "rollout/success", "loss/policy", "policy/entropy")
    assert [[r[k] for k in keys] for r in a[3:]] == [[r[k] for k in keys] for r in b[3:]]
    assert a[-1]["eval/success"] == b[-1]["eval/success"]
    summary = json.loads((split / "summary.json").read_text())
    assert summary["ranks"] == 2 and summary["ranks_in_sync"] is True
    from safetensors.torch import load_file

    init = load_file(Path(tiny_dir) / "model.safetensors")
    for run in (whole, split):
        trained = load_file(next((run / "checkpoints").glob("iter-*/model.safetensors")))
        assert trained.keys() == init.keys()
        assert all(trained[k].shape == init[k].shape for k in init)  # whole, not a shard
        assert any(not torch.equal(trained[k], init[k]) for k in init)


def test_fsdp_refuses_what_it_cannot_shard():
    from clicker.core.config import build_config
    from clicker.train.distributed import DataParallel
    from clicker.train.loop import check_fsdp

    with pytest.raises(ValueError, match="launch with torchrun"):
        check_fsdp(build_config({"train": {"fsdp": True}}), None)
    two = DataParallel(0, 2, sharded=True)
    check_fsdp(build_config({"credit": {"sources": {"value": 1.0}}}), two)
    for sources, extra in (({"mc": 1.0}, {}), ({"value": 1.0}, {"value": {"model": "head"}})):
        cfg = build_config({"credit": {"sources": sources, **extra}})
        with pytest.raises(ValueError, match="train.fsdp runs credit sources"):
            check_fsdp(cfg, two)


def test_close_leaves_only_a_group_it_joined(tmp_path):
    """`close` destroys the process group `from_env` joined (so no rank exits with gloo's
    threads still up), and leaves up a group its caller had joined."""
    import torch.distributed as dist

    from clicker.train.distributed import DataParallel

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        DataParallel(0, 1).close()  # the caller's group
        assert dist.is_initialized()
        DataParallel(0, 1, owns_group=True).close()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
