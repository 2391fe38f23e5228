"""An upper bound for the clicker on long keydoor: what if V knew the state exactly?

`value_turn` learns V(prefix) from transcripts, and on long keydoor it barely learns
(`benchmarks/value_fit.py`). This replaces the learned V by an oracle-state table: V(s) = the
mean return, over every episode seen so far, of the turns that started in the same (has key,
door open, turn index) state, read from the environment's feedback. Everything else is
`value_turn`'s: GAE(0.95) over turns, whitened, every token of a turn sharing its advantage. If
even this does not beat GRPO by 3x in world tokens, the task and budget, not the value model,
are what limit dense credit there. Benchmark-only: the table needs the env's state, which a
real task does not give.

    .venv/bin/python benchmarks/oracle_value.py      # 5 seeds, ~25 min on 2 cores
    writes benchmarks/results/oracle_value.json (GRPO and value_turn rows come from
    benchmarks/results/sample_efficiency/keydoor_long.json, the same settings and seeds)
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from clicker.core.returns import from_steps, gae, step_index, whiten
from clicker.core.types import Batch
from clicker.credit import CREDITS, CreditOutput, CreditSource
from clicker.experiment.compare import load_spec, make_config
from clicker.experiment.stats import iqm, pooled_iqm, stratified_bootstrap_ci, tokens_to_target
from clicker.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
METHOD = "oracle_value"


def states(episode) -> list[tuple[bool, bool, int]]:
    """(has key, door open, turn index) at the start of each turn."""
    key = door = False
    out = []
    for t, turn in enumerate(episode.turns):
        out.append((key, door, t))
        key = key or turn.feedback.startswith("took the key")
        door = door or turn.feedback.startswith("opened the door")
    return out


class OracleValueCredit(CreditSource):
    name = METHOD

    def __init__(self, lam: float = 0.95):
        self.lam = lam
        self.total: dict = defaultdict(float)
        self.count: dict = defaultdict(int)

    def __call__(self, batch: Batch) -> CreditOutput:
        mask = batch.action_mask
        starts = torch.zeros(mask.shape, dtype=torch.bool)
        for b, e in enumerate(batch.episodes):
            for turn in e.turns:
                starts[b, turn.action_span[0]] = True
        sid, _, valid = step_index(starts & mask)
        S = valid.shape[1]
        v, r = torch.zeros(len(batch.episodes), S), torch.zeros(len(batch.episodes), S)
        for b, e in enumerate(batch.episodes):
            for i, (s, turn) in enumerate(zip(states(e), e.turns, strict=True)):
                v[b, i] = self.total[s] / self.count[s] if self.count[s] else 0.0
                r[b, i] = turn.reward
        adv = whiten(from_steps(gae(r, v, valid, 1.0, self.lam), sid, mask), mask)
        for e in batch.episodes:  # learn the table after using it, as the value model does
            for s in states(e):
                self.total[s] += e.reward
                self.count[s] += 1
        return CreditOutput(adv * mask, {"credit/oracle_value/states": float(len(self.count))})

    def state_dict(self) -> dict:
        return {"total": dict(self.total), "count": dict(self.count)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.total.update(state["total"])
            self.count.update(state["count"])


CREDITS[METHOD] = lambda cfg, ctx: OracleValueCredit(cfg.value.lam_actor)  # in every process


def run(seed: int) -> None:
    from clicker.experiment.runs import run_one

    torch.set_num_threads(1)
    spec = load_spec(ROOT / "keydoor_long.yaml",
                     method_defs={METHOD: {"credit.sources": {METHOD: 1.0}}})
    cfg = make_config(spec, "keydoor_long", METHOD, seed)
    d = RESULTS / "oracle_value_runs" / f"seed{seed}"
    if not (d / "summary.json").is_file():
        with open(RESULTS / "oracle_value_runs" / f"seed{seed}.log", "w") as f:
            sys.stdout = sys.stderr = f
            run_one(cfg, d)


def main() -> None:
    (RESULTS / "oracle_value_runs").mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(run, range(5))
    record = json.loads((RESULTS / "sample_efficiency" / "keydoor_long.json").read_text())
    task = record["tasks"]["keydoor_long"]
    budget, target = task["budget"], task["target"]
    out = {"budget": budget, "target": target, "methods": {}}
    rows = {m: task["curves"][m] for m in ("grpo", "value_turn")}
    rows[METHOD] = []
    for seed in range(5):
        d = RESULTS / "oracle_value_runs" / f"seed{seed}"
        ev = [r for r in read_metrics(d) if "eval/success" in r]
        if (d / "final_eval.json").is_file():  # the last iteration logged no eval
            ev.append(json.loads((d / "final_eval.json").read_text()))
        rows[METHOD].append({"seed": seed, "world_tokens": [r["world/tokens"] for r in ev],
                             "success": [r["eval/success"] for r in ev]})
    for m, curves in rows.items():
        final = np.array([c["success"][-1] for c in curves])
        ttt = np.array([tokens_to_target(c["world_tokens"], c["success"], target) for c in curves])
        ttt = np.where(np.isfinite(ttt), ttt, 2 * budget)
        ci = stratified_bootstrap_ci({"k": final}, pooled_iqm)
        out["methods"][m] = {
            "final_success": {"per_seed": final.tolist(), "iqm": float(ci.point),
                              "ci": [float(ci.low), float(ci.high)]},
            "tokens_to_target": {"per_seed": ttt.tolist(), "iqm": float(iqm(ttt))},
            "reached": int((ttt < 2 * budget).sum()),
        }
        print(f"{m:14s} final {ci.point:.3f} [{ci.low:.3f}, {ci.high:.3f}] "
              f"{np.round(final, 3).tolist()}  "
              f"reached {out['methods'][m]['reached']}/5  tokens-to-target IQM {iqm(ttt):,.0f}")
    (RESULTS / "oracle_value.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
