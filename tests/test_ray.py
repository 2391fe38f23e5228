"""Ray rollout workers (issue 8) on a local cluster started and stopped here: sharded
sampling gives the same episodes in process and on any number of workers, a worker killed in
the middle of an iteration is replaced and the iteration completes with the same full batch,
and `clicker train --ray` trains with them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch

ray = pytest.importorskip("ray")

from clicker.core.config import build_config
from clicker.models.policy import Policy
from clicker.rollout.ray_workers import RayRollouts
from clicker.rollout.runner import RolloutSettings
from clicker.rollout.shards import run_shard, shard_spans
from clicker.tasks.keydoor import KeyDoor
from clicker.train.loop import train

MODEL = {"path": None, "device": "cpu", "dtype": "float32", "tiny_seed": 0,
         "tiny_recipe": "default"}
TASK = {"name": "keydoor", "args": {"rooms": 2}}
SETTINGS = RolloutSettings(group_size=2)
INDICES = [10, 11, 12, 13]


@pytest.fixture(scope="module")
def cluster(tiny_dir):
    # worker_niceness 0: Ray starts workers at nice 15, which starve on a busy machine
    # 4 logical CPUs: the module's 2-worker pool (0.5 each) and a training run's 2 workers (1 each)
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
             _system_config={"worker_niceness": 0},
             runtime_env={"env_vars": {"CLICKER_HOME": os.environ["CLICKER_HOME"]}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_dir):
    """The iteration's episodes sampled in this process, one shard after the other (1 thread,
    as the workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    policy = Policy.load(None, device="cpu", dtype="float32")
    eps = [e for s, span in enumerate(shard_spans(len(INDICES), 3))
           for e in run_shard(policy, KeyDoor(rooms=2), INDICES, span, SETTINGS, seed=0,
                              iteration=0, shard=s)]
    torch.set_num_threads(threads)
    return policy, eps


def _same(a, b):
    assert [(e.tokens, e.group, e.reward) for e in a] == [(e.tokens, e.group, e.reward) for e in b]
    for x, y in zip(a, b):
        torch.testing.assert_close(torch.tensor(x.logprobs), torch.tensor(y.logprobs),
                                   atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def pool(cluster):
    pool = RayRollouts(MODEL, TASK, workers=2, cpus_per_worker=0.5)
    yield pool
    pool.close()


def test_ray_workers_sample_the_in_process_episodes(cluster, reference, pool):
    policy, expected = reference
    one = RayRollouts(MODEL, TASK, workers=1, cpus_per_worker=0.5)
    try:
        alone = one.rollouts(policy.model.state_dict(), 0, INDICES, SETTINGS, seed=0, shards=3)
    finally:
        one.close()
    got = pool.rollouts(policy.model.state_dict(), 0, INDICES, SETTINGS, seed=0, shards=3)
    assert len(got) == len(INDICES) * SETTINGS.group_size
    _same(alone, expected)
    _same(got, expected)


def test_a_worker_killed_mid_iteration_is_replaced(cluster, reference, pool):
    policy, expected = reference
    pid = ray.get(pool.workers[0].pid.remote())  # started (the model loaded)
    t = time.perf_counter()
    pool.rollouts(policy.model.state_dict(), 0, INDICES, SETTINGS, seed=0, shards=3)
    # a third of the way into the next iteration, worker 0 is sampling its first shard
    killer = threading.Timer((time.perf_counter() - t) / 3, os.kill, (pid, signal.SIGKILL))
    killer.start()
    got = pool.rollouts(policy.model.state_dict(), 0, INDICES, SETTINGS, seed=0, shards=3)
    killer.join()
    assert pool.replaced == 1
    _same(got, expected)  # the full batch, and the same episodes


def test_stale_weights_are_refused(cluster, reference, pool):
    policy, _ = reference
    w = pool.workers[1]
    ray.get(w.set_weights.remote(3, policy.model.state_dict()))
    with pytest.raises(ray.exceptions.RayTaskError, match="holding v3"):
        ray.get(w.run.remote(4, INDICES, (0, 1), SETTINGS, 0, 0))


def test_training_on_ray_equals_training_in_process(cluster, tmp_path):
    """Two iterations with 2 Ray workers and in process with the same 2 shards: the same
    rollouts, so the same metrics."""
    sets = ["task.name=addition", "rollout.prompts=4", "rollout.group_size=4",
            "train.iterations=2", "train.eval_every=0", "train.progress=false",
            "train.checkpoint_every=0", "rollout.shards=2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(build_config({}, sets), tmp_path / "local")
        train(build_config({}, [*sets, "rollout.ray=auto", "rollout.workers=2"]),
              tmp_path / "ray")
    finally:
        torch.set_num_threads(threads)
    rows = {n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").open()]
            for n in ("local", "ray")}
    assert [r["ray/workers"] for r in rows["ray"]] == [2, 2]
    for a, b in zip(rows["local"], rows["ray"]):
        for k in ("world/tokens", "rollout/success", "rollout/action_tokens_mean"):
            assert a[k] == b[k], k
        assert a["loss/policy"] == pytest.approx(b["loss/policy"], abs=1e-6)


@pytest.mark.parametrize("source", ["value", "adjudicator"])
def test_credit_on_a_worker_equals_credit_in_process(cluster, tmp_path, source):
    """`credit.on_workers: [value]` (or the adjudicators): the source's models live, train and
    predict in its own actor, seeded as the trainer seeds its own, so two iterations give the
    in-process run's credit; the checkpoint holds the actor's models, and a resumed run loads
    them back there."""
    sets = ["task.name=addition", "rollout.prompts=4", "rollout.group_size=4",
            "train.iterations=2", "train.eval_every=0", "train.progress=false",
            "train.checkpoint_every=0", "rollout.shards=2", f"credit.sources={{{source}: 1.0}}"]
    remote = [*sets, "rollout.ray=auto", "rollout.workers=2", f"credit.on_workers=[{source}]"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(build_config({}, sets), tmp_path / "local")
        train(build_config({}, remote), tmp_path / "ray")
        train(build_config({}, [*remote, "train.iterations=3"]), tmp_path / "ray", resume=True)
    finally:
        torch.set_num_threads(threads)
    rows = {n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").open()]
            for n in ("local", "ray")}
    assert [r["iteration"] for r in rows["ray"]] == [0, 1, 2]
    own = [k for k in rows["local"][-1] if k.startswith(f"credit/{source}/")]
    assert own and all(k in rows["ray"][2] for k in own)
    for a, b in zip(rows["local"], rows["ray"]):
        assert a["rollout/success"] == b["rollout/success"]
        for k in (*own, "credit/adv_std", "loss/policy"):
            if a[k] is None or b[k] is None:  # undefined in both (explained variance of
                assert a[k] == b[k], k         # constant returns), or a real mismatch
                continue
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-6), k
    from clicker.train.checkpoint import latest_checkpoint, load_trainer_state

    local = load_trainer_state(latest_checkpoint(tmp_path / "local"))["credit"][source]
    ray_state = torch.load(next((tmp_path / "ray" / "checkpoints").glob("iter-000001/"
                                                                        "trainer_state.pt")),
                           weights_only=False)["credit"][source]
    assert local.keys() == ray_state.keys() and local  # the worker's models were saved


def test_on_workers_needs_ray_and_named_sources(tmp_path):
    with pytest.raises(ValueError, match="does not"):
        build_config({}, ["credit.on_workers=[value]"])  # grpo is the only source
    cfg = build_config({}, ["credit.sources={value: 1.0}", "credit.on_workers=[value]",
                            "train.progress=false"])
    with pytest.raises(ValueError, match="set rollout.ray"):
        train(cfg, tmp_path / "run")


def test_dyna_with_the_world_model_on_a_worker_dreams_the_in_process_dreams(cluster, tmp_path):
    """Under `rollout.ray`, Dyna's world model trains and dreams in its own actor, seeded as the
    trainer seeds its own generator (which, with shards, only dreams use): the same dreams, so
    the same imagined tokens and metrics, as in process; planning on Ray is refused."""
    sets = ["task.name=addition", "rollout.prompts=4", "rollout.group_size=4",
            "train.iterations=3", "train.eval_every=0", "train.progress=false",
            "train.checkpoint_every=0", "rollout.shards=2", "dream.dyna=true",
            "dream.warmup_iterations=1", "dream.dyna_prompts=2", "dream.min_confidence=0",
            "dream.wm_steps=4"]
    remote = [*sets, "rollout.ray=auto", "rollout.workers=2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = train(build_config({}, sets), tmp_path / "local")
        b = train(build_config({}, remote), tmp_path / "ray")
    finally:
        torch.set_num_threads(threads)
    assert a["imagined_tokens"] == b["imagined_tokens"] > 0
    assert a["world_tokens"] == b["world_tokens"]
    rows = {n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").open()]
            for n in ("local", "ray")}
    dyna = [k for k in rows["local"][-1] if k.startswith(("dream/", "wm/"))]
    assert "dream/dyna/episodes" in dyna and rows["ray"][-1]["dream/dyna/episodes"] == 8
    for x, y in zip(rows["local"], rows["ray"]):
        for k in [*dyna, "loss/policy"]:
            assert x.get(k) == pytest.approx(y.get(k), rel=1e-4, abs=1e-6), k
    with pytest.raises(ValueError, match="dream.plan"):
        train(build_config({}, [*remote, "dream.plan=true"]), tmp_path / "plan")
