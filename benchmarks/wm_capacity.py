"""Issue 7 probe, offline: can the tiny world model learn keydoor_long's rules at all, given
one whole run's worth of real episodes and as much training as it wants?

keydoor_long's layouts (3 rooms) all have one shape: the start room is the middle of a
corridor with the locked door on one side and the key room (one exit, the way back) on the
other; the goal is behind the door. So every reply is a function of the transcript so far except
the key room's label (the replay check ignores observations' text: it compares return and end).
A world model that learned the rules would replay every held-out episode right.

All of `benchmarks/wm_replay_probe.py`'s 24 cached batches of the initial policy's train
episodes (~190k tokens, about a 160k-token run's data) go into the buffer at once, then the
model trains in chunks of `steps` minibatches; after each chunk: the replay match over 64 test
episodes (all, and the successful ones), teacher-forced replies right up to room labels by
kind of real step, and the mean training loss.

    python benchmarks/wm_capacity.py '{"steps": 250, "lr": 5e-4, "augment": 1.0}' 8

(the JSON is `WorldModelConfig`'s fields, buffer raised to hold every episode; the second
argument is the number of chunks; then `fresh` starts the world model from random
weights of the policy's shape instead of a copy of the policy, and `init=INIT` from a
`dream.wm_init` entry instead (`init=words`: a fresh LM that reads words), and `show=KIND`
prints every wrong teacher-forced reply of that kind of step (`show=reached the goal`); one
thread, CPU; `train=N` also scores the goal steps of the first N successful training
episodes; `more=K` adds K batches of train episodes on further layouts, played once and
cached in runs/wm_probe_moreK.pt: K=24 doubles the data.) Goal steps are counted apart by
where the door's state was last written: in the observation just before the move through the
door, or further back. Each chunk also prints where the unmatched replays first went wrong
(as `benchmarks/wm_episode_replay.py`, with one missed goal episode's real and dreamed
transcripts) and the rewardless steps whose teacher-forced reply claimed a reward;
`quiet=T1,T2` also prints, for each `event_threshold` Ti, the replay match, goal episodes, goal
steps and false goals with doubted events written again as quiet replies, from chunk
`quiet_from=N` on (1)."""
import json
import re
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import torch

from clicker.dream.transcript import (
    Prediction,
    Transition,
    episode_transitions,
    format_reply,
)
from clicker.dream.world import DreamWorld
from clicker.dream.world_model import WorldModel, WorldModelConfig
from clicker.rollout.runner import RolloutSettings, run_episodes

sys.path.insert(0, "benchmarks")
from wm_episode_replay import kind, replay_steps
from wm_replay_probe import policy, probe_episodes, world

TEST = 64


def blind(text: str) -> str:
    """Observation text with room labels masked (a new room's label cannot be known)."""
    return re.sub(r"R\d+", "R#", text)


def is_right(p: Prediction, t: Transition) -> bool:
    """The greedy reply has the real reward and end, and the real text up to room labels."""
    return (p.ok and p.reward == t.reward and p.done == t.done
            and blind(p.observation) == blind(t.observation))


def fresh_weights(model: torch.nn.Module, seed: int) -> None:
    """Random weights of the same shape in place (norms 1, the rest N(0, 0.02), as Llama
    initialises; `init_weights()` leaves an already initialised model as it is)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, w in model.named_parameters():
            w.fill_(1.0) if "norm" in name else w.normal_(0.0, 0.02)


def teacher_forced(wm: WorldModel, test, show: str = "") -> dict[str, str]:
    """Greedy replies right up to room labels (header and `blind` text) by kind of real step:
    'right/all', and 'false goal': the rewardless steps whose reply claimed a reward (a model
    that pays every move gets the goal steps right for nothing). `show`: print each wrong reply
    of that kind (its last action, the real and the predicted reply)."""
    right, seen = Counter(), Counter()
    false = 0
    for e in test:
        ts = episode_transitions(e, 20, wm.history_cap)
        preds = wm.predict_histories([list(t.history) for t in ts])
        for i, (t, p, turn) in enumerate(zip(ts, preds, e.turns)):
            k = kind(turn.feedback)
            if k == "reached the goal":  # the door's state in the last observation, or before
                last = e.turns[i - 1].observation if i else e.prompt
                k += (" (door in last obs)" if re.search(r"door [nsew] open", last)
                      else " (door further back)")
            seen[k] += 1
            ok = is_right(p, t)
            right[k] += ok
            false += t.reward == 0 and p.ok and p.reward > 0
            if show and k.startswith(show) and not ok:
                before = " | ".join(policy.tokenizer.decode(list(t.history)).splitlines()[-3:])
                real = format_reply(t.reward, t.done, t.observation)
                dreamt = format_reply(p.reward, p.done, p.observation) if p.ok else "malformed"
                print(f"    {before!r}: real {real!r}, dreamt {dreamt!r}", flush=True)
    out = {k: f"{right[k]}/{n}" for k, n in seen.most_common()}
    rewardless = sum(n for k, n in seen.items() if not k.startswith("reached the goal"))
    return out | {"false goal": f"{false}/{rewardless}"}


def option(name: str, default: str) -> str:
    """The value of a `NAME=VALUE` argument after the first two, or `default`."""
    return next((a[len(name) + 1:] for a in sys.argv[3:] if a.startswith(name + "=")), default)


def setup(chunks: int) -> tuple[dict, WorldModel, int]:
    """The cached episodes, a world model from the command line (config JSON, buffer raised
    to hold everything; `fresh` weights when asked) and the number of chunks."""
    eps = probe_episodes()
    cfg = WorldModelConfig(**(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}))
    init = option("init", "policy")
    wm = WorldModel.from_policy(policy, replace(cfg, buffer=10**6), max_turns=20,
                                symmetry=world.symmetry, init=init, world=world)
    if "fresh" in sys.argv[3:]:
        fresh_weights(wm.model, cfg.seed)
    return eps, wm, int(sys.argv[2]) if len(sys.argv) > 2 else chunks


def more_episodes(batches: int) -> list:
    """`batches` more batches of the initial policy's train episodes, on the layouts after the
    cached ones (4 prompts x 8 each, as `probe_episodes`), played once and cached."""
    if batches == 0:
        return []
    path = Path(f"runs/wm_probe_more{batches}.pt")
    if path.exists():
        return torch.load(path, weights_only=False)
    g, settings = torch.Generator().manual_seed(1), RolloutSettings(group_size=8, max_turns=20)
    first = 4 * len(probe_episodes()["train"])
    out = [run_episodes(policy, world, "train", list(range(first + 4 * b, first + 4 * b + 4)),
                        settings, generator=g) for b in range(batches)]
    torch.save(out, path)
    return out


def thresholded(wm: WorldModel, dream: DreamWorld, test, threshold: float) -> str:
    """The replay match, goal episodes replayed and teacher-forced goal steps and false goals
    with `event_threshold` at `threshold`, and how many event replies it wrote again as quiet."""
    cfg, before = wm.cfg, wm.quieted
    wm.cfg = replace(cfg, event_threshold=threshold)
    try:
        done, why, _ = replay_steps(dream, test, show=False)
        tf = teacher_forced(wm, test)
    finally:
        wm.cfg = cfg
    goals = [r for r in done if r.real_return > 0]
    first = ", ".join(f"{how}@{k} {count}" for (how, k), count in why.most_common(4))
    return (f"replay match {sum(r.match for r in done) / len(done):.2f}  goal episodes "
            f"{sum(r.match for r in goals)}/{len(goals)}  "
            f"{ {k: v for k, v in tf.items() if 'goal' in k} }  quieted {wm.quieted - before}"
            f"  first wrong: {first}")


def main() -> None:
    eps, wm, chunks = setup(8)
    show = option("show", "")
    cfg = wm.cfg
    more = int(option("more", "0"))
    for batch in eps["train"] + more_episodes(more):
        for e in batch:
            if ts := wm.own_transitions(episode_transitions(e, 20, wm.history_cap)):
                wm.add(ts)
    dream = DreamWorld(world, wm, policy)
    test = eps["test"][:TEST]
    n = int(option("train", "0"))
    train_goals = [e for batch in eps["train"] for e in batch if e.success][:n]
    print(cfg, f"buffer {wm.size} transitions; {sum(e.success for e in test)} of {len(test)} "
          "test episodes reach the goal", flush=True)
    quiet = [float(x) for x in option("quiet", "").split(",") if x]
    quiet_from = int(option("quiet_from", "1"))
    t0 = time.time()
    for c in range(chunks):
        loss = wm.fit()
        with torch.no_grad():
            done, why, _ = replay_steps(dream, test)
            tf = teacher_forced(wm, test, show)
            for threshold in quiet if c + 1 >= quiet_from else ():
                print(f"    event_threshold {threshold}: "
                      + thresholded(wm, dream, test, threshold), flush=True)
        goals = [r for r in done if r.real_return > 0]
        if train_goals:  # goal steps it trained on: fitted, or not even that
            fit = teacher_forced(wm, train_goals)
            print("    train goal steps " + str({k: v for k, v in fit.items() if "goal" in k}))
        print(f"steps {(c + 1) * cfg.steps:5d}  loss {loss:.4f}  replay match "
              f"{sum(r.match for r in done) / len(done):.2f}  goal episodes "
              f"{sum(r.match for r in goals)}/{len(goals)}  teacher-forced right up to labels {tf}  "
              f"{time.time() - t0:.0f}s", flush=True)
        first = ", ".join(f"{how}@{k} {count}" for (how, k), count in why.most_common(6))
        print(f"    replays' first wrong header: {first}", flush=True)


if __name__ == "__main__":
    main()
