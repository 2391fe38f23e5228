"""Issue 7 probe, offline: does the tiny world model learn keydoor's simplest rule, a move
along a listed exit, on the first step of an episode, where the room's description is the line
just before the action?

Takes the first transition of each of `benchmarks/wm_replay_probe.py`'s cached train episodes
(768 episodes of 96 start rooms: "R5: exits n,e. door e locked.\\n> e\\n" -> "door locked."),
trains a world model on those alone in chunks of `steps` minibatches, and after each chunk
prints, by kind of real step, how many greedy replies are right up to room labels on the first
steps of 400 test episodes and of 400 of the train episodes it trains on.

    python benchmarks/wm_first_step.py '{"steps": 200, "lr": 1e-3, "batch_size": 32,
        "augment": 1.0}' 5 [fresh]

(the JSON is `WorldModelConfig`'s fields; the second argument is the number of chunks; `fresh`
starts from random weights of the policy's shape instead of a copy of the policy; one thread,
CPU; ~2 min a chunk of 200.)"""
import sys
import time
from collections import Counter

import torch

from clicker.dream.transcript import episode_transitions
from clicker.dream.world_model import WorldModel

sys.path.insert(0, "benchmarks")
from wm_capacity import is_right, setup
from wm_episode_replay import kind

SHOWN = 400


def first_steps(wm: WorldModel, episodes) -> list:
    """(first transition, kind of its real step) of each episode that has one."""
    out = []
    for e in episodes:
        ts = episode_transitions(e, 20, wm.max_history)
        if ts:
            out.append((ts[0], kind(e.turns[0].feedback)))
    return out


def right_by_kind(wm: WorldModel, pairs) -> dict[str, str]:
    """Greedy replies `is_right` by kind of real step: 'right/all' (the 5 commonest kinds)."""
    preds = wm.predict_histories([list(t.history) for t, _ in pairs])
    right, seen = Counter(), Counter()
    for (t, k), p in zip(pairs, preds):
        seen[k] += 1
        right[k] += is_right(p, t)
    return {k: f"{right[k]}/{n}" for k, n in seen.most_common(5)}


def main() -> None:
    eps, wm, chunks = setup(5)
    cfg = wm.cfg
    train = first_steps(wm, [e for batch in eps["train"] for e in batch])
    for t, _ in train:
        wm.add([t])
    test = first_steps(wm, eps["test"])[:SHOWN]
    print(cfg, f"{len(train)} first steps", flush=True)
    t0 = time.time()
    for c in range(chunks):
        loss = wm.fit()
        with torch.no_grad():
            print(f"steps {(c + 1) * cfg.steps:5d}  loss {loss:.4f}  test "
                  f"{right_by_kind(wm, test)}  train {right_by_kind(wm, train[:SHOWN])}  "
                  f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
