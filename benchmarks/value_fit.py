"""How fast can the clicker's value model learn long keydoor? Held-out explained variance per update.

Samples training batches (4 prompts x 8) and a held-out set from the initial tiny policy on
keydoor (3 rooms, 20 turns), then fits each value-model variant batch by batch, as training does,
and after each update measures the explained variance of V at turn starts against the returns on
the held-out episodes. A table on (has key, door open, turn) fitted on all training episodes is
the ceiling of what the state itself explains. The policy is frozen here (RL moves it little in
the benchmark's 25 iterations), so this isolates value learning from policy learning.

    .venv/bin/python benchmarks/value_fit.py            # ~6 min on 2 cores
    writes benchmarks/results/value_fit.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch

from clicker.core.config import ValueConfig
from clicker.core.returns import explained_variance, returns_to_go
from clicker.core.types import Batch
from clicker.credit import CreditContext
from clicker.credit.value import ValueCredit
from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks import make_world

VARIANTS: dict[str, dict] = {
    "separate, token steps, lr 1e-4, 2 epochs (value)": {},
    "separate, turn steps, lr 1e-3, replay 3 (value_turn)": {
        "steps": "turn", "lr": 1e-3, "replay": 3, "epochs": 1},
    "head, turn steps, lr 1e-3, replay 3": {
        "model": "head", "steps": "turn", "lr": 1e-3, "replay": 3, "epochs": 1},
    "head, turn steps, lr 3e-3, replay 3, 2 epochs": {
        "model": "head", "steps": "turn", "lr": 3e-3, "replay": 3, "epochs": 2},
}


def episodes(policy: Policy, world, n_batches: int, prompts: int, group: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    settings = RolloutSettings(group_size=group)
    out = []
    for i in range(n_batches):
        idx = [seed * 1_000_003 + i * prompts + j for j in range(prompts)]
        out.append(run_episodes(policy, world, "train", idx, settings, gen))
    return out


def state_table_ev(train: list, held: list) -> float:
    """Explained variance of a (has key, door open, turn) table of mean returns (the ceiling)."""
    def states(e):
        key = door = False
        for t, turn in enumerate(e.turns):
            yield (key, door, t)
            key = key or turn.feedback.startswith("took the key")
            door = door or turn.feedback.startswith("opened the door")

    total, count = defaultdict(float), defaultdict(int)
    for e in (e for b in train for e in b):
        for s in states(e):
            total[s] += e.reward
            count[s] += 1
    mean = sum(e.reward for b in train for e in b) / sum(len(b) for b in train)
    pred, target = [], []
    for e in held:
        for s in states(e):
            pred.append(total[s] / count[s] if count[s] else mean)
            target.append(e.reward)
    return explained_variance(torch.tensor(pred), torch.tensor(target))


def held_out_ev(credit: ValueCredit, batch: Batch) -> float:
    # judged at turn starts, whatever time axis the variant trains on
    t = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
         "action_mask": batch.action_mask, "token_rewards": batch.token_rewards,
         "starts": credit.step_starts(batch)}
    ax = credit.axis(t, credit.values(t))
    g = returns_to_go(ax.rewards, ax.mask, 1.0)
    return explained_variance(ax.values[ax.mask], g[ax.mask])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--held-out", type=int, default=128)
    ap.add_argument("--out", default="benchmarks/results/value_fit.json")
    a = ap.parse_args()
    world = make_world("keydoor", rooms=3, max_turns=20)
    policy = Policy.load(None)
    t0 = time.time()
    train = episodes(policy, world, a.batches, 4, 8, seed=1)
    held = [e for b in episodes(policy, world, a.held_out // 32, 4, 8, seed=2) for e in b]
    hb = Batch.from_episodes(held, policy.pad_id)
    print(f"sampled {sum(map(len, train)) + len(held)} episodes in {time.time() - t0:.0f}s; "
          f"train success {sum(e.reward for b in train for e in b) / sum(map(len, train)):.3f}")
    ceiling = state_table_ev(train, held)
    print(f"table on (has key, door open, turn): held-out explained variance {ceiling:.3f}")
    results = {"ceiling_state_table": ceiling, "variants": {}}
    for name, kw in VARIANTS.items():
        torch.manual_seed(0)
        credit = ValueCredit(ValueConfig(**kw), CreditContext(policy, world))
        trace, t1 = [held_out_ev(credit, hb)], time.time()
        for b in train:
            credit(Batch.from_episodes(b, policy.pad_id))
            trace.append(held_out_ev(credit, hb))
        results["variants"][name] = {"config": kw, "held_out_ev": trace,
                                     "seconds": time.time() - t1}
        print(f"{name:52s} " + " ".join(f"{x:+.3f}" for x in trace[1:]) +
              f"   ({time.time() - t1:.0f}s)")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
