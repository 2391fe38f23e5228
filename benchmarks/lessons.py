"""Reflective lessons, measured: held-out success with no book, with the book, and after
distilling the book into the weights (issue 6).

Per seed, three phases on one task (`letters` or 2-digit `addition`; both verifiers give
feedback text), all on the `context` tiny model (it reads lessons and can write them as a
reviewer):

1. reflect: GRPO for `--iterations`, the policy reviewing its own mixed groups (compact style),
   every edit gated on 64 validation problems; the book goes before every rollout prompt.
2. measure the phase-1 policy on held-out problems with no book and with the book.
3. distil: from the phase-1 policy, `--distill-iterations` of `distill` alone with the book as
   the teacher's only context and no book in the student's prompts (`lessons.inject: false`,
   `credit.distill.context: [lessons]`); then held-out success with no book.

A control run continues phase 1 for the same iterations with GRPO and no book, so a gain from
distillation is not just more training. World tokens of every phase are reported, gate
rollouts included.

    python benchmarks/lessons.py --task addition --seeds 3     # ~5 min on 2 cores
    python benchmarks/lessons.py --task letters --seeds 3
Writes benchmarks/results/lessons_<task>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from clicker.core.config import build_config
from clicker.lessons.store import LessonBook
from clicker.models.policy import Policy
from clicker.tasks import make_world
from clicker.train.checkpoint import latest_checkpoint
from clicker.train.loop import evaluate, train
from clicker.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def base(args, seed: int, iterations: int, lr: float) -> dict:
    return {
        "model": {"device": "cpu", "dtype": "float32", "tiny_recipe": "context"},
        "task": {"name": args.task, "args": {"digits": 2} if args.task == "addition" else {}},
        "rollout": {"prompts": 8, "group_size": 8},
        "update": {"lr": lr},
        "train": {"iterations": iterations, "seed": seed, "eval_every": iterations,
                  "eval_problems": args.eval_problems, "checkpoint_every": 0,
                  "progress": False},
    }


def held_out(policy: Policy, world, n: int, seed: int, book: LessonBook | None) -> float:
    from clicker.lessons.reflect import book_context

    ctx = book_context(book) if book is not None else None
    return evaluate(policy, world, n, seed=seed, context=ctx).success


def tokens(run: Path) -> int:
    return int(read_metrics(run)[-1]["world/tokens"])


def one_seed(args, seed: int, out: Path) -> dict:
    world = make_world(args.task, **({"digits": 2} if args.task == "addition" else {}))
    r1 = out / f"seed{seed}" / "reflect"
    cfg = base(args, seed, args.iterations, args.lr)
    cfg["credit"] = {"sources": {"grpo": 1.0}}
    cfg["lessons"] = {"enabled": True, "gate_problems": 64, "token_budget": 64}
    train(build_config(cfg), r1)
    ckpt = latest_checkpoint(r1)
    book = LessonBook(r1 / "lessons.db", create=False)
    p1 = Policy.load(ckpt, device="cpu", dtype="float32")
    initial = Policy.load(None, device="cpu", dtype="float32", tiny_recipe="context")
    res = {
        "initial_no_book": held_out(initial, world, args.eval_problems, seed, None),
        "initial_with_book": held_out(initial, world, args.eval_problems, seed, book),
        "reflect_no_book": held_out(p1, world, args.eval_problems, seed, None),
        "reflect_with_book": held_out(p1, world, args.eval_problems, seed, book),
        "book": [x.text for x in book.active()],
        "book_tokens": book.tokens_used(),
        "edits": {s: sum(e.status == s for e in book.edits()) for s in ("applied", "rejected")},
        "reviews": len(book.reviews()),
        "reflect_world_tokens": tokens(r1),
    }
    # phase 3: distil the (frozen) book into a lesson-free student
    r3 = out / f"seed{seed}" / "distill"
    cfg = base(args, seed, args.distill_iterations, args.distill_lr)
    cfg["model"]["path"] = str(ckpt)
    cfg["credit"] = {"sources": {"distill": 1.0}, "distill": {"context": ["lessons"]}}
    cfg["lessons"] = {"enabled": True, "book": str(r1 / "lessons.db"), "review": False,
                      "inject": False}
    train(build_config(cfg), r3)
    p3 = Policy.load(latest_checkpoint(r3), device="cpu", dtype="float32")
    res["distilled_no_book"] = held_out(p3, world, args.eval_problems, seed, None)
    res["distill_world_tokens"] = tokens(r3)
    # control: as many more iterations of plain GRPO, no book
    rc = out / f"seed{seed}" / "control"
    cfg = base(args, seed, args.distill_iterations, args.distill_lr)
    cfg["model"]["path"] = str(ckpt)
    cfg["credit"] = {"sources": {"grpo": 1.0}}
    train(build_config(cfg), rc)
    pc = Policy.load(latest_checkpoint(rc), device="cpu", dtype="float32")
    res["control_no_book"] = held_out(pc, world, args.eval_problems, seed, None)
    res["control_world_tokens"] = tokens(rc)
    return res


COLUMNS = ["initial_no_book", "initial_with_book", "reflect_no_book", "reflect_with_book",
           "distilled_no_book", "control_no_book"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="letters", choices=["letters", "addition"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=6, help="phase 1 (reflect) iterations")
    ap.add_argument("--distill-iterations", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-5, help="phase 1 policy lr (kept low so "
                    "that the weights do not learn the task before the book can)")
    ap.add_argument("--distill-lr", type=float, default=3e-5)
    ap.add_argument("--eval-problems", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_lessons")
    ap.add_argument("--results", type=Path, default=None,
                    help="default benchmarks/results/lessons_<task>.json")
    args = ap.parse_args(argv)
    args.results = args.results or ROOT / "benchmarks" / "results" / f"lessons_{args.task}.json"
    args.out = args.out / args.task
    if args.out.exists():  # a fresh measurement every time
        shutil.rmtree(args.out)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    runs = {}
    for seed in range(args.seeds):
        runs[seed] = one_seed(args, seed, args.out)
        print(f"seed {seed}: " + "  ".join(f"{c} {runs[seed][c]:.3f}" for c in COLUMNS),
              file=sys.stderr, flush=True)
    summary = {c: statistics.mean(r[c] for r in runs.values()) for c in COLUMNS}
    print(f"{'held-out success (mean of seeds)':40s} " + " ".join(f"{c:>18s}" for c in COLUMNS))
    print(f"{args.task:40s} " + " ".join(f"{summary[c]:18.3f}" for c in COLUMNS))
    for seed, r in runs.items():
        print(f"seed {seed} book ({r['book_tokens']} tokens, {r['edits']}): {r['book']}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.results.write_text(json.dumps({"settings": settings, "summary": summary,
                                        "runs": runs, "seconds": time.time() - t0}, indent=1))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
