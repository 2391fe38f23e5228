"""Does the tiny model read what is put before the task? (issue 6)

Single-turn tasks, for 64 held-out problems: the log-probability of the right answer with no
block, after `Feedback:` on a wrong attempt at this problem, after `Feedback:` on another
problem, and after a solution of this problem; and greedy held-out success (256 problems) with
no block, with a lesson for the task, and with a lesson that does not apply.

Keydoor (recipe keydoor_context), for 64 held-out layouts: the log-probability of the expert's
actions along its run (summed over the run's action tokens) with no block, after a successful
run in this layout (what the distill teacher sees of a sibling), after a run in another layout,
and after `Answer:` with this layout's shortest action sequence (OPSD's reference); and the
success of 64 sampled runs (T=1, 20 turns) with each block.

    python benchmarks/context_reading.py [--recipe context]     # ~1 min on 2 cores
    python benchmarks/context_reading.py --recipe arith_context
    python benchmarks/context_reading.py --recipe keydoor_context
Writes benchmarks/results/context_reading_<recipe>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from clicker.core.context import context_block
from clicker.models.policy import Policy
from clicker.models.tiny import HINTS
from clicker.tasks import make_world
from clicker.train.loop import evaluate

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"addition": {"digits": 2}, "letters": {}}
# recipe -> {row name: (task, kwargs)}
RECIPE_TASKS = {
    "default": {"addition": ("addition", {"digits": 2}), "letters": ("letters", {})},
    "context": {"addition": ("addition", {"digits": 2}), "letters": ("letters", {})},
    "arith_context": {"addition3": ("addition", {"digits": 3})},
    "keydoor_context": {"keydoor_long": ("keydoor", {"rooms": 3, "max_turns": 20})},
}


def answer_logp(policy: Policy, before: str, answer: str) -> float:
    """log p(answer | before), summed over the answer's tokens."""
    c, t = policy.encode(before), policy.encode(answer)
    with torch.no_grad():
        lp = torch.log_softmax(policy.model(input_ids=torch.tensor([c + t])).logits[0].float(), -1)
    return sum(float(lp[len(c) + i - 1, tok]) for i, tok in enumerate(t))


def probe_keydoor(policy: Policy, w, n: int = 64) -> dict[str, float]:
    """Expert-run log-probability and sampled success with each kind of block (see top)."""
    from clicker.rollout.runner import RolloutSettings, run_episodes

    rng = random.Random(0)
    blocks: dict[str, list[str]] = {"none": [], "solution": [], "other_solution": [],
                                    "reference": []}
    rows: dict[str, list[float]] = {k: [] for k in blocks}
    for i in range(n):
        env = w.make("test", i)
        text = env.reset()
        spans = []
        for a in w.optimal_actions("test", i):
            spans.append((len(text), len(text) + len(a) + 1))
            text += a + "\n" + env.step(a + "\n").observation
        solution = context_block("solution", _run_in(w, "test", i, rng))
        other = context_block("solution", _run_in(w, "test", i + 5_000, rng))
        reference = context_block("reference", w.reference("test", i))
        for name, block in (("none", ""), ("solution", solution), ("other_solution", other),
                            ("reference", reference)):
            blocks[name].append(block)
            rows[name].append(_actions_logp(policy, block, text, spans))
    out = {f"logp_{k}": sum(v) / len(v) for k, v in rows.items()}
    settings = RolloutSettings(group_size=1, temperature=1.0)
    torch.manual_seed(0)
    for name, bl in blocks.items():
        ctx = (lambda split, index, b=bl: b[index]) if name != "none" else None
        eps = run_episodes(policy, w, "test", list(range(n)), settings,
                           generator=torch.Generator().manual_seed(0), context=ctx)
        out[f"success_{name}"] = sum(e.success for e in eps) / len(eps)
    return out


def _run_in(w, split: str, index: int, rng: random.Random) -> str:
    """A successful noisy-expert run (eps 0.3) in the layout `index` of `split`."""
    from clicker.models.tiny import _keydoor_run

    for _ in range(16):
        text, ret = _keydoor_run(w, index, rng, eps=0.3, split=split)
        if ret > 0:
            return text
    raise RuntimeError("no successful run")


def _actions_logp(policy: Policy, block: str, text: str, spans) -> float:
    """Summed log p of the characters in `spans` of `text` (the actions), after `block`."""
    c = policy.encode(block)
    ids = c + policy.encode(text)
    with torch.no_grad():
        lp = torch.log_softmax(policy.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    total = 0.0
    for a, b in spans:  # char tokenizer: character k of text is token len(c) + k
        for k in range(a, b):
            total += float(lp[len(c) + k - 1, ids[len(c) + k]])
    return total


def probe(policy: Policy, task: str, n: int = 64, eval_n: int = 256,
          kwargs: dict | None = None) -> dict[str, float]:
    w = make_world(task, **(TASKS[task] if kwargs is None else kwargs))
    if w.max_turns > 1:
        return probe_keydoor(policy, w, n)
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
    for name, lesson in (("none", None), ("lesson", HINTS[w.name][0]),
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
    res = {row: probe(policy, task, kwargs=kw)
           for row, (task, kw) in RECIPE_TASKS[args.recipe].items()}
    keys = list(next(iter(res.values())))
    print(f"{'recipe ' + args.recipe:24s}" + "".join(f"{t:>12s}" for t in res))
    for k in keys:
        print(f"{k:24s}" + "".join(f"{res[t][k]:12.3f}" for t in res))
    out = ROOT / "benchmarks" / "results" / f"context_reading_{args.recipe}.json"
    out.write_text(json.dumps({"recipe": args.recipe, "results": res}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
