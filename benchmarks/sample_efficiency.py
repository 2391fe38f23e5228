"""Sample efficiency, the benchmark of record: world tokens each credit method needs to reach a
held-out success target, at equal world-token budgets, over several seeds.

Why: the claim of dense credit is fewer real tokens for the same skill (DESIGN.md: sample
efficiency = world tokens to reach a target). Every method x task x seed is an ordinary training
run (`clicker.train.loop.train`) from the same built-in tiny model, stopped by
`train.world_token_budget`; the seed changes sampling and prompt order, not the initial weights.
Curves (held-out success vs world tokens) come from each run's metrics.jsonl. When a run's last
iteration had no held-out eval, its final checkpoint is evaluated once more with the run's own
eval settings (written to final_eval.json in the run dir), so every curve ends at the budget.

Statistics (clicker.experiment.stats; Agarwal et al. 2021): per task and method, the IQM across
seeds with a 95 % stratified-bootstrap percentile CI of
- world tokens to target: first crossing, linear between eval points. A run that has not
  crossed by the budget is censored; it is scored as NEVER_REACHED_FACTOR x budget (the "PAR-2"
  convention of solver benchmarks), a finite lower bound on its true cost, so IQMs, CIs and
  ratios stay finite. With 5 seeds the IQM trims one run at each end, so one failed seed does
  not move the IQM at all; two or more do, and then the IQM is a lower bound. The table prints
  how many seeds reached the target; results.json keeps the raw per-seed values (null = never);
- the ratio of that IQM to GRPO's (< 1: fewer tokens than GRPO), with a CI from resampling both
  methods' seeds independently;
- final held-out success (the last eval of the run, at the budget) and the normalised area under
  the success curve up to the budget (AUC, trapezoid; a mean success over the budget);
- the probability of improvement over GRPO (P(X better) + 0.5 P(tie) over seed pairs) on tokens
  to target (lower is better), final success and AUC; averaged over tasks in "overall".
It prints a table per task, writes results.json, and a PNG per task (mean success vs world
tokens across seeds, shaded 95 % bootstrap CI of the mean, one line per method).

Runs are sequential and resumable: a run with summary.json is reused (after checking that its
config.yaml matches, so a changed budget cannot silently mix old runs in), a run interrupted
after a checkpoint resumes from it, one interrupted before its first checkpoint restarts.

    python benchmarks/sample_efficiency.py                                  # the full benchmark
    python benchmarks/sample_efficiency.py --methods grpo,rft --tasks addition2 --seeds 3
    python benchmarks/sample_efficiency.py --lr value=1e-4 --lr mc=3e-5      # per-method lr
    python benchmarks/sample_efficiency.py --report-only                     # tables from runs
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import yaml

from clicker.core.config import (
    Config,
    ConfigError,
    build_config,
    dump_config,
    parse_override,
    set_path,
)
from clicker.credit import CREDITS
from clicker.experiment.stats import (
    auc,
    interpolate_curve,
    iqm,
    pooled_iqm,
    probability_of_improvement,
    stratified_bootstrap_ci,
    tokens_to_target,
)
from clicker.models.policy import Policy
from clicker.tasks import make_world
from clicker.train.checkpoint import latest_checkpoint, write_atomic
from clicker.train.loop import evaluate, train
from clicker.train.metrics import read_metrics

RESULTS = Path(__file__).resolve().parent / "results" / "sample_efficiency"
NEVER_REACHED_FACTOR = 2.0  # censored runs score 2 x budget (PAR-2); see the module docstring
BASELINE = "grpo"  # ratios and probabilities of improvement are against this method

# Task presets. `budget` (world tokens per run) and `target` (held-out success) are per task:
# the target should be reachable by the baseline well inside the budget, or tokens-to-target
# only says "censored" for everyone. Measured from the built-in tiny model (seed 0) on 2 cores:
# - keydoor_long: 3 rooms (5-step optimum) with 24 turns, the multi-turn world where credit over
#   many turns matters; ~500 world tokens an episode, so 8 prompts x 8 episodes (~32k tokens an
#   iteration) keeps iterations affordable. The warm start never saw 3 rooms: initial held-out
#   success is ~0.02 at temperature 1. Eval at temperature 1 (the greedy policy of a 1M model
#   loops in place; sampled success is the policy's real success rate), 128 layouts. lr 1e-4 as
#   for GRPO on 2 rooms (README: 0.34 -> 0.81 vs 0.69 at 3e-5). Budget ~95 iterations.
# - addition3: 3-digit sums, the carry habit at its worst. CAUTION: the tiny model is warm-started
#   on 2-digit sums only and solves 0 of 512 sampled 3-digit episodes, so from it no method gets
#   any reward; use it with a stronger model (--set model.path=...).
# - addition2: the `make demo` task (GRPO, lr 3e-5: greedy held-out 0.45 -> 0.71 in ~183k world
#   tokens), ~1.2k tokens an iteration; a fast, known-learnable single-turn check.
# Targets and budgets are a first calibration from those numbers, not tuned per method.
PRESETS: dict[str, dict[str, Any]] = {
    "keydoor_h20": {
        "overrides": {
            "task.name": "keydoor", "task.args": {"rooms": 2, "max_turns": 20},
            "rollout.prompts": 8, "rollout.group_size": 8, "update.lr": 1e-4,
            "train.eval_temperature": 1.0, "train.eval_problems": 64, "train.eval_every": 5,
        },
        "budget": 400_000, "target": 0.8,
    },
    "keydoor_long": {
        "overrides": {
            "task.name": "keydoor", "task.args": {"rooms": 3, "max_turns": 20},
            "rollout.prompts": 4, "rollout.group_size": 8, "update.lr": 5e-5,
            # token-level averaging let long failing episodes dominate: GRPO fell 0.16 -> 0.06;
            # per-episode averaging held 0.16 -> 0.20 (one seed each, README)
            "update.aggregation": "sequence",
            "train.eval_temperature": 1.0, "train.eval_problems": 64, "train.eval_every": 5,
        },
        "budget": 320_000, "target": 0.3,
    },
    "addition3": {
        "overrides": {
            "task.name": "addition", "task.args": {"digits": 3},
            "rollout.prompts": 16, "rollout.group_size": 8, "update.lr": 3e-5,
            "train.eval_temperature": 0.0, "train.eval_problems": 256, "train.eval_every": 10,
        },
        "budget": 600_000, "target": 0.3,
    },
    "addition2": {
        "overrides": {
            "task.name": "addition", "task.args": {"digits": 2},
            "rollout.prompts": 16, "rollout.group_size": 8, "update.lr": 3e-5,
            "train.eval_temperature": 0.0, "train.eval_problems": 256, "train.eval_every": 10,
        },
        "budget": 200_000, "target": 0.7,
    },
}

# Per-method config overrides, applied on top of the task preset. Each method is its credit
# source alone at weight 1 with that source's config defaults (credit.<name>.* in
# src/clicker/core/config.py) and the task's policy lr; add here what a method needs to be run
# fairly (e.g. its own "update.lr"), or override lr from the command line with --lr name=value.
# implicit_prm alone is all of PRIME: the source returns A_outcome + A_process itself.
METHODS: dict[str, dict[str, Any]] = {
    "grpo": {"credit.sources": {"grpo": 1.0}},
    "rloo": {"credit.sources": {"rloo": 1.0}},
    "value": {"credit.sources": {"value": 1.0}},
    "mc": {"credit.sources": {"mc": 1.0}, "credit.mc.step_tokens": 1},
    # PRIME's beta = 0.05 and PRM lr 1e-6 are for 7B models and completions of ~1000 tokens:
    # on the tiny model the PRM never left log 2 (loss 0.69 after 40 iterations) and the max-
    # return normalisation blew its noise up to the size of the outcome advantage, so the policy
    # collapsed (held-out addition 0.57 -> 0.00). beta * sum(log-ratio) must reach O(1) over a
    # few tokens here: beta 0.5, PRM lr 1e-4.
    "implicit_prm": {"credit.sources": {"implicit_prm": 1.0}, "credit.implicit_prm.beta": 0.5,
                     "credit.implicit_prm.lr": 1e-4},
    # one pass per batch for each of the two judges (epochs 2 made it 4x the cost of GRPO)
    "adjudicator": {"credit.sources": {"adjudicator": 1.0}, "credit.adjudicator.epochs": 1},
    "judge": {"credit.sources": {"judge": 1.0}},
    "rft": {"credit.sources": {"rft": 1.0}},
}

# Every run: the budget, not an iteration count, ends it; checkpoints only for resuming.
COMMON: dict[str, Any] = {
    "train.iterations": 10_000_000,
    "train.checkpoint_every": 10,
    "train.keep_checkpoints": 1,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--methods", default="grpo,value,mc,implicit_prm,adjudicator,rft",
                    help=f"comma-separated, from: {', '.join(METHODS)}")
    ap.add_argument("--tasks", default="keydoor_h20,addition2",
                    help=f"comma-separated presets, from: {', '.join(PRESETS)}")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per method and task")
    ap.add_argument("--budget", type=int, default=None,
                    help="world tokens per run (default: per task, see PRESETS)")
    ap.add_argument("--target", type=float, default=None,
                    help="held-out success target (default: per task, see PRESETS)")
    ap.add_argument("--lr", action="append", default=[], metavar="METHOD=LR",
                    help="policy lr of one method (repeatable), e.g. value=1e-4")
    ap.add_argument("--eval-every", type=int, default=None,
                    help="held-out eval every N iterations (default: per task)")
    ap.add_argument("--eval-problems", type=int, default=None,
                    help="held-out problems per eval (default: per task)")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run (repeatable), e.g. model.path=/m")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results.json and PNGs go here")
    ap.add_argument("--runs-dir", type=Path, default=None, help="run directories (default: OUT/runs)")
    ap.add_argument("--reps", type=int, default=2000, help="bootstrap replicates")
    ap.add_argument("--report-only", action="store_true", help="no training: report finished runs")
    ap.add_argument("--shard", default="0/1", metavar="I/N",
                    help="run only every N-th run starting at I (start N processes with "
                    "I = 0..N-1 on one --runs-dir, then --report-only)")
    ap.add_argument("--progress", action="store_true", help="live progress bar of each run")
    return ap.parse_args(argv)


def fail(msg: str) -> NoReturn:
    """One line on stderr, exit code 2 (DESIGN.md: bad input is not a traceback)."""
    print(f"sample_efficiency: {msg}", file=sys.stderr)
    raise SystemExit(2)


def split_names(text: str, known: dict, what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        fail(f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from: "
             f"{', '.join(known)}")
    return names


def check_methods_available(methods: list[str]) -> None:
    """Fail before any run if a method's credit source is not in clicker.credit.CREDITS yet."""
    missing = {m: [s for s in METHODS[m]["credit.sources"] if s not in CREDITS] for m in methods}
    missing = {m: s for m, s in missing.items() if s}
    if missing:
        what = "; ".join(f"{m} (source {', '.join(s)})" for m, s in missing.items())
        fail(f"credit sources not available: {what}. clicker.credit.CREDITS has: "
             f"{', '.join(CREDITS)}. Drop them from --methods.")


def parse_lrs(items: list[str], methods: list[str]) -> dict[str, float]:
    lrs = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in methods:
            fail(f"--lr {item}: {name!r} is not among --methods ({', '.join(methods)})")
        try:
            lrs[name] = float(value)
        except ValueError:
            fail(f"--lr {item}: expected METHOD=FLOAT")
    return lrs


def make_config(args: argparse.Namespace, task: str, method: str, seed: int,
                lrs: dict[str, float]) -> Config:
    """Overrides in order: COMMON, task preset, method, --lr, --eval-*, --set, seed and budget."""
    items: dict[str, Any] = {**COMMON, **PRESETS[task]["overrides"], **METHODS[method]}
    if method in lrs:
        items["update.lr"] = lrs[method]
    if args.eval_every is not None:
        items["train.eval_every"] = args.eval_every
    if args.eval_problems is not None:
        items["train.eval_problems"] = args.eval_problems
    for extra in args.extra:
        key, value = parse_override(extra)
        items[key] = value
    items |= {"train.progress": args.progress, "train.seed": seed,
              "train.world_token_budget": budget_of(args, task)}
    if not items["train.eval_every"]:
        raise ConfigError("train.eval_every must be > 0: the benchmark needs held-out curves")
    data: dict[str, Any] = {}
    for key, value in items.items():
        set_path(data, key, copy.deepcopy(value))  # never alias (and mutate) PRESETS
    return build_config(data)


def budget_of(args: argparse.Namespace, task: str) -> int:
    return int(args.budget if args.budget is not None else PRESETS[task]["budget"])


def target_of(args: argparse.Namespace, task: str) -> float:
    return float(args.target if args.target is not None else PRESETS[task]["target"])


def run_dir_of(runs: Path, task: str, method: str, seed: int) -> Path:
    return runs / task / method / f"seed{seed}"


def check_same_config(run_dir: Path, cfg: Config) -> None:
    """Fail if an existing run was made with another config (train.progress aside)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    saved, wanted = yaml.safe_load(path.read_text()), yaml.safe_load(dump_config(cfg))
    for c in (saved, wanted):
        c["train"].pop("progress", None)
    if saved != wanted:
        fail(f"{run_dir} was run with a different config (budget, lr, ...?); delete it or pass "
             "another --runs-dir")


def run_one(cfg: Config, run_dir: Path) -> None:
    """Train (or resume, or reuse) one run, then make sure its curve ends with an eval."""
    if not (run_dir / "summary.json").is_file():
        resume = latest_checkpoint(run_dir) is not None
        if resume:
            check_same_config(run_dir, cfg)
        elif run_dir.exists():  # interrupted before its first checkpoint: start again
            shutil.rmtree(run_dir)
        train(cfg, run_dir, resume=resume)
    final_eval(cfg, run_dir)


def final_eval(cfg: Config, run_dir: Path) -> None:
    """Evaluate the final checkpoint if the last iteration logged no held-out success, with the
    run's eval settings (same problems, same eval seed), into final_eval.json."""
    rows = read_metrics(run_dir)
    if not rows or rows[-1].get("eval/success") is not None or (run_dir / "final_eval.json").exists():
        return
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        fail(f"{run_dir} has no checkpoint to evaluate")
    policy = Policy.load(ckpt, device=cfg.model.device, dtype=cfg.model.dtype)
    world = make_world(cfg.task.name, **cfg.task.args)
    tc = cfg.train
    r = evaluate(policy, world, tc.eval_problems, temperature=tc.eval_temperature, seed=tc.seed,
                 max_turns=cfg.rollout.max_turns, reuse_cache=cfg.rollout.reuse_cache)
    row = {"iteration": rows[-1]["iteration"], "world/tokens": rows[-1]["world/tokens"],
           "eval/success": r.success}
    write_atomic(run_dir / "final_eval.json", json.dumps(row))


def load_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(E,) world tokens and (E,) held-out success of a finished run, or None if unfinished."""
    if not (run_dir / "summary.json").is_file():
        return None
    rows = [r for r in read_metrics(run_dir) if r.get("eval/success") is not None]
    if (run_dir / "final_eval.json").is_file():
        rows.append(json.loads((run_dir / "final_eval.json").read_text()))
    if not rows:
        return None
    rows.sort(key=lambda r: (r["world/tokens"], r["iteration"]))
    return (np.array([r["world/tokens"] for r in rows], float),
            np.array([r["eval/success"] for r in rows], float))


def _num(x: Any) -> float | None:
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
    """Per-method statistics of one task, for results.json, and the per-seed arrays (seeds,) they
    came from. curves: method -> one (tokens (E,), success (E,)) per finished seed."""
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


def plot_task(path: Path, task: str, curves: dict[str, list[tuple[np.ndarray, np.ndarray]]],
              budget: int, target: float, reps: int) -> None:
    """Held-out success vs world tokens: mean over seeds, shaded 95 % bootstrap CI of the mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(0.0, budget, 201)  # (G,)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, cs in curves.items():
        ys = np.stack([interpolate_curve(t, s, grid) for t, s in cs], axis=-1)  # (G, seeds)
        band = stratified_bootstrap_ci({"c": ys}, lambda d: d["c"].mean(-1), reps=min(reps, 1000))
        line = ax.plot(grid, band.point, label=f"{method} (n={ys.shape[-1]})")[0]
        ax.fill_between(grid, band.low, band.high, color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:g}")
    ax.set(xlabel="world tokens", ylabel="held-out success", xlim=(0, budget),
           title=f"{task}: mean over seeds, 95% bootstrap CI")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(iv: dict[str, Any], digits: str) -> str:
    def f(x: float | None) -> str:
        return "inf" if x is None else format(x, digits)

    return f"{f(iv['iqm'])} [{f(iv['ci'][0])}, {f(iv['ci'][1])}]"


def print_table(task: str, res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{task}: budget {res['budget']:,} world tokens, target {res['target']:g}"
                  f" (IQM [95% CI] over seeds; not reached = {NEVER_REACHED_FACTOR:g} x budget)")
    for col in ("method", "reached", "tokens to target", f"x {BASELINE}", "final success",
                "AUC", f"P(fewer tokens than {BASELINE})"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, r in res["methods"].items():
        ratio = r.get("ratio_to_grpo")
        table.add_row(
            method, f"{r['reached']}/{r['seeds']}", _fmt(r["tokens_to_target"], ",.0f"),
            _fmt({"iqm": ratio["value"], "ci": ratio["ci"]}, ".2f") if ratio else "-",
            _fmt(r["final_success"], ".3f"), _fmt(r["auc"], ".3f"),
            f"{r['poi_over_grpo']['tokens_to_target']:.2f}" if ratio else "-",
        )
    # a pipe or log file gets rich's 80 columns, too narrow for the CIs: give it 160
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    methods = split_names(args.methods, METHODS, "method(s)")
    tasks = split_names(args.tasks, PRESETS, "task preset(s)")
    if args.seeds < 1:
        fail("--seeds must be >= 1")
    check_methods_available(methods)
    lrs = parse_lrs(args.lr, methods)
    runs = args.runs_dir or args.out / "runs"
    try:  # every config is validated before the first run starts
        configs = {(t, m, s): make_config(args, t, m, s, lrs)
                   for t in tasks for s in range(args.seeds) for m in methods}
    except ConfigError as e:
        fail(str(e))

    try:
        shard, shards = (int(x) for x in args.shard.split("/"))
        assert 0 <= shard < shards
    except (ValueError, AssertionError):
        fail(f"--shard expects I/N with 0 <= I < N, got {args.shard!r}")
    t_start = time.time()
    for n, ((task, method, seed), cfg) in enumerate(configs.items(), 1):
        if (n - 1) % shards != shard:
            continue
        run_dir = run_dir_of(runs, task, method, seed)
        done = (run_dir / "summary.json").is_file()
        if done:
            check_same_config(run_dir, cfg)
        if args.report_only:
            continue
        t0 = time.time()
        run_one(cfg, run_dir)
        curve = load_curve(run_dir)
        last = f"held-out {curve[1][-1]:.3f} at {int(curve[0][-1]):,} tokens" if curve else ""
        print(f"[{n}/{len(configs)}] {task} {method} seed {seed}: "
              f"{'reused' if done else f'{time.time() - t0:.0f} s'}  {last}", flush=True)
    if not args.report_only:
        print(f"all runs done in {time.time() - t_start:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "methods": methods, "seeds": args.seeds, "baseline": BASELINE,
        "never_reached": f"scored as {NEVER_REACHED_FACTOR:g} x budget in IQMs, CIs, ratios and "
                         "probabilities; null in per_seed",
        "method_overrides": {m: METHODS[m] | ({"update.lr": lrs[m]} if m in lrs else {})
                             for m in methods},
        "tasks": {}, "overall": {},
    }
    per_task: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for task in tasks:
        curves: dict[str, list] = {}
        for method in methods:
            cs = [load_curve(run_dir_of(runs, task, method, s)) for s in range(args.seeds)]
            if any(c is None for c in cs):
                print(f"{task} {method}: {sum(c is None for c in cs)} of {args.seeds} runs "
                      "unfinished, left out")
            if cs := [c for c in cs if c is not None]:
                curves[method] = cs
        if not curves:
            continue
        budget, target = budget_of(args, task), target_of(args, task)
        res, per_task[task] = analyse_task(curves, budget, target, args.reps)
        resolved = configs[(task, methods[0], 0)].model_dump(mode="json")
        res["config"] = {k: resolved[k] for k in ("model", "task", "rollout", "update", "train")}
        results["tasks"][task] = res
        print_table(task, res)
        plot_task(args.out / f"{task}.png", task, curves, budget, target, args.reps)
    for method in methods:
        both = [t for t in per_task if method in per_task[t] and BASELINE in per_task[t]]
        if both:
            results["overall"][method] = {"poi_over_grpo_tokens_to_target": (
                probability_of_improvement({t: -per_task[t][method]["ttt"] for t in both},
                                           {t: -per_task[t][BASELINE]["ttt"] for t in both})),
                "tasks": both}
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / 'results.json'} and {len(results['tasks'])} PNG(s) in {args.out}")


if __name__ == "__main__":
    main()
