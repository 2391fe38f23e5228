"""Issue 7 probe: does a run's learned world model predict the goal step? Greedy replies to rewarded
transitions in its buffer (trained on) and to real goal steps of fresh test episodes."""
import sys
from pathlib import Path

import torch

from clicker.dream.transcript import episode_transitions
from clicker.dream.world_model import WorldModel, WorldModelConfig
from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.keydoor import KeyDoor

torch.set_num_threads(1)
run = Path(sys.argv[1])
ck = max(run.rglob("trainer_state.pt"))
state = torch.load(ck, map_location="cpu", weights_only=False)
policy = Policy.load(None, device="cpu", dtype="float32")
wm = WorldModel.from_policy(policy, WorldModelConfig(), max_turns=20)
wm.load_state_dict(state["dream"]["world_model"])
goal = [t for g in wm.buffer for t in g if t.reward > 0]
near = [t for g in wm.buffer for t in g if t.reward == 0 and "open." in t.observation]
def rate(ts, name):
    ps = wm.predict_histories([list(t.history) for t in ts])
    print(name, len(ts), "predicted reward>0:", sum(p.reward > 0 for p in ps) / max(1, len(ts)),
          "exact:", sum(p.observation == t.observation and p.reward == t.reward for p, t in zip(ps, ts)) / max(1, len(ts)))
rate(goal[:64], "buffer goal steps")
rate(near[:64], "buffer door-open non-goal steps")
world = KeyDoor(rooms=3, max_turns=20)
eps = run_episodes(policy, world, "test", list(range(16)), RolloutSettings(group_size=8),
                   generator=torch.Generator().manual_seed(1))
test = [t for e in eps for t in episode_transitions(e, 20, wm.max_history)]
rate([t for t in test if t.reward > 0], "held-out goal steps")
rate([t for t in test if t.reward == 0][:128], "held-out other steps")
