"""Extinction figure of the clicker: how many value updates until a state whose reward was removed
has lost half of its value.

Real episodes of the built-in tiny model on short keydoor; the successful ones are kept. Phase 1
(acquisition): the value model trains on them with their real reward (1.0) until V(s_0) >= 0.8.
Phase 2 (extinction): the same episodes, reward removed (0.0); count the updates until the mean
V(s_0) falls to half of its level at the switch. One "update" is one `ValueCredit.fit` call
(`value.epochs` passes over the batch), i.e. one training iteration's worth of value learning.

Run: `python benchmarks/extinction.py` (about a minute on 2 CPU cores); writes
benchmarks/results/extinction.json and extinction.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from clicker.core.config import ValueConfig
from clicker.core.returns import td_lambda_targets
from clicker.core.types import Batch
from clicker.credit import CreditContext
from clicker.credit.value import ValueCredit, extinction_updates, first_action_index
from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks import make_world

VARIANTS = {  # name -> ValueConfig overrides
    "separate, lambda=1 (MC)": {"model": "separate", "lam_critic": 1.0},
    "separate, lambda=0.5": {"model": "separate", "lam_critic": 0.5},
    "head, lambda=1 (MC)": {"model": "head", "lam_critic": 1.0},
}


def acquire(credit: ValueCredit, batch: Batch, level: float, max_updates: int) -> tuple[int, list]:
    first = first_action_index(batch.action_mask)
    rows = torch.arange(len(first))
    trace = []
    for n in range(1, max_updates + 1):
        v = credit.values(batch)
        mask = batch.action_mask.to(v.device)
        credit.fit(batch, td_lambda_targets(batch.token_rewards.to(v.device), v, mask,
                                            credit.cfg.gamma, credit.cfg.lam_critic))
        trace.append(float(credit.values(batch).cpu()[rows, first].mean()))
        if trace[-1] >= level:
            return n, trace
    return max_updates, trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--max-updates", type=int, default=300)
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args()
    torch.manual_seed(0)
    policy = Policy.load(None)
    world = make_world("keydoor", rooms=2)
    gen = torch.Generator().manual_seed(0)
    eps = run_episodes(policy, world, "train", list(range(16)), RolloutSettings(group_size=4), gen)
    kept = [e for e in eps if e.success]
    batch = Batch.from_episodes(kept, policy.pad_id)
    print(f"{len(kept)} successful episodes of {len(eps)} (keydoor rooms=2)")
    results, traces = {}, {}
    for name, kw in VARIANTS.items():
        torch.manual_seed(0)
        credit = ValueCredit(ValueConfig(lr=args.lr, **kw), CreditContext(policy))
        n_acq, up = acquire(credit, batch, 0.8, args.max_updates)
        n_ext, down = extinction_updates(credit, batch, max_updates=args.max_updates)
        results[name] = {"acquisition_updates": n_acq, "extinction_half_updates": n_ext,
                         "v_s0_at_switch": down[0], "v_s0_final": down[-1]}
        traces[name] = up + down[1:]
        print(f"{name:28s} acquisition to 0.8: {n_acq:4d} updates   "
              f"extinction to half: {n_ext if n_ext is not None else '>' + str(args.max_updates)}"
              f" updates (V(s0) {down[0]:.2f} -> {down[-1]:.2f})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "extinction.json").write_text(json.dumps(
        {"lr": args.lr, "episodes": len(kept), "results": results, "traces": traces}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, tr in traces.items():
        ax.plot(range(1, len(tr) + 1), tr, label=name)
        ax.axvline(results[name]["acquisition_updates"] + 0.5, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("value updates (reward removed after the dotted line)")
    ax.set_ylabel("mean V(s0) of the rewarded episodes")
    ax.set_title("The clicker: acquisition and extinction")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "extinction.png", dpi=110)
    print(f"wrote {out / 'extinction.json'} and {out / 'extinction.png'}")


if __name__ == "__main__":
    main()
