"""The `clicker` command through a subprocess: smoke runs, resume, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clicker.train.metrics import read_metrics

FAST = ["--set", "rollout.prompts=2", "--set", "rollout.group_size=2", "--set",
        "train.eval_problems=4", "--set", "train.progress=false"]


def clicker(*args: str, env_home: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CLICKER_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "clicker.cli", *args], capture_output=True,
                          text=True, env=env, timeout=600, check=False)


def test_train_eval_and_resume(tiny_dir, tmp_path):
    run = tmp_path / "run"
    r = clicker("train", "--run-dir", str(run), "--set", "train.iterations=3",
                "--set", "train.eval_every=3", "--set", "train.checkpoint_every=2", *FAST)
    assert r.returncode == 0, r.stderr
    assert "held-out success: before" in r.stdout
    assert (run / "config.yaml").is_file() and list((run / "tensorboard").iterdir())
    rows = read_metrics(run)
    assert [m["iteration"] for m in rows] == [-1, 0, 1, 2]
    for m in rows[1:]:
        for key in ("world/tokens", "rollout/success", "loss/policy", "policy/approx_kl",
                    "policy/clip_frac", "policy/entropy", "rollout/tokens_per_s"):
            assert key in m, key
    assert rows[-1]["world/tokens"] > rows[1]["world/tokens"] > 0
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt)  # a normal HF directory

    r = clicker("train", "--resume", str(run), "--set", "train.iterations=5")
    assert r.returncode == 0, r.stderr
    rows = read_metrics(run)
    assert [m["iteration"] for m in rows] == [-1, 0, 1, 2, 3, 4]
    assert rows[4]["world/tokens"] > rows[3]["world/tokens"]

    r = clicker("eval", "--model", str(run), "--problems", "4")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["episodes"] == 4 and 0.0 <= out["success"] <= 1.0


def test_resume_drops_iterations_after_the_checkpoint(tiny_dir, tmp_path):
    """A run killed after logging iterations its checkpoint does not hold resumes with no
    duplicates and no gaps."""
    run = tmp_path / "run"
    r = clicker("train", "--run-dir", str(run), "--set", "train.iterations=3",
                "--set", "train.eval_every=0", "--set", "train.checkpoint_every=2", *FAST)
    assert r.returncode == 0, r.stderr
    (run / "checkpoints" / "latest").write_text("iter-000001\n")  # as if killed before iter 2's
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 2, "torn')  # and mid-write
    r = clicker("train", "--resume", str(run), "--set", "train.iterations=4")
    assert r.returncode == 0, r.stderr
    assert [m["iteration"] for m in read_metrics(run)] == [0, 1, 2, 3]


def test_init_model_prints_cached_dir(tiny_dir):
    r = clicker("init-model")
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip().splitlines()[-1]) == tiny_dir


BAD = [
    (["train", "--set", "task.name=chess"], "unknown task 'chess'"),
    (["train", "--set", "credit.sources={ppo: 1.0}"], "unknown credit source 'ppo'"),
    (["train", "--set", "rollout.group_size=many"], "rollout.group_size"),
    (["train", "--set", "update.aggregation=median"], "update.aggregation"),
    (["train", "--set", "update.lrr=0.1"], "update.lrr"),
    (["train", "--set", "task.args={digits: 2, base: 7}"], "base"),
    (["train", "--set", "model.path=/nonexistent/model"], "/nonexistent/model"),
    (["train", "--config", "/nonexistent.yaml"], "config file not found"),
    (["eval", "--model", "/nonexistent/dir"], "/nonexistent/dir"),
    (["train", "--set", "novalue"], "key=value"),
    (["train", "--resume", "/nonexistent/run"], "no run"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_clear_line(args, needle):
    r = clicker(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]


def test_unreadable_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n  name: x")
    r = clicker("train", "--config", str(bad))
    assert r.returncode == 2 and "cannot read YAML" in r.stderr and "Traceback" not in r.stderr
    bad.write_bytes(b"\xff\xfe\x00garbage")
    r = clicker("train", "--config", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_bad_resume_keeps_the_run(tiny_dir, tmp_path):
    run = tmp_path / "run"
    r = clicker("train", "--run-dir", str(run), "--set", "train.iterations=1",
                "--set", "train.eval_every=0", *FAST)
    assert r.returncode == 0, r.stderr
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    r = clicker("train", "--resume", str(run), "--set", "rollout.prompts=zero")
    assert r.returncode == 2 and "rollout.prompts" in r.stderr
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert before == after


@pytest.mark.parametrize("args,needle", [(["train", "--bogus"], "No such option: --bogus"),
                                         (["init-model", "--recipe", "big"], "default, arith")])
def test_usage_errors_exit_2_without_a_traceback(args, needle):
    """Click's usage errors (typer >= 0.29 vendors its own click) print usage and one error."""
    r = clicker(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and needle in r.stderr
