"""Does the tiny model read what is put before the task? (issue 6)

For 64 held-out problems of each task: the log-probability of the right answer with no block,
after `Feedback:` on a wrong attempt at this problem, after `Feedback:` on another problem, and
after a solution of this problem; and greedy held-out success (256 problems) with no block, with
a lesson for the task, and with a lesson that does not apply.

    python benchmarks/context_reading.py [--recipe context]     # ~1 min on 2 cores
Writes benchmarks/results/context_reading_<recipe>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from clicker.core.context import context_block
from clicker.models.policy import Policy
from clicker.models.tiny import HINTS
from clicker.tasks import make_world
from clicker.train.loop import evaluate

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"addition": {"digits": 2}, "letters": {}}


def answer_logp(policy: Policy, before: str, answer: str) -> float:
    """log p(answer | before), summed over the answer's tokens."""
    c, t = policy.encode(before), policy.encode(answer)
    with torch.no_grad():
        lp = torch.log_softmax(policy.model(input_ids=torch.tensor([c + t])).logits[0].float(), -1)
    return sum(float(lp[len(c) + i - 1, tok]) for i, tok in enumerate(t))


def probe(policy: Policy, task: str, n: int = 64, eval_n: int = 256) -> dict[str, float]:
    w = make_world(task, **TASKS[task])
    rows: dict[str, list[float]] = {"none": [], "feedback": [], "other_feedback": [],
                                    "solution": []}
    for i in range(n):
        p, ref = w.make("test", i).reset(), w.reference("test", i)
        ans = ref + w.stop[0]
        fb = w.make("test", i).step(str(int(ref) + 1)).feedback
        other = w.make("test", i + 10_000).step("0").feedback
        rows["none"].append(answer_logp(policy, p, ans))
        rows["feedback"].append(answer_logp(policy, context_block("feedback", fb) + p, ans))
        rows["other_feedback"].append(answer_logp(policy, context_block("feedback", other) + p,
                                                  ans))
        rows["solution"].append(answer_logp(policy, context_block("solution", p + ref) + p, ans))
    out = {f"logp_{k}": sum(v) / len(v) for k, v in rows.items()}
    for name, lesson in (("none", None), ("lesson", HINTS[task][0]),
                         ("distractor", "keep it short.")):
        block = context_block("lesson", lesson) if lesson else ""
        ctx = (lambda split, index, b=block: b) if block else None
        out[f"greedy_{name}"] = evaluate(policy, w, eval_n, context=ctx).success
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="context")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = Policy.load(None, device="cpu", dtype="float32", tiny_recipe=args.recipe)
    res = {task: probe(policy, task) for task in TASKS}
    keys = list(next(iter(res.values())))
    print(f"{'recipe ' + args.recipe:24s}" + "".join(f"{t:>12s}" for t in res))
    for k in keys:
        print(f"{k:24s}" + "".join(f"{res[t][k]:12.3f}" for t in res))
    out = ROOT / "benchmarks" / "results" / f"context_reading_{args.recipe}.json"
    out.write_text(json.dumps({"recipe": args.recipe, "results": res}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
