"""Statistics and tables of a compare from finished run directories: world tokens to target,
final success and AUC per method, with IQMs, stratified-bootstrap CIs, the ratio to GRPO and the
probability of improvement (Agarwal et al. 2021); cost per run.

A run that never reaches the target is scored NEVER_REACHED_FACTOR x budget (PAR-2), a finite
lower bound on its cost, so IQMs, CIs and ratios stay finite; per-seed values keep null.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from clicker.experiment.stats import (
    auc,
    iqm,
    pooled_iqm,
    probability_of_improvement,
    stratified_bootstrap_ci,
    tokens_to_target,
)

NEVER_REACHED_FACTOR = 2.0  # censored runs score 2 x budget (PAR-2)
BASELINE = "grpo"  # ratios and probabilities of improvement are against this method




def load_curve(run_dir: Path, with_iterations: bool = False):
    """(E,) world tokens and (E,) held-out success of a finished run, or None if unfinished;
    with_iterations: and the (E,) iterations of the eval points."""
    from clicker.train.metrics import read_metrics

    if not (run_dir / "summary.json").is_file():
        return None
    rows = [r for r in read_metrics(run_dir) if r.get("eval/success") is not None]
    if (run_dir / "final_eval.json").is_file():
        rows.append(json.loads((run_dir / "final_eval.json").read_text()))
    if not rows:
        return None
    rows.sort(key=lambda r: (r["world/tokens"], r["iteration"]))
    curve = (np.array([r["world/tokens"] for r in rows], float),
             np.array([r["eval/success"] for r in rows], float))
    return (*curve, [int(r["iteration"]) for r in rows]) if with_iterations else curve


def dream_series(run_dir: Path, iterations: list[int]) -> dict[str, list[float]] | None:
    """A dreaming run's imagined tokens at each of `iterations` (its eval points) and its world
    model's held-out exact-observation rate, event recall (rewards and ends predicted right)
    and replay match (whole real episodes replayed right: `clicker.dream.replay`) over training
    (per iteration that has them, against world tokens); None for a run that never dreamed."""
    from clicker.train.metrics import read_metrics

    rows = sorted(read_metrics(run_dir), key=lambda r: r["iteration"])
    if not any("dream/imagined_tokens" in r or "dream/wm/obs_exact" in r for r in rows):
        return None
    imagined, seen = [], 0.0
    by_it = {r["iteration"]: r.get("dream/imagined_tokens") for r in rows}
    known = sorted((i, v) for i, v in by_it.items() if v is not None)
    for it in iterations:
        seen = max((v for i, v in known if i <= it), default=0.0)
        imagined.append(float(seen))
    wm = [r for r in rows if r.get("dream/wm/obs_exact") is not None]
    ev = [r for r in rows if r.get("dream/wm/event_recall") is not None]
    rp = [r for r in rows if r.get("dream/wm/replay_match") is not None]
    return {"imagined_tokens": imagined,
            "wm_world_tokens": [float(r["world/tokens"]) for r in wm],
            "wm_obs_exact": [float(r["dream/wm/obs_exact"]) for r in wm],
            "wm_event_tokens": [float(r["world/tokens"]) for r in ev],
            "wm_event_recall": [float(r["dream/wm/event_recall"]) for r in ev],
            "wm_replay_tokens": [float(r["world/tokens"]) for r in rp],
            "wm_replay_match": [float(r["dream/wm/replay_match"]) for r in rp]}


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _interval(values: np.ndarray, reps: int) -> dict[str, Any]:
    ci = stratified_bootstrap_ci({"t": values}, pooled_iqm, reps=reps)
    return {"iqm": _num(ci.point), "ci": [_num(ci.low), _num(ci.high)]}


def _iqm_ratio(d: dict[str, np.ndarray]) -> np.ndarray:
    """IQM(x) / IQM(y) over the last (seed) axis; a vectorised bootstrap statistic."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(iqm(d["x"], -1)) / np.asarray(iqm(d["y"], -1))


def analyse_task(
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], budget: int, target: float, reps: int
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """Per-method statistics of one task, and the per-seed arrays (seeds,) they came from.
    curves: method -> one (tokens (E,), success (E,)) per finished seed."""
    per: dict[str, dict[str, np.ndarray]] = {}
    for method, cs in curves.items():
        ttt = np.array([tokens_to_target(t, s, target) for t, s in cs])
        ttt[ttt > budget] = math.inf  # crossed only past the budget: not reached within it
        per[method] = {
            "ttt_raw": ttt,
            "ttt": np.where(np.isfinite(ttt), ttt, NEVER_REACHED_FACTOR * budget),
            "final": np.array([s[-1] for _, s in cs]),
            "auc": np.array([auc(t, s, budget) for t, s in cs]),
        }
    out: dict[str, Any] = {"budget": budget, "target": target, "methods": {}}
    base = per.get(BASELINE)
    for method, p in per.items():
        row: dict[str, Any] = {
            "seeds": len(p["ttt"]),
            "reached": int(np.isfinite(p["ttt_raw"]).sum()),
            "tokens_to_target": {"per_seed": [_num(v) for v in p["ttt_raw"]],
                                 **_interval(p["ttt"], reps)},
            "final_success": {"per_seed": p["final"].tolist(), **_interval(p["final"], reps)},
            "auc": {"per_seed": p["auc"].tolist(), **_interval(p["auc"], reps)},
        }
        if base is not None:
            ci = stratified_bootstrap_ci({"x": p["ttt"], "y": base["ttt"]}, _iqm_ratio, reps=reps)
            row["ratio_to_grpo"] = {"value": _num(ci.point), "ci": [_num(ci.low), _num(ci.high)]}
            row["poi_over_grpo"] = {
                "tokens_to_target": probability_of_improvement(-p["ttt"], -base["ttt"]),
                "final_success": probability_of_improvement(p["final"], base["final"]),
                "auc": probability_of_improvement(p["auc"], base["auc"]),
            }
        out["methods"][method] = row
    return out, per


def resources_of(summaries: list[dict]) -> dict[str, dict[str, Any]]:
    """Median and per-seed wall clock, seconds per iteration, peak memory and imagined tokens
    (dreams: never counted as world tokens) of a method."""
    out = {}
    for key in ("wall_s", "s_per_iteration", "peak_rss_mb", "peak_cuda_mb", "imagined_tokens"):
        vals = [_num(s.get(key)) for s in summaries]
        known = [v for v in vals if v is not None]
        out[key] = {"median": statistics.median(known) if known else None, "per_seed": vals}
    return out


def _fmt(iv: dict[str, Any], digits: str) -> str:
    def f(x: float | None) -> str:
        return "inf" if x is None else format(x, digits)

    return f"{f(iv['iqm'])} [{f(iv['ci'][0])}, {f(iv['ci'][1])}]"


def print_tables(results: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # a pipe or log file gets rich's 80 columns, too narrow for the CIs: give it 160
    console = Console(width=None if sys.stdout.isatty() else 160)
    for task, res in results["tasks"].items():
        table = Table(title=f"{task}: budget {res['budget']:,} world tokens, target "
                      f"{res['target']:g} (IQM [95% CI] over seeds; not reached = "
                      f"{NEVER_REACHED_FACTOR:g} x budget)")
        for col in ("method", "reached", "tokens to target", f"x {BASELINE}", "final success",
                    "AUC", f"P(fewer tokens than {BASELINE})", "s/iter"):
            table.add_column(col, justify="left" if col == "method" else "right")
        for method, r in res["methods"].items():
            ratio = r.get("ratio_to_grpo")
            spi = r.get("resources", {}).get("s_per_iteration", {}).get("median")
            table.add_row(
                method, f"{r['reached']}/{r['seeds']}", _fmt(r["tokens_to_target"], ",.0f"),
                _fmt({"iqm": ratio["value"], "ci": ratio["ci"]}, ".2f") if ratio else "-",
                _fmt(r["final_success"], ".3f"), _fmt(r["auc"], ".3f"),
                f"{r['poi_over_grpo']['tokens_to_target']:.2f}" if ratio else "-",
                f"{spi:.2f}" if spi is not None else "-",
            )
        console.print(table)
        if res.get("mixed_weights"):
            console.print(mixed_weights_warning(res["mixed_weights"]))
        if res.get("unfinished"):
            console.print(unfinished_note(res["unfinished"]))


def unfinished_note(names: list[str]) -> str:
    """One line for a task some of whose runs are not finished (so not in its rows)."""
    return (f"note: {len(names)} run(s) of this task are unfinished and not in these rows: "
            f"{', '.join(names)}")


def mixed_weights_warning(mixed: dict[str, list[str]]) -> str:
    """One line for a task whose runs started from several sets of weights."""
    parts = "; ".join(f"{fp}: {', '.join(names)}" for fp, names in mixed.items())
    return (f"warning: these runs started from {len(mixed)} different sets of weights (a model "
            f"rebuilt between sessions?), so their rows need not compare: {parts}")
