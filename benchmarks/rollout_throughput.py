"""Rollout throughput: Clicker's Sampler against transformers' `model.generate`, same model.

Why: rollouts are most of an RL step's wall time, and on a tiny model per-step Python overhead
dominates. This samples the same addition prompts ("Q: 37+45=?\\nA: ") G times each at
temperature 1 with both samplers (stop at EOS and at "\\n", so completions have ragged lengths),
after one warm-up round each, over several timed repeats, and counts the generated tokens up to
and including the one that stopped each row. It prints tokens/s for both and the ratio
clicker/generate, and writes the figures to benchmarks/results/rollout_throughput.json.

    python benchmarks/rollout_throughput.py                 # built-in tiny model (tiny_model_dir)
    python benchmarks/rollout_throughput.py --random-init   # randomly initialised tiny Llama
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from clicker.rollout.sampler import Sampler

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RESULTS = Path(__file__).resolve().parent / "results" / "rollout_throughput.json"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16, help="distinct prompts per round")
    ap.add_argument("--group", "-G", type=int, default=8, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds per method")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--stop", default="\n", help="stop string ('' for EOS only)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--random-init", action="store_true", help="random tiny Llama, not the tiny model"
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    return ap.parse_args()


def load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """The model (eval mode, on device, in dtype), its tokenizer, and a name for the report."""
    dtype = DTYPES[args.dtype]
    if args.random_init:
        from clicker.models.chartok import build_char_tokenizer

        tok = build_char_tokenizer()
        torch.manual_seed(args.seed)
        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=128,
            intermediate_size=344,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=1024,
            bos_token_id=None,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        model, name = LlamaForCausalLM(config), "random-init tiny Llama"
    else:
        from clicker.models.tiny import tiny_model_dir

        path = tiny_model_dir(args.seed)
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        name = f"tiny model {path.name}"
    return model.to(device=args.device, dtype=dtype).eval(), tok, name


def make_prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"Q: {rng.randint(10, 99)}+{rng.randint(10, 99)}=?\nA: " for _ in range(n)]


def count_generated(rows: list[list[int]], tok: Any, eos: int, stop: list[str]) -> int:
    """Tokens of each row up to and including EOS or the token completing a stop string."""
    total = 0
    for row in rows:
        n = len(row)
        for j, t in enumerate(row):
            if t == eos or (stop and any(s in tok.decode(row[: j + 1]) for s in stop)):
                n = j + 1
                break
        total += n
    return total


def run_clicker(model: Any, tok: Any, texts: list[str], args: argparse.Namespace, seed: int):
    sampler = Sampler(model, tok, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    gen = torch.Generator(device=args.device).manual_seed(seed)

    def go() -> list[list[int]]:
        out = sampler.sample(
            ids,
            num_samples=args.group,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            stop=[args.stop] if args.stop else (),
            generator=gen,
        )
        return out.tokens

    return go


def run_generate(model: Any, tok: Any, texts: list[str], args: argparse.Namespace, seed: int):
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(args.device)
    width = enc["input_ids"].shape[1]
    extra: dict[str, Any] = {"stop_strings": [args.stop], "tokenizer": tok} if args.stop else {}
    torch.manual_seed(seed)

    def go() -> list[list[int]]:
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=args.temperature,
            top_k=0,
            top_p=1.0,
            num_return_sequences=args.group,
            max_new_tokens=args.max_new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            **extra,
        )
        return out[:, width:].tolist()

    return go


def measure(
    methods: dict[str, Callable[[], list[list[int]]]], args: argparse.Namespace, tok: Any
) -> dict[str, dict]:
    """A warm-up round of each method, then `repeats` timed rounds, alternating methods.

    Alternating spreads any load from other processes over both methods; tokens are counted
    outside the timing. Reported: tokens/s over all rounds and the median of per-round tokens/s
    (robust to a round slowed down by something else on the machine).
    """
    stop = [args.stop] if args.stop else []
    for go in methods.values():
        go()
    runs: dict[str, dict[str, list]] = {m: {"seconds": [], "tokens": []} for m in methods}
    for _ in range(args.repeats):
        for method, go in methods.items():
            if args.device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            rows = go()
            if args.device == "cuda":
                torch.cuda.synchronize()
            runs[method]["seconds"].append(time.perf_counter() - t0)
            runs[method]["tokens"].append(count_generated(rows, tok, tok.eos_token_id, stop))
    results = {}
    for method, r in runs.items():
        per_round = [n / s for n, s in zip(r["tokens"], r["seconds"])]
        results[method] = {
            **r,
            "tokens_per_s": sum(r["tokens"]) / sum(r["seconds"]),
            "median_tokens_per_s": statistics.median(per_round),
            "mean_completion_tokens": sum(r["tokens"])
            / (len(r["tokens"]) * args.prompts * args.group),
        }
    return results


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, tok, name = load(args)
    texts = make_prompts(args.prompts, args.seed)
    results = measure(
        {
            "clicker": run_clicker(model, tok, texts, args, args.seed),
            "generate": run_generate(model, tok, texts, args, args.seed),
        },
        args,
        tok,
    )
    c, g = results["clicker"], results["generate"]
    ratio = c["tokens_per_s"] / g["tokens_per_s"]
    median_ratio = c["median_tokens_per_s"] / g["median_tokens_per_s"]
    params = sum(p.numel() for p in model.parameters())
    print(
        f"{name} ({params / 1e6:.2f}M params), {args.device} {args.dtype}, "
        f"{args.threads} threads, {args.prompts} prompts x G={args.group}, "
        f"max_new_tokens={args.max_new_tokens}, stop={args.stop!r}, {args.repeats} repeats"
    )
    print(f"{'method':<10} {'tokens/s':>10} {'median':>10} {'s/round':>9} {'tok/row':>8}")
    for method, r in results.items():
        print(
            f"{method:<10} {r['tokens_per_s']:>10.0f} {r['median_tokens_per_s']:>10.0f} "
            f"{sum(r['seconds']) / args.repeats:>9.3f} {r['mean_completion_tokens']:>8.1f}"
        )
    print(f"ratio clicker/generate: {ratio:.2f}x overall, {median_ratio:.2f}x median")
    report = {
        "model": name,
        "parameters": params,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "results": results,
        "ratio_clicker_over_generate": ratio,
        "median_ratio_clicker_over_generate": median_ratio,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
