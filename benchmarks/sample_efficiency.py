"""Sample efficiency, the benchmark of record: world tokens each credit method needs to reach a
held-out success target, at equal world-token budgets, over several seeds.

Why: the claim of dense credit is fewer real tokens for the same skill (DESIGN.md: sample
efficiency = world tokens to reach a target). This is `clicker compare --preset full` writing to
benchmarks/results/sample_efficiency/ (results.json, report.html, a PNG per task; the run
directories in runs/ are not committed). Tasks, methods, budgets, targets and the statistics are
in `clicker.experiment.compare` (TASKS, METHODS, PRESETS; IQM with stratified-bootstrap 95 % CIs,
ratio to GRPO, probability of improvement, AUC; runs that never reach the target score 2 x
budget). Runs are resumable: the same command again continues where it stopped.

    python benchmarks/sample_efficiency.py                                  # the full benchmark
    python benchmarks/sample_efficiency.py --tasks keydoor_long --methods grpo,value,mc
    python benchmarks/sample_efficiency.py --lr value=1e-4 --jobs 2
    python benchmarks/sample_efficiency.py --report-only                     # tables from runs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clicker.core.config import ConfigError
from clicker.experiment.compare import METHODS, TASKS, compare, load_spec

RESULTS = Path(__file__).resolve().parent / "results" / "sample_efficiency"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--methods", help=f"comma-separated, from: {', '.join(METHODS)}")
    ap.add_argument("--tasks", help=f"comma-separated, from: {', '.join(TASKS)}")
    ap.add_argument("--seeds", type=int, help="seeds 0..N-1 per method and task (default 5)")
    ap.add_argument("--budget", type=int, help="world tokens per run (default: per task)")
    ap.add_argument("--target", type=float, help="held-out target (default: per task)")
    ap.add_argument("--lr", action="append", default=[], metavar="METHOD=LR")
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--eval-problems", type=int)
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--jobs", type=int, help="parallel runs (default: one per core)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    split = (lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None)
    try:
        lrs = {k: float(v) for k, _, v in (item.partition("=") for item in args.lr)}
        spec = load_spec(None, preset="full", tasks=split(args.tasks),
                         methods=split(args.methods), seeds=args.seeds, budget=args.budget,
                         target=args.target, lr=lrs, set=args.extra, jobs=args.jobs,
                         eval_every=args.eval_every, eval_problems=args.eval_problems)
        compare(spec, args.out, report_only=args.report_only)
    except (ConfigError, ValueError) as e:
        print(f"sample_efficiency: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"report: {args.out / 'report.html'}")


if __name__ == "__main__":
    main()
