"""`clicker compare` end to end on a tiny budget: parallel runs, results, report, resume."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from clicker.core.config import ConfigError
from clicker.experiment.compare import compare, load_spec, plan
from clicker.models.fingerprint import environment, weights_fingerprint

TINY_TASK = {
    "overrides": {
        "task.name": "addition", "task.args": {"digits": 2},
        "rollout.prompts": 4, "rollout.group_size": 4, "update.lr": 3e-5,
        "train.eval_temperature": 0.0, "train.eval_problems": 8, "train.eval_every": 1,
    },
    "budget": 400, "target": 0.95,
}


def tiny_spec(**kw):
    return load_spec(None, **{"tasks": ["tiny_add"], "methods": ["grpo", "value"], "seeds": 1,
                              "jobs": 2, "task_defs": {"tiny_add": TINY_TASK}, "reps": 200, **kw})


@pytest.mark.slow
def test_compare_runs_reports_and_resumes(tiny_dir, tmp_path):
    out = tmp_path / "cmp"
    results = compare(tiny_spec(), out)
    task = results["tasks"]["tiny_add"]
    assert set(task["methods"]) == {"grpo", "value"}
    for method, row in task["methods"].items():
        assert row["seeds"] == 1
        assert row["resources"]["wall_s"]["median"] > 0
        assert row["resources"]["peak_rss_mb"]["median"] > 100  # a process with torch loaded
        curve = task["curves"][method][0]
        assert curve["world_tokens"][0] == 0 and curve["world_tokens"][-1] >= 400
        assert len(curve["success"]) == len(curve["world_tokens"]) >= 2
        ep = task["gallery"][method][0]
        assert len(ep["pieces"]) == len(ep["action"]) == len(ep["credit"]["advantage"])
    assert "value/click" in task["gallery"]["value"][0]["credit"]  # the clicker's own channel
    assert task["methods"]["grpo"]["ratio_to_grpo"]["value"] == pytest.approx(1.0)
    assert json.loads((out / "results.json").read_text())["tasks"]["tiny_add"]["budget"] == 400
    html = (out / "report.html").read_text()
    assert "tiny_add" in html and "data:image/png;base64," in html

    # Interrupted compare: grpo finished; value was killed after its last checkpoint (no summary),
    # and a third run died before its first checkpoint. Resuming reuses grpo untouched, resumes
    # value from its checkpoint and restarts the other.
    runs = {r.method: r for r in plan(tiny_spec(), out)}
    grpo_summary = runs["grpo"].run_dir / "summary.json"
    stamp = grpo_summary.stat().st_mtime_ns
    (runs["value"].run_dir / "summary.json").unlink()
    value_ckpts = sorted((runs["value"].run_dir / "checkpoints").iterdir())
    again = compare(tiny_spec(), out)
    assert grpo_summary.stat().st_mtime_ns == stamp
    assert (runs["value"].run_dir / "summary.json").is_file()
    assert sorted((runs["value"].run_dir / "checkpoints").iterdir()) == value_ckpts
    assert again["tasks"]["tiny_add"]["methods"]["value"]["final_success"]["per_seed"] == (
        task["methods"]["value"]["final_success"]["per_seed"])
    # every run records the weights it started from (a resumed one too, not its checkpoint's);
    # a task whose runs started from different weights is flagged
    fp = weights_fingerprint(tiny_dir)
    for r in runs.values():
        assert json.loads((r.run_dir / "summary.json").read_text())["model_fingerprint"] == fp
    assert "mixed_weights" not in again["tasks"]["tiny_add"]
    envs = again["tasks"]["tiny_add"]["environments"]
    assert list(envs) == [fp] and envs[fp]["torch_threads"].isdigit()  # the runs' own threads
    assert {k: v for k, v in envs[fp].items() if k != "torch_threads"} == {
        k: v for k, v in environment().items() if k != "torch_threads"}
    rebuilt = json.loads(grpo_summary.read_text()) | {"model_fingerprint": "0" * 12}
    grpo_summary.write_text(json.dumps(rebuilt))
    flagged = compare(tiny_spec(), out, report_only=True)["tasks"]["tiny_add"]["mixed_weights"]
    assert flagged == {"0" * 12: [runs["grpo"].name], fp: [runs["value"].name]}
    assert "different sets of weights" in (out / "report.html").read_text()

    # A changed config in an existing run dir is refused, not mixed in.
    with pytest.raises(ConfigError, match="different config"):
        compare(tiny_spec(lr={"grpo": 1e-3}), out)

    # A run interrupted before its first checkpoint starts again from scratch.
    shutil.rmtree(runs["value"].run_dir / "checkpoints")
    (runs["value"].run_dir / "summary.json").unlink()
    part = compare(tiny_spec(), out, report_only=True)["tasks"]["tiny_add"]  # its rows say so
    assert part["unfinished"] == [runs["value"].name] and list(part["methods"]) == ["grpo"]
    html = (out / "report.html").read_text()
    assert "unfinished and not in these rows" in html and runs["value"].name in html
    compare(tiny_spec(), out)
    assert (runs["value"].run_dir / "summary.json").is_file()


def test_spec_yaml_presets_and_bad_names(tmp_path):
    from pathlib import Path

    example = load_spec(Path(__file__).resolve().parents[1] / "configs" / "compare.yaml")
    assert "mix" in example.methods and "letters_small" in example.tasks
    assert len(plan(example, tmp_path)) == len(example.methods) * len(example.tasks) * 3
    spec = load_spec(None)
    assert spec.preset == "quick" and spec.tasks and spec.methods and spec.seeds
    assert "grpo" in spec.methods
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"preset": "full", "methods": ["grpo", "rloo"], "seeds": 3,
                                    "task_defs": {"mine": TINY_TASK}, "tasks": ["mine"]}))
    spec = load_spec(path, seeds=2)  # the command line wins over the file
    assert (spec.methods, spec.tasks, spec.seeds) == (["grpo", "rloo"], ["mine"], 2)
    for bad, needle in [({"methods": ["nope"]}, "unknown method 'nope'"),
                        ({"tasks": ["nope"]}, "unknown task 'nope'"),
                        ({"preset": "huge"}, "unknown compare preset"),
                        ({"seeds": 0}, "compare seeds"),
                        ({"bogus": 1}, "compare bogus"),
                        ({"lr": {"rft": 1e-4}, "methods": ["grpo"]}, "not among the methods")]:
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ConfigError, match=needle):
            load_spec(path)


def test_cli_compare_bad_input_is_one_line(tmp_path):
    env = {**os.environ, "CLICKER_DEBUG": ""}
    r = subprocess.run([sys.executable, "-m", "clicker.cli", "compare", "--methods", "grpo,nope",
                        "--out", str(tmp_path / "c")], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "unknown method 'nope'" in r.stderr
    assert not (tmp_path / "c").exists()
    r = subprocess.run([sys.executable, "-m", "clicker.cli", "compare", "--methods", "grpo",
                        "--seeds", "2", "--only-seeds", "1,2", "--out", str(tmp_path / "c")],
                       capture_output=True, text=True, env=env, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "only seed 2: this compare has seeds 0..1" in r.stderr
    assert not (tmp_path / "c").exists()


def test_gallery_picks_alternate_success_and_failure():
    from types import SimpleNamespace

    from clicker.experiment.gallery import pick_episodes

    eps = [SimpleNamespace(group=g, success=s) for g, s in
           [(0, False), (0, False), (1, True), (1, False), (2, True), (2, True)]]
    picked = pick_episodes(eps, 3)
    assert [eps[i].success for i in picked[:2]] == [True, False]
    assert eps[picked[0]].group == eps[picked[1]].group == 1  # the mixed group first
    assert len(set(picked)) == 3
    assert pick_episodes(eps[:2], 4) == [0, 1]


def test_runs_from_before_a_new_config_field_still_match(tmp_path):
    """A finished run whose config.yaml predates a field (at its default) is not 'different'."""
    from clicker.experiment.compare import check_same_config

    run = plan(tiny_spec(), tmp_path)[0]
    run.run_dir.mkdir(parents=True)
    old = run.cfg.model_dump(mode="json")
    del old["update"]["skip_zero_advantage"]  # as written by a version without the field
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(old))
    check_same_config(run)
    old["update"]["lr"] = 1.0
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(ConfigError, match="different config"):
        check_same_config(run)


@pytest.mark.slow
def test_killed_compare_stops_its_workers_and_resumes(tiny_dir, tmp_path):
    """SIGTERM to a running `clicker compare` stops it and its worker at once; the same command
    again resumes the run from its checkpoint and finishes it."""
    import signal
    import time

    task = copy.deepcopy(TINY_TASK)
    task["overrides"]["train.eval_every"] = 5
    task["budget"] = 6_000  # ~37 iterations (a few seconds each 10): killed well before the end
    spec = {"tasks": ["tiny_add"], "methods": ["grpo"], "seeds": 1, "jobs": 1, "reps": 200,
            "task_defs": {"tiny_add": task}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "cmp"
    metrics = out / "runs" / "tiny_add" / "grpo" / "seed0" / "metrics.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "clicker.cli", "compare", str(path), "--out",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 12:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"compare ended before it could be killed: {proc.stderr.read()}"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 130, proc.stderr.read()
    lines = len(metrics.read_text().splitlines())
    time.sleep(2)  # a surviving worker would still be appending
    assert len(metrics.read_text().splitlines()) == lines
    summary = out / "runs" / "tiny_add" / "grpo" / "seed0" / "summary.json"
    assert not summary.exists()
    results = compare(load_spec(path), out)
    assert summary.is_file()
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    its = [r["iteration"] for r in rows if r["iteration"] >= 0]
    assert its == list(range(len(its))) and rows[-1]["world/tokens"] >= 6_000  # no gap or repeat
    assert results["tasks"]["tiny_add"]["methods"]["grpo"]["seeds"] == 1


def test_benchmark_specs_of_record_plan_their_runs(tmp_path):
    """The shipped benchmark specs load and plan: addition3 runs on the `arith` tiny model, and
    value_turn is the clicker on turns."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name, task, n in [("addition3.yaml", "addition3", 6 * 5), ("keydoor_long.yaml",
                                                                    "keydoor_long", 5 * 5)]:
        runs = plan(load_spec(root / "benchmarks" / name), tmp_path / name)
        assert len(runs) == n and {r.task for r in runs} == {task}
    add3 = plan(load_spec(root / "benchmarks" / "addition3.yaml"), tmp_path / "a")
    assert {r.cfg.model.tiny_recipe for r in add3} == {"arith"}
    assert {r.cfg.task.args["digits"] for r in add3} == {3}
    full = load_spec(None, preset="full")
    assert "addition3" in full.tasks and "value_turn" in full.methods
    turn = [r for r in plan(load_spec(root / "benchmarks" / "keydoor_long.yaml"), tmp_path / "k")
            if r.method == "value_turn"]
    assert turn and all(r.cfg.credit.value.steps == "turn" and r.cfg.credit.value.replay == 3
                        for r in turn)


def test_every_shipped_benchmark_spec_plans_and_names_its_command(tmp_path):
    """Each benchmarks/*.yaml the README and docs point to still loads and plans against the
    current config (a renamed or removed field would otherwise surface hours into a rerun),
    and its header gives the command that runs it."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    specs = sorted((root / "benchmarks").glob("*.yaml"))
    assert len(specs) >= 20
    for path in specs:
        spec = load_spec(path)
        assert len(plan(spec, tmp_path / path.stem)) == (
            len(spec.tasks) * len(spec.methods) * spec.seeds), path.name
        assert f"clicker compare benchmarks/{path.name}" in path.read_text(), path.name


def test_a_runs_threads_follow_the_jobs_asked_for_not_the_runs_left(tmp_path, monkeypatch):
    """A resumed compare with one run left gives it the threads it would have had in the
    whole compare (cores // jobs): its samples depend on its thread count."""
    from clicker.core.config import build_config
    from clicker.experiment import runs as runs_mod

    seen = {}
    monkeypatch.setattr(runs_mod.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(runs_mod, "_build_tiny_models", lambda todo: None)
    monkeypatch.setattr(runs_mod, "_execute", lambda todo, runs, jobs, threads, *a: seen.update(
        jobs=jobs, threads=threads, todo=len(todo)) or {})
    cfg = build_config({}, [])
    rs = [runs_mod.Run("t", "m", s, cfg, tmp_path / f"seed{s}") for s in range(3)]
    for r in rs[:2]:
        r.run_dir.mkdir()
        (r.run_dir / "summary.json").write_text("{}")
    runs_mod.execute(rs, jobs=2)
    assert seen == {"jobs": 1, "threads": 2, "todo": 1}


def test_only_seeds_and_methods_run_part_of_a_compare(tmp_path, monkeypatch):
    """--only-seeds / --only-methods run the chosen runs with the whole compare's jobs (so the
    same threads, so the same samples); the spec, and so the report, stays whole; a seed or
    method outside the compare is refused in one line."""
    from clicker.cli import _seed_list
    from clicker.experiment import compare as compare_mod

    seen = {}
    monkeypatch.setattr(compare_mod, "execute", lambda todo, jobs: seen.update(
        names=sorted(r.name for r in todo), jobs=jobs) or {})
    spec = tiny_spec(seeds=4)
    out = tmp_path / "cmp"
    results = compare(spec, out, only_seeds=[1, 3], only_methods=["value"])
    assert seen["jobs"] == 2  # the spec's jobs, not the 2 runs' count
    assert seen["names"] == sorted(r.name for r in plan(spec, out)
                                   if r.method == "value" and r.seed in (1, 3))
    assert len(seen["names"]) == 2 and results["seeds"] == 4  # the spec is whole
    assert len(results["unfinished"]) == 8  # every run of the spec is reported on, none ran
    compare(spec, out, only_seeds=[0])
    assert len(seen["names"]) == 2 and all(n.endswith("seed0") for n in seen["names"])
    for kw, needle in [({"only_seeds": [4]}, "seeds 0..3"),
                       ({"only_methods": ["rloo"]}, "not among the compare's methods")]:
        with pytest.raises(ConfigError, match=needle):
            compare(spec, out, **kw)
    assert _seed_list("0,2-3") == [0, 2, 3] and _seed_list(None) is None
    for bad in ("a", "3-1"):
        with pytest.raises(ConfigError, match="--only-seeds"):
            _seed_list(bad)
