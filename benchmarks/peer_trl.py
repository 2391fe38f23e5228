"""Peer comparison with TRL: the same GRPO run by TRL's GRPOTrainer and by Clicker, side by side,
plus Clicker's dense `value` credit, on one task from one model, in one process.

What: three learners on Clicker's 2-digit addition (`make_world("addition", digits=2)`) from the
built-in tiny model (`tiny_model_dir(0)`, a 0.87M-parameter Llama with a character tokenizer):
  trl_grpo       TRL's `GRPOTrainer` (transformers `model.generate`, no vLLM);
  clicker_grpo   `clicker.train.loop.train` with `credit.sources: {grpo: 1.0}`;
  clicker_value  the same with `credit.sources: {value: 1.0}` (the clicker: a TD-learned value
                 model as a potential; Clicker's best dense method on this task).
It reports held-out success against world tokens, and seconds per training iteration.

Why: Clicker claims its one loop is at least as fast and as sample-efficient as the usual peer.
The target (issue): Clicker's GRPO at most 0.5x TRL's time per iteration at equal batch and
group size, with a learning curve at least as good. Whatever the run shows is written down.

Equal settings (checked from the sources, not assumed):
- batch: 16 prompts x 8 completions = 128 completions per iteration, one optimizer step on the
  whole batch (TRL: per_device_train_batch_size=128, gradient_accumulation_steps=1, so
  steps_per_generation=1 and generation_batch_size=128; num_iterations=1: generate, one step,
  generate again). The prompts are the same: TRL's dataset is Clicker's train indices in
  Clicker's order (seed * 10_000_019 + iteration * 16 + j), unshuffled.
- sampling: temperature 1, top-p 1, no top-k, at most `world.max_action_tokens` (6) completion
  tokens, a completion ends at "\\n" (Clicker's stop string; TRL gets the "\\n" token as an extra
  EOS id, so both keep the "\\n" in the completion) or at <eos>.
- reward: both ask the same env, `world.make("train", index).step(completion).reward`.
- advantage: (r - group mean) / (unbiased group std + 1e-4) in both (TRL scale_rewards="group").
- loss: Clicker's default `update.aggregation="token"` (sum over all action tokens of the batch /
  their number) with clip 0.2 below, 0.28 above = TRL `loss_type="dapo"` (its normaliser is the
  active tokens of the whole generation batch; with one step per generation that is the same
  sum / count), epsilon=0.2, epsilon_high=0.28. No KL: Clicker's kl_coef is 0, TRL beta=0.
- optimizer: AdamW, lr 3e-5 constant (TRL's default linear decay turned off), betas (0.9, 0.99)
  as Clicker's loop uses, eps 1e-8, no weight decay, gradient-norm clip 1.0.
- precision and device: float32 on CPU (TRL's bf16 default off), gradient checkpointing off
  (TRL's default is on), the same torch thread count (--threads) for all three.
Not equal (could not be removed): the random draws (each framework has its own RNG stream, so
completions differ even at the same seed); generation (Clicker's batched KV-cache sampler vs
transformers `generate`); the importance ratio (TRL, on-policy, uses the training forward's own
log-probs detached, so the ratio is exactly 1; Clicker divides by the sampler's log-probs, equal
up to float error, ratio ~1); the loss forward (TRL projects only completion positions through
its fused LM head; Clicker takes the full-vocabulary log-softmax at every position).

How counted:
- held-out success: Clicker's `evaluate(Policy(model, tokenizer), world, 256, temperature=0.0,
  seed=seed)` on the first 256 test problems, greedy, for all three (TRL's model is evaluated
  from a callback, in eval mode, with its generation config's EOS set back to the tokenizer's).
  Before training and every --eval-every iterations and at the last one.
- world tokens: prompt + completion tokens of every sampled training episode (the "\\n" or EOS
  that ended it included). Clicker counts them itself (`world/tokens`); for TRL a wrapper round
  the reward function adds len(prompt ids) + len(completion ids) for each completion it scores.
  Held-out evaluation is not counted, for any learner.
- seconds per iteration: "wall" = the time from the end of one iteration to the end of the next,
  less held-out evaluation: everything the framework does per iteration (TRL: dataloader,
  generation, reward, loss, backward, optimizer step, Trainer logging and callbacks; Clicker:
  rollout, credit, update, metrics.jsonl + TensorBoard logging). "core" = TRL from
  `on_step_begin` to `on_step_end` (generation .. optimizer step); Clicker its own
  `time/iteration_s` (rollout .. update). The figure is the median over iterations 2..N (the
  first is a warm-up), then the median over seeds. The ratio is Clicker / TRL (< 1: faster).
  Keep --threads at or below the idle cores: on 2 cores next to a busy 1-thread process, 2 torch
  threads made Clicker's GRPO iteration ~7 s instead of ~0.16 s with 1 thread (OpenMP threads
  spin-wait for a descheduled partner), which swamps every difference measured here. The script
  warns when the load average says the cores are taken.
  "sampling", a part of core: TRL's `_generate_single_turn` (transformers `generate` + EOS
  masking), Clicker's `time/rollout_s` (sampler + env verdicts).
- curves at equal world tokens: success interpolated linearly between eval points at the
  smallest final world-token count among all runs (every run reaches it).

Writes benchmarks/results/peer_trl/results.json and peer_trl.png (held-out success vs world
tokens, one line per learner, mean over seeds; bars of s/iteration), and prints a table.
TRL is not a Clicker dependency: run this from a separate venv (benchmarks/requirements-peer.txt
says how). Nothing is downloaded: the Hugging Face hub and datasets are forced offline.

    python benchmarks/peer_trl.py                   # 40 iterations, 1 seed
    python benchmarks/peer_trl.py --iterations 3    # a quick check
    python benchmarks/peer_trl.py --seeds 3 --threads 1   # the recorded run

results/peer_trl/results.json is that recorded run (2-core CPU, otherwise idle; an earlier
record beside a busy 1-thread process measured TRL at 0.200 s, this one at 0.228 s, so compare
ratios within one run). With 2 threads next to a busy process the timings were meaningless (Clicker's GRPO ~7 s an
iteration instead of 0.16 s: OpenMP threads spin-waiting for a descheduled partner).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may download at run time
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_DISABLED"] = "true"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import contextlib
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from clicker.core.config import Config, build_config
from clicker.models.policy import Policy
from clicker.models.tiny import tiny_model_dir
from clicker.tasks import make_world
from clicker.tasks.base import World
from clicker.train.loop import evaluate, train
from clicker.train.metrics import read_metrics

RESULTS = Path(__file__).resolve().parent / "results" / "peer_trl"
METHODS = ("trl_grpo", "clicker_grpo", "clicker_value")
LABELS = {"trl_grpo": "TRL GRPOTrainer", "clicker_grpo": "Clicker GRPO",
          "clicker_value": "Clicker value (dense)"}
TASK = {"name": "addition", "args": {"digits": 2}}
# benchmarks/sample_efficiency.py PRESETS["addition2"]: 16 prompts x group 8, lr 3e-5, greedy eval
PROMPTS, GROUP, LR, EVAL_PROBLEMS = 16, 8, 3e-5, 256
ADAM_BETAS = (0.9, 0.99)  # what clicker.train.loop.train gives torch.optim.AdamW
ADAM_EPS = 1e-8  # torch's AdamW default (Clicker) = TrainingArguments.adam_epsilon default
# Clicker update.aggregation -> the TRL loss_type with the same normalisation at one optimizer
# step per generation batch (losses.py; TRL GRPOTrainer._compute_loss)
LOSS_TYPE = {"token": "dapo", "sequence": "grpo", "constant": "dr_grpo"}
SEED_STRIDE = 10_000_019  # train/loop.py: train index = seed * stride + iteration * prompts + j
CREDIT = {"clicker_grpo": {"grpo": 1.0}, "clicker_value": {"value": 1.0}}


def fail(msg: str) -> NoReturn:
    """One line on stderr, exit code 2 (DESIGN.md: bad input is not a traceback)."""
    print(f"peer_trl: {msg}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--iterations", type=int, default=40, help="training iterations per run")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for every learner")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads, for all learners")
    ap.add_argument("--eval-every", type=int, default=10, help="held-out eval every N iterations")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of: {', '.join(METHODS)}")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results.json and the PNG go here")
    args = ap.parse_args(argv)
    if args.iterations < 2:
        fail("--iterations must be >= 2 (the first iteration is a warm-up, not timed)")
    if args.seeds < 1 or args.threads < 1 or args.eval_every < 1:
        fail("--seeds, --threads and --eval-every must be >= 1")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        fail(f"unknown method {', '.join(unknown) or '(none given)'}; choose from "
             f"{', '.join(METHODS)}")
    return args


def check_peer_installed() -> None:
    missing = [m for m in ("trl", "datasets") if importlib.util.find_spec(m) is None]
    if missing:
        fail(f"{' and '.join(missing)} not installed in {sys.executable}; TRL is not a Clicker "
             "dependency: make a separate venv and `pip install -r "
             "benchmarks/requirements-peer.txt` (see that file)")


def train_indices(seed: int, iteration: int) -> list[int]:
    """The train-split problem indices Clicker's loop draws at this iteration."""
    base = seed * SEED_STRIDE + iteration * PROMPTS
    return [base + j for j in range(PROMPTS)]


def held_out(model: Any, tokenizer: Any, world: World, seed: int) -> float:
    """Greedy held-out success of a live HF model, by Clicker's own `evaluate`."""
    was_training = model.training
    eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # as Clicker's runs have it
    model.eval()
    try:
        with torch.no_grad():
            r = evaluate(Policy(model, tokenizer), world, EVAL_PROBLEMS, temperature=0.0, seed=seed)
    finally:
        model.generation_config.eos_token_id = eos
        model.train(was_training)
    return r.success


# --- (a) TRL ---------------------------------------------------------------------------------


def run_trl(args: argparse.Namespace, seed: int, world: World, workdir: Path) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames

    model_dir = tiny_model_dir(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    newline = tokenizer.encode("\n", add_special_tokens=False)
    if len(newline) != 1 or world.stop != ("\n",):
        fail(f"expected the stop string '\\n' as one token; got stop {world.stop}, ids {newline}")
    # Clicker ends a completion at the stop string "\n"; TRL ends it at any EOS id of the
    # model's generation config (and keeps it, as Clicker keeps the stop token)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, newline[0]]

    idx = [i for it in range(args.iterations) for i in train_indices(seed, it)]
    data = Dataset.from_dict({"prompt": [world.make("train", i).reset() for i in idx],
                              "index": idx})
    seen = {"world_tokens": 0, "success": []}

    def addition_reward(prompts, completions, completion_ids, index, **_):
        """Clicker's env verdict; also counts world tokens (prompt + completion ids)."""
        rewards = []
        for prompt, completion, ids, i in zip(prompts, completions, completion_ids, index,
                                              strict=True):
            env = world.make("train", i)
            if env.reset() != prompt:
                raise RuntimeError(f"TRL row {i}: prompt {prompt!r} is not the env's")
            rewards.append(env.step(completion).reward)
            seen["world_tokens"] += len(tokenizer.encode(prompt, add_special_tokens=False))
            seen["world_tokens"] += len(ids)
        seen["success"].append(sum(r >= 1.0 for r in rewards) / len(rewards))
        return rewards

    u = build_config({}).update  # Clicker's update defaults, mapped one by one
    if u.kl_coef != 0 or u.epochs != 1 or u.minibatches != 1:
        fail("Clicker's update defaults changed (kl_coef/epochs/minibatches); revisit the mapping")
    cfg = GRPOConfig(
        output_dir=str(workdir / f"trl-seed{seed}"), seed=seed, data_seed=seed,
        max_steps=args.iterations, per_device_train_batch_size=PROMPTS * GROUP,
        gradient_accumulation_steps=1, num_generations=GROUP, num_iterations=1,
        shuffle_dataset=False, max_completion_length=world.max_action_tokens,
        temperature=1.0, top_p=1.0, top_k=0, use_vllm=False,
        beta=0.0, loss_type=LOSS_TYPE[u.aggregation], epsilon=u.clip_low,
        epsilon_high=u.clip_high, scale_rewards="group", mask_truncated_completions=False,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=u.weight_decay, adam_beta1=ADAM_BETAS[0], adam_beta2=ADAM_BETAS[1],
        adam_epsilon=ADAM_EPS, optim="adamw_torch", max_grad_norm=u.max_grad_norm,
        use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        report_to=[], logging_steps=1, save_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, dataloader_pin_memory=False, log_completions=False,
        remove_unused_columns=False,
    )
    if cfg.steps_per_generation != 1 or cfg.generation_batch_size != PROMPTS * GROUP:
        fail(f"TRL would split the batch: steps_per_generation={cfg.steps_per_generation}, "
             f"generation_batch_size={cfg.generation_batch_size}")
    trainer = GRPOTrainer(model=model, reward_funcs=addition_reward, args=cfg,
                          train_dataset=data, processing_class=tokenizer)
    curve = [[0, 0, held_out(trainer.model, tokenizer, world, seed)]]
    wall: list[float] = []
    core: list[float] = []

    class Probe(TrainerCallback):
        """Per-iteration timing and held-out evals, eval time excluded from the timing."""

        t_last = t_begin = 0.0

        def on_train_begin(self, *a, **k):
            self.t_last = time.perf_counter()

        def on_step_begin(self, *a, **k):
            self.t_begin = time.perf_counter()

        def on_step_end(self, _args, state, control, **k):
            t = time.perf_counter()
            wall.append(t - self.t_last)
            core.append(t - self.t_begin)
            step = state.global_step
            if step % args.eval_every == 0 or step == args.iterations:
                curve.append([step, seen["world_tokens"],
                              held_out(trainer.model, tokenizer, world, seed)])
            self.t_last = time.perf_counter()

    sampling: list[float] = []  # generation time per iteration, a diagnostic split of "core"
    generate = trainer._generate_single_turn

    def timed_generate(*a, **k):
        t = time.perf_counter()
        try:
            return generate(*a, **k)
        finally:
            sampling.append(time.perf_counter() - t)

    trainer._generate_single_turn = timed_generate
    trainer.remove_callback(PrinterCallback)  # its per-step log dict would flood the table
    trainer.add_callback(Probe())
    torch.set_num_threads(args.threads)
    trainer.train()
    if len(wall) != args.iterations:
        raise RuntimeError(f"TRL ran {len(wall)} optimizer steps, expected {args.iterations}")
    trl_tokens = int(trainer.state.num_input_tokens_seen)
    return {"curve": curve, "wall_s": wall, "core_s": core, "sampling_s": sampling,
            "train_success": seen["success"],
            "world_tokens": seen["world_tokens"], "trl_num_input_tokens_seen": trl_tokens,
            "loss_type": cfg.loss_type}


# --- (b), (c) Clicker ------------------------------------------------------------------------


def clicker_config(args: argparse.Namespace, seed: int, method: str) -> Config:
    return build_config({
        "model": {"device": "cpu", "dtype": "float32"},
        "task": TASK,
        "rollout": {"prompts": PROMPTS, "group_size": GROUP, "temperature": 1.0},
        "credit": {"sources": CREDIT[method]},
        "update": {"lr": LR},
        "train": {"iterations": args.iterations, "seed": seed, "eval_every": args.eval_every,
                  "eval_problems": EVAL_PROBLEMS, "eval_temperature": 0.0,
                  "checkpoint_every": 0, "keep_checkpoints": 1, "progress": False},
    })


@contextlib.contextmanager
def clicker_probe() -> Iterator[list[tuple[int, float, float]]]:
    """Wrap the loop's MetricsLog.log and evaluate: yields (iteration, time just before its log
    line, held-out eval seconds since the previous line) per logged iteration."""
    from clicker.train import loop

    marks: list[tuple[int, float, float]] = []
    pending = [0.0]
    orig_log, orig_eval = loop.MetricsLog.log, loop.evaluate

    def log(self, iteration, metrics):
        marks.append((iteration, time.perf_counter(), pending[0]))
        pending[0] = 0.0
        orig_log(self, iteration, metrics)

    def timed_evaluate(*a, **k):
        t = time.perf_counter()
        try:
            return orig_eval(*a, **k)
        finally:
            pending[0] += time.perf_counter() - t

    loop.MetricsLog.log, loop.evaluate = log, timed_evaluate
    try:
        yield marks
    finally:
        loop.MetricsLog.log, loop.evaluate = orig_log, orig_eval


def run_clicker(args: argparse.Namespace, seed: int, method: str, workdir: Path) -> dict[str, Any]:
    run_dir = workdir / f"{method}-seed{seed}"
    torch.set_num_threads(args.threads)
    with clicker_probe() as marks:
        train(clicker_config(args, seed, method), run_dir)
    rows = {r["iteration"]: r for r in read_metrics(run_dir)}
    its = list(range(args.iterations))
    if any(i not in rows for i in [-1, *its]):
        raise RuntimeError(f"{run_dir}: metrics.jsonl is missing iterations")
    t = {it: (tm, ev) for it, tm, ev in marks}
    wall = [t[i][0] - t[i - 1][0] - t[i][1] for i in its]
    curve = [[i + 1, rows[i]["world/tokens"], rows[i]["eval/success"]]
             for i in [-1, *its] if rows[i].get("eval/success") is not None]
    return {"curve": curve, "wall_s": wall, "core_s": [rows[i]["time/iteration_s"] for i in its],
            "sampling_s": [rows[i]["time/rollout_s"] for i in its],
            "train_success": [rows[i]["rollout/success"] for i in its],
            "world_tokens": rows[its[-1]]["world/tokens"]}


# --- report ----------------------------------------------------------------------------------


def per_iteration(times: list[float]) -> float:
    return statistics.median(times[1:])  # the first iteration is a warm-up


def at_tokens(curve: list[list[float]], tokens: float) -> float:
    c = np.asarray(curve, float)
    return float(np.interp(tokens, c[:, 1], c[:, 2]))


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    common = min(r["curve"][-1][1] for rs in runs.values() for r in rs)
    out: dict[str, Any] = {"equal_world_tokens": common, "methods": {}}
    for m, rs in runs.items():
        wall = [per_iteration(r["wall_s"]) for r in rs]
        core = [per_iteration(r["core_s"]) for r in rs]
        out["methods"][m] = {
            "seeds": len(rs),
            "s_per_iteration_wall": statistics.median(wall), "per_seed_wall": wall,
            "s_per_iteration_core": statistics.median(core), "per_seed_core": core,
            "s_sampling_per_iteration": statistics.median(
                [per_iteration(r["sampling_s"]) for r in rs]),
            "success_start": float(np.mean([r["curve"][0][2] for r in rs])),
            "success_end": float(np.mean([r["curve"][-1][2] for r in rs])),
            "success_at_equal_tokens": float(np.mean([at_tokens(r["curve"], common) for r in rs])),
            "world_tokens_end": float(np.mean([r["curve"][-1][1] for r in rs])),
        }
    base = out["methods"].get("trl_grpo")
    if base is not None:
        for row in out["methods"].values():
            row["ratio_to_trl_wall"] = row["s_per_iteration_wall"] / base["s_per_iteration_wall"]
            row["ratio_to_trl_core"] = row["s_per_iteration_core"] / base["s_per_iteration_core"]
    return out


def print_table(summary: dict[str, Any], iterations: int) -> None:
    b = summary["equal_world_tokens"]
    head = (f"{'learner':<24}{'s/it wall':>10}{'x TRL':>7}{'s/it core':>10}{'x TRL':>7}"
            f"{'sampling':>9}{'held-out 0':>11}{f'@{iterations} it':>9}"
            f"{f'@{b / 1e3:.1f}k tok':>12}{'tokens':>9}")
    print(head)
    print("-" * len(head))
    for m, r in summary["methods"].items():
        rw, rc = r.get("ratio_to_trl_wall"), r.get("ratio_to_trl_core")
        print(f"{LABELS[m]:<24}{r['s_per_iteration_wall']:>10.3f}"
              f"{'' if rw is None else f'{rw:.2f}':>7}{r['s_per_iteration_core']:>10.3f}"
              f"{'' if rc is None else f'{rc:.2f}':>7}{r['s_sampling_per_iteration']:>9.3f}"
              f"{r['success_start']:>11.3f}"
              f"{r['success_end']:>9.3f}{r['success_at_equal_tokens']:>12.3f}"
              f"{r['world_tokens_end']:>9.0f}")


def plot(path: Path, runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for m, rs in runs.items():
        cs = [np.asarray(r["curve"], float) for r in rs]  # (E, 3) each, same eval iterations
        mean = np.mean(np.stack(cs), axis=0)
        line = ax.plot(mean[:, 1], mean[:, 2], marker="o", ms=3,
                       label=f"{LABELS[m]} (n={len(rs)})")[0]
        if len(cs) > 1:
            for c in cs:
                ax.plot(c[:, 1], c[:, 2], color=line.get_color(), alpha=0.25, lw=0.8)
    ax.set(xlabel="world tokens (prompt + completion, every sampled episode)",
           ylabel=f"held-out success (greedy, {EVAL_PROBLEMS} problems)",
           title="2-digit addition, tiny model: mean over seeds")
    ax.legend(fontsize=8)
    names = list(summary["methods"])
    x = np.arange(len(names))
    for off, key, label in ((-0.2, "wall", "wall (all per-iteration work)"),
                            (0.2, "core", "core (generation .. optimizer step)")):
        vals = [summary["methods"][m][f"s_per_iteration_{key}"] for m in names]
        per = [summary["methods"][m][f"per_seed_{key}"] for m in names]
        err = np.array([[v - min(p) for v, p in zip(vals, per, strict=True)],
                        [max(p) - v for v, p in zip(vals, per, strict=True)]])
        bx.bar(x + off, vals, width=0.4, yerr=err, capsize=3, label=label)
    if "trl_grpo" in summary["methods"]:
        bx.axhline(0.5 * summary["methods"]["trl_grpo"]["s_per_iteration_wall"], color="grey",
                   ls="--", lw=1, label="target: 0.5 x TRL")
    bx.set_xticks(x, [LABELS[m].replace(" (", "\n(") for m in names], fontsize=8)
    bx.set(ylabel="seconds per iteration (median)", title="time per iteration (128 completions)")
    bx.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if "trl_grpo" in args.methods:
        check_peer_installed()
    import transformers

    torch.set_num_threads(args.threads)
    busy = os.getloadavg()[0]
    if busy + args.threads > (os.cpu_count() or 1) + 1.0:
        print(f"peer_trl: warning: load average {busy:.1f} + {args.threads} threads > "
              f"{os.cpu_count()} cores; oversubscribed torch threads spin and the timings are "
              "noise (lower --threads)", file=sys.stderr)
    world = make_world(TASK["name"], **TASK["args"])
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory(prefix="peer_trl-") as tmp:
        for seed in range(args.seeds):
            for m in args.methods:
                t0 = time.time()
                if m == "trl_grpo":
                    r = run_trl(args, seed, world, Path(tmp))
                else:
                    r = run_clicker(args, seed, m, Path(tmp))
                if torch.get_num_threads() != args.threads:
                    raise RuntimeError(f"{m} changed torch threads to {torch.get_num_threads()}")
                runs[m].append(r)
                print(f"peer_trl: {m} seed {seed}: held-out {r['curve'][0][2]:.3f} -> "
                      f"{r['curve'][-1][2]:.3f}, {r['world_tokens']} world tokens, "
                      f"{per_iteration(r['wall_s']):.3f} s/it, {time.time() - t0:.0f} s in all",
                      flush=True)
    summary = summarise(runs)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}
    if "trl_grpo" in args.methods:
        import trl

        versions["trl"] = trl.__version__
        summary["trl_loss_type"] = runs["trl_grpo"][0]["loss_type"]
    settings = {"task": TASK, "model": str(tiny_model_dir(0)), "prompts": PROMPTS, "group": GROUP,
                "lr": LR, "iterations": args.iterations, "eval_every": args.eval_every,
                "eval_problems": EVAL_PROBLEMS, "threads": args.threads, "seeds": args.seeds,
                "max_completion_tokens": world.max_action_tokens, "temperature": 1.0,
                "adam_betas": ADAM_BETAS, "device": "cpu", "dtype": "float32",
                "platform": platform.platform(), "cpus": os.cpu_count(), "versions": versions}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"settings": settings, "summary": summary, "runs": runs}, indent=1))
    plot(args.out / "peer_trl.png", runs, summary)
    print_table(summary, args.iterations)
    print(f"peer_trl: wrote {args.out / 'results.json'} and {args.out / 'peer_trl.png'}")


if __name__ == "__main__":
    main()
