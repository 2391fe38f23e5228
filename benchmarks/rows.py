"""Compare rows of several `clicker compare` results (one task), as the README's cross-round
tables do: per row, seeds reached, tokens-to-target IQM with its 95% CI, final success and AUC;
then each row's world-token ratio against a reference row, IQM(reference) / IQM(row) with a
stratified-bootstrap CI (above 1: the row needs fewer world tokens). Unreached seeds count as
2 x budget, as in the compare report. Rows must share budget and target; their tiny-model
fingerprints are printed so a mixed build shows, and a row whose seeds are not the reference's
is flagged. `--plot PNG` draws the rows' learning curves in one figure (the compare report's
panels: world tokens, imagined tokens, world model).

    python benchmarks/rows.py keydoor_long REF_RESULTS:METHOD RESULTS:METHOD [...] [--reps N]
        [--plot PNG]
e.g.
    python benchmarks/rows.py keydoor_long \\
        benchmarks/results/dream_fresh/results.json:value_turn_epochs7 \\
        benchmarks/results/dream_epochs_oracle/results.json:epochs7_dyna3_oracle \\
        benchmarks/results/dream_fresh/results.json:epochs7_dyna3_oracle_fresh
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from clicker.experiment.report import _colours, _plot_curves
from clicker.experiment.results import NEVER_REACHED_FACTOR, _iqm_ratio
from clicker.experiment.stats import auc, pooled_iqm, stratified_bootstrap_ci, tokens_to_target


def load_row(spec: str, task: str) -> dict:
    path, _, method = spec.rpartition(":")
    res = json.loads(Path(path).read_text())["tasks"][task]
    if method not in res["curves"]:
        raise SystemExit(f"{path}: no method {method!r} (has: {', '.join(res['curves'])})")
    curves = sorted(res["curves"][method], key=lambda c: c["seed"])
    budget, target = res["budget"], res["target"]
    ttt = np.array([tokens_to_target(c["world_tokens"], c["success"], target) for c in curves])
    ttt[ttt > budget] = math.inf
    prints = sorted(res.get("environments") or {}) or ["?"]  # keyed by weights fingerprint
    return {"name": f"{Path(path).parent.name}/{method}", "budget": budget, "target": target,
            "seeds": [c["seed"] for c in curves], "reached": int(np.isfinite(ttt).sum()),
            "ttt": np.where(np.isfinite(ttt), ttt, NEVER_REACHED_FACTOR * budget),
            "final": np.array([c["success"][-1] for c in curves]),
            "auc": np.array([auc(c["world_tokens"], c["success"], budget) for c in curves]),
            "prints": prints, "curves": curves}


def seed_warning(row: dict, ref: dict) -> str | None:
    """A line for a row whose seeds are not the reference's: its IQM, CI and ratio are over
    other seeds (one seed: the IQM is that seed and the CI a point), so read it per seed."""
    if row["seeds"] == ref["seeds"]:
        return None
    return (f"  warning: seeds {row['seeds']} are not the reference's {ref['seeds']}:\n"
            "    its IQMs, CIs and ratio are over other seeds" + (
                " (one seed: no spread; compare it per seed)" if len(row["seeds"]) == 1 else ""))


def ci_of(x: np.ndarray, reps: int) -> str:
    c = stratified_bootstrap_ci({"t": x}, pooled_iqm, reps=reps)
    return f"{c.point:.3g} [{c.low:.3g}, {c.high:.3g}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task")
    ap.add_argument("rows", nargs="+", help="RESULTS_JSON:METHOD; the first is the reference")
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--plot", type=Path, help="write the rows' learning curves to this PNG")
    args = ap.parse_args()
    rows = [load_row(s, args.task) for s in args.rows]
    if len({(r["budget"], r["target"]) for r in rows}) > 1:
        raise SystemExit("rows differ in budget or target: "
                         + ", ".join(f"{r['name']} {r['budget']}/{r['target']}" for r in rows))
    ref = rows[0]
    print(f"{args.task}: budget {ref['budget']}, target {ref['target']}; reference {ref['name']}")
    for r in rows:
        ratio = stratified_bootstrap_ci({"x": ref["ttt"], "y": r["ttt"]}, _iqm_ratio,
                                        reps=args.reps)
        print(f"\n{r['name']}  seeds {r['seeds']}  weights {', '.join(r['prints'])}\n"
              f"  reached {r['reached']}/{len(r['ttt'])}   tokens to target IQM "
              f"{ci_of(r['ttt'], args.reps)}\n"
              f"  final {' '.join(f'{v:.2f}' for v in r['final'])}  IQM {ci_of(r['final'], args.reps)}\n"
              f"  AUC IQM {ci_of(r['auc'], args.reps)}\n"
              f"  world tokens: reference / this = {ratio.point:.2f}x "
              f"[{ratio.low:.2f}, {ratio.high:.2f}]")
        if warning := seed_warning(r, ref):
            print(warning)
    if args.plot:
        names = [r["name"] for r in rows]
        t = {"budget": ref["budget"], "target": ref["target"],
             "curves": {r["name"]: r["curves"] for r in rows}}
        _plot_curves(args.task, t, names, _colours(names), args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
