"""Issue 7 probe, offline: do world models trained on the same episodes with different seeds
(replay order, renamings) agree on true goals more than on false ones?

Trains `n` members batch by batch on wm_replay_probe.py's cached episodes of the initial policy
(played on first use) and prints, every 6 batches, each member's greedy recall of the held-out
goal steps and share of 400 held-out rewardless steps it calls a goal, and the shares all
members call a goal (what an ensemble that keeps only agreed goals would keep).

    python benchmarks/wm_ensemble_probe.py '{"steps": 64, "batch_size": 32, "micro_batch": 32,
        "lr": 3e-4, "buffer": 4096, "reward_weight": 3, "event_share": 0.5, "augment": 1.0}' 12 3

(arguments: `WorldModelConfig` JSON without seed, batches, members, and optionally the members'
starting checkpoints, comma-separated `dream.wm_init` entries (default: all `policy`); ~50 s a
member and batch on one thread.) Members from different tiny seeds (issue 7, ninth round):

    python benchmarks/wm_ensemble_probe.py '{...as above...}' 12 3 tiny:0,tiny:1,tiny:2

Member s trains with seed s (replay order, renamings), plus `CLICKER_PROBE_SEED` where set (a
second draw of the same ensemble); `CLICKER_PROBE_DEVICE=cuda` trains on the GPU."""
import json
import os
import sys
import time

from wm_replay_probe import policy, probe_episodes, world

from clicker.dream.transcript import episode_transitions
from clicker.dream.world_model import WorldModel, WorldModelConfig

eps = probe_episodes()
cfg, stop = json.loads(sys.argv[1]), int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 2
inits = sys.argv[4].split(",") if len(sys.argv) > 4 else ["policy"] * n
offset = int(os.environ.get("CLICKER_PROBE_SEED", "0"))
wms = [WorldModel.from_policy(policy, WorldModelConfig(**cfg, seed=s + offset), max_turns=20,
                              symmetry=world.symmetry, init=inits[s], world=world)
       for s in range(n)]
test = [t for e in eps["test"] for t in episode_transitions(e, 20, wms[0].max_history)]
goal = [t for t in test if t.reward > 0]
quiet = [t for t in test if t.reward == 0][:400]


def called(ts) -> tuple[list[float], float]:
    """(each member's share of ts it calls a goal, the share all members call one)."""
    calls = [[p.reward > 0 for p in w.predict_histories([list(t.history) for t in ts])]
             for w in wms]
    return [sum(c) / len(ts) for c in calls], sum(all(x) for x in zip(*calls)) / len(ts)


t0 = time.time()
for i, batch in enumerate(eps["train"][:stop]):
    for w in wms:
        w.observe(batch)
    if (i + 1) % 6 == 0:
        (g_each, g_all), (q_each, q_all) = called(goal), called(quiet)
        print(f"batch {i + 1} goal recall each {[round(x, 2) for x in g_each]} all {g_all:.2f} "
              f"| false goals each {[round(x, 3) for x in q_each]} all {q_all:.3f} "
              f"| {time.time() - t0:.0f}s", flush=True)
