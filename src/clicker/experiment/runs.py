"""Executing the runs of a compare: one spawned worker process per run, at most `jobs` at once,
with one live display of all of them.

Each run gets its own process, so its peak memory is its own and a worker that crashes or is
killed fails only its own run. Ctrl-C or SIGTERM stops the workers; their runs resume from their
last checkpoint when the compare is run again (`run_one`).
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from clicker.core.config import Config


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    seed: int
    cfg: Config
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.task}/{self.method}/seed{self.seed}"


def is_done(run: Run) -> bool:
    return (run.run_dir / "summary.json").is_file()




def run_one(cfg: Config, run_dir: Path) -> dict:
    """Train (or resume, or reuse) one run, then make sure its curve ends with an eval."""
    from clicker.train.checkpoint import latest_checkpoint
    from clicker.train.loop import train

    if not (run_dir / "summary.json").is_file():
        resume = latest_checkpoint(run_dir) is not None
        if not resume and run_dir.exists():  # interrupted before its first checkpoint
            shutil.rmtree(run_dir)
        train(cfg, run_dir, resume=resume)
    final_eval(cfg, run_dir)
    return json.loads((run_dir / "summary.json").read_text())


def final_eval(cfg: Config, run_dir: Path) -> None:
    """Evaluate the final checkpoint if the last iteration logged no held-out success, with the
    run's eval settings (same problems, same eval seed), into final_eval.json."""
    from clicker.models.policy import Policy
    from clicker.tasks import make_world
    from clicker.train.checkpoint import latest_checkpoint, write_atomic
    from clicker.train.loop import evaluate
    from clicker.train.metrics import read_metrics

    rows = read_metrics(run_dir)
    if not rows or rows[-1].get("eval/success") is not None:
        return
    if (run_dir / "final_eval.json").exists():
        return
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        raise RuntimeError(f"{run_dir} has no checkpoint to evaluate")
    policy = Policy.load(ckpt, device=cfg.model.device, dtype=cfg.model.dtype)
    world = make_world(cfg.task.name, **cfg.task.args)
    tc = cfg.train
    r = evaluate(policy, world, tc.eval_problems, temperature=tc.eval_temperature, seed=tc.seed,
                 max_turns=cfg.rollout.max_turns, reuse_cache=cfg.rollout.reuse_cache)
    row = {"iteration": rows[-1]["iteration"], "world/tokens": rows[-1]["world/tokens"],
           "eval/success": r.success}
    write_atomic(run_dir / "final_eval.json", json.dumps(row))


def _worker(cfg: Config, run_dir: str, threads: int) -> None:
    """One run in its own process; its output goes to <run_dir>.log, not the live display. A
    Python error is written there too (its last line becomes the run's failure message)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch

    torch.set_num_threads(threads)
    d = Path(run_dir)
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(_log_of(d), "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            run_one(cfg, d)
        except BaseException:
            traceback.print_exc()
            raise


def _log_of(run_dir: Path) -> Path:
    return run_dir.parent / f"{run_dir.name}.log"


def _failure_of(run: Run, exitcode: int | None) -> str:
    """Why a worker ended without a summary: the last line of its log, or its exit code."""
    lines = []
    if _log_of(run.run_dir).is_file():
        lines = [x for x in _log_of(run.run_dir).read_text(errors="replace").splitlines()
                 if x.strip()]
    if exitcode is not None and exitcode < 0:
        return f"worker killed by signal {-exitcode}"
    return lines[-1].strip() if lines else f"worker exited with code {exitcode}"


def default_jobs(runs: list[Run]) -> int:
    import torch

    if any(r.cfg.model.device.startswith("cuda") for r in runs) or (
        torch.cuda.is_available() and any(r.cfg.model.device == "auto" for r in runs)
    ):
        return 1  # runs would share one GPU
    try:  # a run of the tiny model peaks at ~0.5-1.5 GB; leave room for the larger ones
        free_gb = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (ValueError, OSError, AttributeError):
        free_gb = math.inf
    return max(1, min(os.cpu_count() or 1, int(free_gb // 2), 8))


def _progress_of(run: Run) -> tuple[int, float | None, float | None]:
    """(world tokens so far, first held-out success, latest held-out success) from metrics."""
    path = run.run_dir / "metrics.jsonl"
    tokens, first, last = 0, None, None
    if not path.is_file():
        return tokens, first, last
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        tokens = max(tokens, int(row.get("world/tokens") or 0))
        if row.get("eval/success") is not None:
            first = row["eval/success"] if first is None else first
            last = row["eval/success"]
    return tokens, first, last


class LiveDisplay:
    """One table of every run: status, world tokens against the budget, held-out success.
    On a terminal it refreshes in place; otherwise it prints a line per finished run."""

    def __init__(self, runs: list[Run], budgets: dict[str, int]) -> None:
        from rich.console import Console

        self.runs, self.budgets = runs, budgets
        self.status = {r.name: ("reused" if is_done(r) else "waiting") for r in runs}
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.console = Console(stderr=True)
        self.live = None
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(self._table(), console=self.console, refresh_per_second=2)

    def __enter__(self) -> Self:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._table())
            self.live.__exit__(*exc)

    def set(self, run: Run, status: str, note: str = "") -> None:
        self.status[run.name] = status
        now = time.time()
        if status == "running":
            self.started[run.name] = now
        elif status in ("done", "failed"):
            self.ended[run.name] = now
            if self.live is None:
                took = now - self.started.get(run.name, now)
                _, first, last = _progress_of(run)
                held = f"held-out {first:.3f} -> {last:.3f}" if last is not None else ""
                print(f"[{sum(s in ('done', 'failed', 'reused') for s in self.status.values())}"
                      f"/{len(self.runs)}] {run.name}: {status} in {took:.0f} s {held} {note}",
                      file=sys.stderr, flush=True)
        self.refresh()

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(self._table())

    def _table(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        t = Table(title="clicker compare", expand=False)
        for col in ("run", "status", "world tokens", "", "held-out", "time"):
            t.add_column(col)
        now = time.time()
        for r in self.runs:
            status = self.status[r.name]
            tokens, first, last = _progress_of(r) if status != "waiting" else (0, None, None)
            budget = self.budgets[r.task]
            held = f"{first:.3f} -> {last:.3f}" if last is not None else ""
            start = self.started.get(r.name)
            took = f"{self.ended.get(r.name, now) - start:.0f} s" if start else ""
            style = {"running": "yellow", "done": "green", "failed": "red"}.get(status, "dim")
            t.add_row(r.name, f"[{style}]{status}", f"{tokens:,} / {budget:,}",
                      ProgressBar(total=budget, completed=min(tokens, budget), width=24),
                      held, took)
        return t


def execute(runs: list[Run], jobs: int) -> dict[str, str]:
    """Run every unfinished run in worker processes; return {run name: error} of failed ones."""
    todo = [r for r in runs if not is_done(r)]
    failures: dict[str, str] = {}
    budgets = {r.task: r.cfg.train.world_token_budget or 0 for r in runs}
    if not todo:
        return failures
    # torch threads per run from the jobs asked for, not from the runs left: a run's float
    # reductions (and so its samples) depend on its thread count, so a resumed compare whose
    # last run would otherwise get every core gives that run other numbers than the same run in
    # an uninterrupted compare (found rerunning one seed of the fifteenth round,
    # docs/dreaming_rounds.md)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    jobs = min(jobs, len(todo))
    _build_tiny_models(todo)
    ctx = multiprocessing.get_context("spawn")
    # `kill` (SIGTERM) stops the workers as Ctrl-C does, instead of leaving them orphaned
    old_term = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _execute(todo, runs, jobs, threads, budgets, ctx, failures)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, old_term)


def _build_tiny_models(todo: list[Run]) -> None:
    """Build the built-in tiny models the runs need here, once, before the workers start: each
    worker would otherwise build its own copy at the same time (the cache rename keeps one)."""
    from clicker.models.tiny import tiny_model_dir

    for seed, recipe in sorted({(r.cfg.model.tiny_seed, r.cfg.model.tiny_recipe) for r in todo
                                if r.cfg.model.path is None}):
        tiny_model_dir(seed, recipe=recipe)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _execute(todo: list[Run], runs: list[Run], jobs: int, threads: int, budgets: dict[str, int],
             ctx: Any, failures: dict[str, str]) -> dict[str, str]:
    """One process per run, at most `jobs` at once: a worker that crashes or is killed fails
    only its own run (a shared pool would be broken for all of them)."""
    running: dict[Any, Run] = {}
    queue = list(todo)
    with LiveDisplay(runs, budgets) as display:
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    r = queue.pop(0)
                    proc = ctx.Process(target=_worker, args=(r.cfg, str(r.run_dir), threads),
                                       daemon=False)
                    proc.start()
                    running[proc] = r
                    display.set(r, "running")
                mp_connection.wait([p.sentinel for p in running], timeout=1.0)
                for proc in [p for p in running if not p.is_alive()]:
                    r = running.pop(proc)
                    proc.join()
                    if proc.exitcode == 0 and is_done(r):
                        display.set(r, "done")
                    else:
                        failures[r.name] = _failure_of(r, proc.exitcode)
                        display.set(r, "failed", f"({failures[r.name]})")
                display.refresh()
        except KeyboardInterrupt:
            # Stop the workers now (their runs resume from their last checkpoint next time)
            # rather than wait for them to finish.
            for proc in running:
                proc.terminate()
            for proc in running:
                proc.join(timeout=10)
            raise
    return failures
