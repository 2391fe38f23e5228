"""Scale-out: rollout throughput with 1 and 2 Ray workers, and update time with 1 and 2 training
processes (torchrun, gloo), side by side in one run, as speedup and parallel efficiency.

    python benchmarks/scaling.py [--out benchmarks/results/scaling.json]

Rollouts: one iteration of keydoor (2 rooms), 16 prompts x 4 episodes cut into 4 seeded shards,
sampled by a pool of Ray workers (1 torch thread each) on a local cluster; the same shards give
the same episodes whatever the pool size, so both pools do exactly the same work. Training: the
data-parallel update (`clicker.train.distributed`) of one batch of 192 addition episodes, 4
minibatches, under torchrun with 1 and 2 processes (1 thread each). Each timing is the best of
`--repeats`. Speedup = time(1) / time(2); efficiency = speedup / 2. On a 2-core machine nothing
else may run meanwhile, or the numbers measure the other load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def rollout_times(repeats: int) -> dict:
    import ray

    from clicker.models.policy import Policy
    from clicker.rollout.ray_workers import RayRollouts
    from clicker.rollout.runner import RolloutSettings

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"worker_niceness": 0})
    policy = Policy.load(None, device="cpu", dtype="float32")
    model = {"path": None, "device": "cpu", "dtype": "float32", "tiny_seed": 0,
             "tiny_recipe": "default"}
    task = {"name": "keydoor", "args": {"rooms": 2}}
    settings = RolloutSettings(group_size=4)
    indices = list(range(100, 116))
    out = {}
    try:
        for workers in (1, 2):
            pool = RayRollouts(model, task, workers=workers)
            ray.get([w.pid.remote() for w in pool.workers])  # started, models loaded
            best, tokens = float("inf"), 0
            for r in range(repeats):
                t = time.perf_counter()
                eps = pool.rollouts(policy.model.state_dict(), r, indices, settings, seed=0,
                                    shards=4)
                best = min(best, time.perf_counter() - t)
                tokens = sum(e.num_action_tokens for e in eps)
            pool.close()
            out[workers] = {"seconds": best, "episodes": len(eps), "action_tokens": tokens,
                            "tokens_per_s": tokens / best}
    finally:
        ray.shutdown()
    return out


def update_worker(path: str, repeats: int) -> None:
    """Under torchrun: time the data-parallel update; rank 0 writes the best time to `path`."""
    torch.set_num_threads(1)
    from clicker.core.config import UpdateConfig
    from clicker.core.types import Batch
    from clicker.models.policy import Policy
    from clicker.rollout.runner import RolloutSettings, run_episodes
    from clicker.tasks import make_world
    from clicker.train.distributed import DataParallel
    from clicker.train.update import policy_update

    dp = DataParallel.from_env()
    policy = Policy.load(None, device="cpu", dtype="float32")
    eps = run_episodes(policy, make_world("addition"), "train", list(range(48)),
                       RolloutSettings(group_size=4), torch.Generator().manual_seed(0))
    batch = Batch.from_episodes(eps, policy.pad_id)
    adv = torch.linspace(-1, 1, len(eps))[:, None] * batch.action_mask
    cfg = UpdateConfig(minibatches=4, lr=1e-5)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=cfg.lr)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        policy_update(policy, opt, batch, adv, cfg, generator=torch.Generator().manual_seed(0),
                      dp=dp)
        best = min(best, time.perf_counter() - t)
    if dp is None or dp.main:
        Path(path).write_text(json.dumps({"seconds": best, "episodes": len(eps)}))


def update_times(repeats: int) -> dict:
    out = {}
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    for procs in (1, 2):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "t.json"
            subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc_per_node", str(procs), __file__, "--update-worker",
                            str(path), "--repeats", str(repeats)], check=True, env=env,
                           capture_output=True)
            out[procs] = json.loads(path.read_text())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling.json"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--update-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.update_worker:
        update_worker(args.update_worker, args.repeats)
        return
    torch.set_num_threads(1)
    roll = rollout_times(args.repeats)
    upd = update_times(args.repeats)
    result = {"cpus": os.cpu_count(), "rollout": roll, "update": upd}
    for name, t in (("rollout", roll), ("update", upd)):
        speedup = t[1]["seconds"] / t[2]["seconds"]
        result[f"{name}_speedup"] = speedup
        result[f"{name}_efficiency"] = speedup / 2
        print(f"{name}: 1 -> {t[1]['seconds']:.2f} s, 2 -> {t[2]['seconds']:.2f} s; "
              f"speedup {speedup:.2f}x, parallel efficiency {speedup / 2:.0%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
