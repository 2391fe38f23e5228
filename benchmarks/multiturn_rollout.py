"""Multi-turn rollout speed: KV caches kept between turns (a sampler `Session`) vs a fresh
prefill of the whole transcript every turn, same model, same world, one run.

Why: on long multi-turn episodes the re-prefill costs O(turns^2) tokens; this measures what
keeping the caches saves. Both modes sample the same distribution, so their success rates must
agree within noise (printed as a check). Alternating timed rounds after a warm-up round each;
reports episodes/s, world tokens/s and the ratio session / re-prefill, and writes
benchmarks/results/multiturn_rollout.json.

    python benchmarks/multiturn_rollout.py                          # keydoor rooms=3, 20 turns
    python benchmarks/multiturn_rollout.py --rooms 2 --max-turns 8 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.rollout.sampler import Sampler
from clicker.tasks import make_world

RESULTS = Path(__file__).resolve().parent / "results" / "multiturn_rollout.json"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rooms", type=int, default=3)
    ap.add_argument("--max-turns", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", "-G", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per mode")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    policy = Policy.load(None, device=args.device)
    policy.model.eval()
    world = make_world("keydoor", rooms=args.rooms, max_turns=args.max_turns)
    sampler = Sampler(policy.model, policy.tokenizer)
    modes = {"session": True, "reprefill": False}
    runs: dict[str, dict[str, list]] = {
        m: {"seconds": [], "episodes": [], "world_tokens": [], "successes": []} for m in modes
    }

    def round_(mode: str, r: int) -> None:
        settings = RolloutSettings(args.group, 1.0, max_turns=args.max_turns,
                                   reuse_cache=modes[mode])
        gen = torch.Generator(device=policy.device).manual_seed(args.seed + r)
        idx = list(range(r * args.prompts, (r + 1) * args.prompts))
        sync = torch.cuda.synchronize if policy.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        eps = run_episodes(policy, world, "train", idx, settings, gen, sampler)
        sync()
        if r >= 0:
            runs[mode]["seconds"].append(time.perf_counter() - t0)
            runs[mode]["episodes"].append(len(eps))
            runs[mode]["world_tokens"].append(sum(e.world_tokens for e in eps))
            runs[mode]["successes"].append(sum(e.reward > 0 for e in eps))

    for mode in modes:
        round_(mode, -1)  # warm-up
    for r in range(args.repeats):
        for mode in modes:
            round_(mode, r)
    results = {}
    for mode, r in runs.items():
        results[mode] = {
            **r,
            "episodes_per_s": sum(r["episodes"]) / sum(r["seconds"]),
            "world_tokens_per_s": sum(r["world_tokens"]) / sum(r["seconds"]),
            "median_seconds": statistics.median(r["seconds"]),
            "success": sum(r["successes"]) / sum(r["episodes"]),
        }
    s, p = results["session"], results["reprefill"]
    speedup = s["world_tokens_per_s"] / p["world_tokens_per_s"]
    report = {
        "world": f"keydoor rooms={args.rooms} max_turns={args.max_turns}",
        "batch": f"{args.prompts} prompts x {args.group}",
        "device": str(policy.device), "threads": args.threads, "torch": torch.__version__,
        "machine": platform.machine(), "results": results, "speedup_world_tokens_per_s": speedup,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    for mode, r in results.items():
        print(f"{mode:>10}: {r['world_tokens_per_s']:8.0f} world tokens/s, "
              f"{r['episodes_per_s']:6.2f} episodes/s, median round {r['median_seconds']:.2f} s, "
              f"success {r['success']:.3f}")
    print(f"speedup (session / re-prefill, world tokens/s): {speedup:.2f}x  -> {args.out}")


if __name__ == "__main__":
    main()
