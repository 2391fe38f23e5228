"""Issue 7 probe, offline: how fast does the world model learn keydoor_long's goal step?

Plays 24 batches of 4 prompts x 8 episodes of the initial tiny policy (train split) and 24 x 8
test episodes once (cached in runs/wm_probe_eps.pt), then trains a world model batch by batch
as a run would (`WorldModel.observe`) and prints, every 6 batches, its greedy recall of the
held-out goal steps, of the last goal steps it trained on, and the share of 96 held-out
rewardless steps it calls a reward (false goals) with their exact-match rate.

    python benchmarks/wm_replay_probe.py '{"steps": 16, "batch_size": 32, "micro_batch": 32,
        "lr": 3e-4, "buffer": 4096, "reward_weight": 10, "event_share": 0.5}'

(the JSON is `WorldModelConfig`'s fields, `augment` included: the share of training episodes
renamed by keydoor's symmetries; an optional second argument stops after that many batches;
~2 min to play the episodes, ~6 min to train at 16 steps a batch, one thread). The world
models train on CPU unless `CLICKER_PROBE_DEVICE` names another device (`cuda`); the episodes
are always played on CPU, so the cache is the same wherever the probe trains."""
import json
import os
import sys
import time
from pathlib import Path

import torch

from clicker.dream.transcript import episode_transitions
from clicker.dream.world_model import WorldModel, WorldModelConfig
from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.keydoor import KeyDoor

BATCHES, EVERY, QUIET = 24, 6, 96
torch.set_num_threads(1)
cache = Path("runs/wm_probe_eps.pt")
policy = Policy.load(None, device=os.environ.get("CLICKER_PROBE_DEVICE", "cpu"), dtype="float32")
world = KeyDoor(rooms=3, max_turns=20)


def probe_episodes() -> dict:
    """The probe's episodes of the initial policy, played once and cached: {"train": BATCHES
    batches of 4 prompts x 8, "test": 24 x 8}."""
    if cache.exists():
        return torch.load(cache, weights_only=False)
    player = Policy.load(None, device="cpu", dtype="float32")
    g, settings = torch.Generator().manual_seed(0), RolloutSettings(group_size=8, max_turns=20)
    eps = {"train": [run_episodes(player, world, "train", list(range(4 * b, 4 * b + 4)),
                                  settings, generator=g) for b in range(BATCHES)],
           "test": run_episodes(player, world, "test", list(range(24)), settings, generator=g)}
    cache.parent.mkdir(exist_ok=True)
    torch.save(eps, cache)
    return eps


def rates(wm: WorldModel, ts) -> tuple[float, float]:
    """(share predicted rewarding, share whose reward and observation are exact)."""
    ps = wm.predict_histories([list(t.history) for t in ts])
    n = max(1, len(ts))
    return (sum(p.reward > 0 for p in ps) / n,
            sum(p.observation == t.observation and p.reward == t.reward
                for p, t in zip(ps, ts)) / n)


def main() -> None:
    eps = probe_episodes()
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    wm = WorldModel.from_policy(policy, WorldModelConfig(**cfg), max_turns=20,
                                symmetry=world.symmetry)
    stop = int(sys.argv[2]) if len(sys.argv) > 2 else BATCHES
    test = [t for e in eps["test"] for t in episode_transitions(e, 20, wm.max_history)]
    goal = [t for t in test if t.reward > 0]
    quiet = [t for t in test if t.reward == 0][:QUIET]
    t0 = time.time()
    print(cfg)
    for i, batch in enumerate(eps["train"][:stop]):
        wm.observe(batch)
        if (i + 1) % EVERY == 0:
            trained = [t for g in wm.buffer for t in g if t.reward > 0][-48:]
            false, exact = rates(wm, quiet)
            print(f"batch {i + 1:2d}  held-out goal recall {rates(wm, goal)[0]:.2f} "
                  f"(n={len(goal)})  trained goal recall {rates(wm, trained)[0]:.2f}  "
                  f"false goals {false:.3f}  rewardless exact {exact:.2f}  "
                  f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
