"""Reward code that fails is isolated (issue 9): a verifier that raises, hangs or returns NaN ends
its episode with reward 0 and an error, the count shows in the metrics and training goes on; an
update skipped for a non-finite loss is counted, and enough of them in a row stop the run
cleanly with a checkpoint."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch

from clicker.core.config import build_config
from clicker.core.types import Verdict
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks import TASKS
from clicker.tasks.addition import Addition
from clicker.tasks.base import SingleTurnWorld, Step
from clicker.tasks.guard import guarded
from clicker.train.loop import train


class Flaky(Addition):
    """2-digit addition whose verifier misbehaves by problem: raises, hangs, NaN, inf, a string
    reward, an error verdict, or works."""

    def verify(self, problem, completion):
        kind = int(problem.id.rsplit("/", 1)[1]) % 7
        if kind == 0:
            raise RuntimeError("the grader\nbroke")
        if kind == 1:
            time.sleep(60)
        if kind == 2:
            return Verdict(math.nan)
        if kind == 3:
            return Verdict(math.inf)
        if kind == 4:
            return Verdict("lots")  # type: ignore[arg-type]
        if kind == 5:
            return Verdict(0.0, error="grader said no")
        return super().verify(problem, completion)


def test_guarded_step_by_hand():
    assert guarded(lambda: Step("ok", 1, True), 1.0) == Step("ok", 1.0, True)
    bad = guarded(lambda: 1 / 0, 1.0)
    assert (bad.reward, bad.done, bad.error) == (0.0, True, "ZeroDivisionError: division by zero")
    t = time.perf_counter()
    slow = guarded(lambda: time.sleep(30), 0.2)
    assert slow.error == "timed out after 0.2 s" and time.perf_counter() - t < 5
    assert guarded(lambda: Step("", math.nan, False), None).error == "reward is nan"


def test_failing_verifiers_end_their_episodes_not_the_run(random_policy):
    world = SingleTurnWorld(Flaky())
    eps = run_episodes(random_policy, world, "train", list(range(7)),
                       RolloutSettings(group_size=1, step_timeout_s=0.3),
                       torch.Generator().manual_seed(0))
    errors = [e.meta.get("verifier_error") for e in eps]
    assert errors[0] == "RuntimeError: the grader broke"
    assert errors[1] == "timed out after 0.3 s"
    assert errors[2] == "reward is nan" and errors[3] == "reward is inf"
    assert errors[4] == "reward 'lots' is not a number" and errors[5] == "grader said no"
    assert errors[6] is None
    assert all(e.reward == 0.0 for e in eps[:6])


def test_training_goes_on_and_counts_verifier_errors(tmp_path, tiny_dir, monkeypatch):
    class Raises(Addition):
        def verify(self, problem, completion):
            if int(problem.id.rsplit("/", 1)[1]) % 2:  # half the problems
                raise ValueError("boom")
            return super().verify(problem, completion)

    monkeypatch.setitem(TASKS, "raises", Raises)
    sets = ["task.name=raises", "rollout.prompts=4", "rollout.group_size=2",
            "train.iterations=2", "train.eval_every=0", "train.progress=false"]
    summary = train(build_config({}, sets), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert summary["iterations"] == 2 and len(rows) == 2
    assert sum(r["rollout/verifier_errors"] for r in rows) > 0


def test_skipped_updates_in_a_row_stop_the_run_with_a_checkpoint(tmp_path, tiny_dir,
                                                                 monkeypatch, capsys):
    from clicker.train import loop
    from clicker.train.update import UpdateResult

    monkeypatch.setattr(loop, "policy_update",
                        lambda *a, **k: UpdateResult({"loss/skipped_steps": 1.0}, True))
    sets = ["task.name=addition", "rollout.prompts=2", "rollout.group_size=2",
            "train.iterations=10", "train.eval_every=0", "train.progress=false",
            "train.max_skipped_updates=3", "train.checkpoint_every=0"]
    summary = train(build_config({}, sets), tmp_path / "run")
    assert summary["iterations"] == 3 and "3 updates in a row" in summary["stopped"]
    assert (tmp_path / "run" / "checkpoints" / "iter-000002" / "trainer_state.pt").is_file()
    err = capsys.readouterr().err
    assert "update skipped (3 in a row)" in err and "stopping" in err
    with pytest.raises(ValueError):
        build_config({}, ["train.max_skipped_updates=-1"])
