"""Issue 7 probe, offline: how often does a learned world model replay a whole held-out
keydoor_long episode right, and where does it first go wrong?

Uses `benchmarks/wm_replay_probe.py`'s cached episodes of the initial tiny policy (24 batches
of 4 prompts x 8 train episodes, 24 x 8 test episodes; played once into
runs/wm_probe_eps.pt), trains a world model batch by batch as a run would
(`WorldModel.observe`), and every 6 batches replays 64 test episodes' real actions open loop in
the dream (`clicker.dream.replay`). It prints the replay match (the dream ends at the real turn
with the real return), and for the episodes that do not match, the kind of real step at which
the dream's reply first differed from the real one (the env's feedback: "moved", "no exit",
"reached the goal", ...) and how: a wrong reward or end (`header`), a malformed reply, or the
same header with other observation text (`text`, counted only when no header went wrong).

    python benchmarks/wm_episode_replay.py '{"steps": 64, "lr": 3e-4, "reward_weight": 3,
        "event_share": 0.5, "augment": 1.0}'

(the JSON is `WorldModelConfig`'s fields; an optional second argument stops after that many
batches; one thread, CPU)."""
import json
import sys
import time
from collections import Counter

import torch

from clicker.dream.replay import Replayed, replay
from clicker.dream.transcript import episode_transitions
from clicker.dream.world import DreamWorld
from clicker.dream.world_model import WorldModel, WorldModelConfig

sys.path.insert(0, "benchmarks")
from wm_replay_probe import policy, probe_episodes, world

EVERY, TEST = 6, 64


def kind(feedback: str) -> str:
    """The real step's kind from the env's feedback ("moved e to R3" -> "moved")."""
    for k in ("moved", "no exit", "door is locked", "took the key", "no key", "no door",
              "already open", "need the key", "opened", "reached the goal", "bad action"):
        if feedback.startswith(k):
            return k
    return feedback.split(";")[0][:16]


def replay_steps(dream: DreamWorld, episodes, show: bool = True
                 ) -> tuple[list[Replayed], Counter, Counter]:
    """Replay each episode's actions in the dream; the Replayed results and Counters of
    (how, kind) of each unmatched episode's first reply with a wrong header and of its first
    reply with other text. `show`: print one missed goal episode's transcripts."""
    first: list[tuple[str, str] | None] = [None] * len(episodes)
    text: list[tuple[str, str] | None] = [None] * len(episodes)
    envs = {}

    def watch(i, t, s, env) -> None:
        real, envs[i] = episodes[i].turns[t], env
        k = kind(real.feedback)
        if first[i] is None and (s.reward != real.reward
                                 or s.done != (t == len(episodes[i].turns) - 1)):
            first[i] = ("malformed" if env.malformed else "header", k)
        if text[i] is None and s.observation != real.observation:
            text[i] = ("text", k)

    done = replay(dream, episodes, watch)
    missed = [i for i, r in enumerate(done) if r.real_return > 0 and not r.match]
    if missed and show:  # one goal episode the dream missed: its real and dreamed transcripts
        i = missed[0]
        print("real: ", repr(episodes[i].prompt + "".join(t.action + t.observation
                                                           for t in episodes[i].turns)))
        print("dream:", repr(dream.policy.decode(envs[i].history)))
    why = Counter(first[i] or ("none", "-") for i, r in enumerate(done) if not r.match)
    why_text = Counter(text[i] or ("none", "-") for i, r in enumerate(done) if not r.match)
    return done, why, why_text


def main() -> None:
    eps = probe_episodes()
    cfg = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    wm = WorldModel.from_policy(policy, WorldModelConfig(**cfg), max_turns=20,
                                symmetry=world.symmetry)
    dream = DreamWorld(world, wm, policy)
    stop = int(sys.argv[2]) if len(sys.argv) > 2 else len(eps["train"])
    test = eps["test"][:TEST]
    t0 = time.time()
    print(cfg, f"{sum(e.success for e in test)} of {len(test)} test episodes reach the goal")
    for i, batch in enumerate(eps["train"][:stop]):
        wm.observe(batch)
        if (i + 1) % EVERY == 0:
            with torch.no_grad():
                done, why, why_text = replay_steps(dream, test)
            match = sum(r.match for r in done) / len(done)
            goals = [r for r in done if r.real_return > 0]
            steps = [t for e in test if e.success
                     for t in episode_transitions(e, 20, wm.max_history) if t.reward > 0]
            preds = wm.predict_histories([list(t.history) for t in steps])
            print(f"teacher-forced goal steps right: {sum(p.reward > 0 and p.done for p in preds)}"
                  f"/{len(steps)}")
            print(f"batch {i + 1:2d}  replay match {match:.2f}  goal episodes "
                  f"{sum(r.match for r in goals)}/{len(goals)}  first wrong: "
                  + ", ".join(f"{how}@{k} {n}" for (how, k), n in why.most_common(6))
                  + "; first other text: "
                  + ", ".join(f"@{k} {n}" for (how, k), n in why_text.most_common(6))
                  + f"  {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
