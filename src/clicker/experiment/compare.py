"""`clicker compare`: which credit method should I use on my task, and how much does it save?

Runs every method x task x seed as an ordinary training run (`clicker.train.loop.train`) from
the same initial model, stopped by an equal world-token budget, then reports world tokens to a
held-out target, final success and area under the learning curve, with few-seed statistics done
properly (IQM, stratified-bootstrap 95 % CIs, probability of improvement over GRPO; Agarwal et al.
2021). Output, in `--out`:

- `runs/<task>/<method>/seed<s>/`: normal run directories (metrics.jsonl, checkpoints, gallery);
- `results.json`: every statistic, per-seed values, curves, cost and gallery episodes;
- `report.html` (self-contained) and a PNG per task (`clicker.experiment.report`).

Runs go to parallel worker processes (`jobs`; each run gets its own process, so its peak memory
is its own) with one live display for all of them. An interrupted compare resumes: a finished
run (summary.json) is reused after checking its config is the one asked for, a run with a
checkpoint continues from it, a run interrupted before its first checkpoint starts again.
`only_seeds` / `only_methods` (`--only-seeds`, `--only-methods`) run part of a compare with the
whole compare's jobs and so threads; its report covers every finished run and names the
unfinished ones. A task whose runs started from different weights (a tiny model rebuilt in
another environment between sessions; `clicker.models.fingerprint`) is flagged: `mixed_weights`
in results.json, a warning under its table and in the report.

Tokens to target: first crossing of the held-out curve, linear between eval points. A run that
has not crossed by the budget is censored and scored as NEVER_REACHED_FACTOR x budget (PAR-2), a
finite lower bound on its cost, so IQMs, CIs and ratios stay finite; results.json keeps the raw
per-seed values (null = never).
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clicker.core.config import Config, ConfigError, build_config, parse_override
from clicker.core.config import set_path as _set_path
from clicker.experiment.catalog import COMMON, METHODS, PRESETS, TASKS
from clicker.experiment.results import (
    BASELINE,
    NEVER_REACHED_FACTOR,
    analyse_task,
    dream_series,
    load_curve,
    print_tables,
    resources_of,
)
from clicker.experiment.runs import Run, default_jobs, execute, is_done
from clicker.experiment.stats import probability_of_improvement
from clicker.models.fingerprint import environments_of, mixed_fingerprints

__all__ = ["METHODS", "PRESETS", "TASKS", "CompareSpec", "Run", "compare", "is_done",
           "load_spec", "plan", "select_runs"]

GALLERY_PER_METHOD = 2  # episodes per method and task in results.json / the report

class TaskDef(BaseModel):
    """A task of a compare: config overrides (dotted keys), budget and target."""

    model_config = ConfigDict(extra="forbid")
    overrides: dict[str, Any]
    budget: int = Field(gt=0)
    target: float = Field(ge=0.0, le=1.0)


class CompareSpec(BaseModel):
    """What to compare. The YAML form of `clicker compare` has these keys (all optional)."""

    model_config = ConfigDict(extra="forbid")
    preset: str = Field("quick", description=f"one of {', '.join(PRESETS)}; the defaults below")
    tasks: list[str] | None = Field(None, description="task names (TASKS or task_defs)")
    methods: list[str] | None = Field(None, description="method names (METHODS or method_defs)")
    seeds: int | None = Field(None, ge=1, description="seeds 0..N-1 of every method and task")
    budget: int | None = Field(None, gt=0, description="world tokens per run, every task")
    target: float | None = Field(None, ge=0.0, le=1.0, description="held-out target, every task")
    jobs: int = Field(0, ge=0, description="parallel runs; 0 = one per CPU core (1 on CUDA)")
    set: list[str] = Field(default_factory=list, description="key=value for every run")
    lr: dict[str, float] = Field(default_factory=dict, description="policy lr per method")
    eval_every: int | None = Field(None, ge=1, description="held-out eval every N iterations")
    eval_problems: int | None = Field(None, ge=1, description="held-out problems per eval")
    task_defs: dict[str, TaskDef] = Field(default_factory=dict, description="custom tasks")
    method_defs: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="custom methods: name -> config overrides"
    )
    reps: int = Field(2000, ge=100, description="bootstrap replicates")

    def resolved(self) -> CompareSpec:
        """Fill tasks, methods and seeds from the preset; check every name."""
        if self.preset not in PRESETS:
            raise ConfigError(f"unknown compare preset {self.preset!r}; choose from: "
                              f"{', '.join(PRESETS)}")
        p = PRESETS[self.preset]
        spec = self.model_copy(update={
            "tasks": self.tasks or list(p["tasks"]),
            "methods": self.methods or list(p["methods"]),
            "seeds": self.seeds or p["seeds"],
        })
        tasks, methods = spec.all_tasks(), spec.all_methods()
        for kind, names, known in (("task", spec.tasks, tasks), ("method", spec.methods, methods)):
            unknown = [n for n in names or [] if n not in known]
            if unknown:
                raise ConfigError(f"unknown {kind} {unknown[0]!r}; choose from: "
                                  f"{', '.join(known)} (or define it in {kind}_defs)")
            if len(set(names or [])) != len(names or []):
                raise ConfigError(f"{kind}s are listed twice: {names}")
        extra = [m for m in spec.lr if m not in (spec.methods or [])]
        if extra:
            raise ConfigError(f"lr: {extra[0]!r} is not among the methods {spec.methods}")
        return spec

    def all_tasks(self) -> dict[str, TaskDef]:
        return {n: TaskDef(**d) for n, d in TASKS.items()} | self.task_defs

    def all_methods(self) -> dict[str, dict[str, Any]]:
        return METHODS | self.method_defs


def load_spec(path: Path | None, **overrides: Any) -> CompareSpec:
    """A CompareSpec from a YAML file (or none) with command-line values on top (None = unset)."""
    data: dict[str, Any] = {}
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"compare spec not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of compare settings")
    for key, value in overrides.items():
        if value is not None and value != [] and value != {}:
            data[key] = value
    try:
        return CompareSpec.model_validate(data).resolved()
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(x) for x in e["loc"]) or "spec"
        raise ConfigError(f"compare {where}: {e['msg']}") from None


def run_dir_of(runs: Path, task: str, method: str, seed: int) -> Path:
    return runs / task / method / f"seed{seed}"


def make_config(spec: CompareSpec, task: str, method: str, seed: int) -> Config:
    """Overrides in order: COMMON, task, method, lr, eval-*, set, then seed and budget."""
    td = spec.all_tasks()[task]
    items: dict[str, Any] = {**COMMON, **td.overrides, **spec.all_methods()[method]}
    if method in spec.lr:
        items["update.lr"] = spec.lr[method]
    if spec.eval_every is not None:
        items["train.eval_every"] = spec.eval_every
    if spec.eval_problems is not None:
        items["train.eval_problems"] = spec.eval_problems
    for extra in spec.set:
        key, value = parse_override(extra)
        items[key] = value
    items |= {"train.seed": seed, "train.world_token_budget": budget_of(spec, task)}
    if not items.get("train.eval_every"):
        raise ConfigError(f"task {task}: train.eval_every must be > 0 (compare needs curves)")
    data: dict[str, Any] = {}
    for key, value in items.items():
        _set_path(data, key, copy.deepcopy(value))  # never alias (and mutate) TASKS
    return build_config(data)


def budget_of(spec: CompareSpec, task: str) -> int:
    return int(spec.budget if spec.budget is not None else spec.all_tasks()[task].budget)


def target_of(spec: CompareSpec, task: str) -> float:
    return float(spec.target if spec.target is not None else spec.all_tasks()[task].target)


def plan(spec: CompareSpec, out: Path) -> list[Run]:
    """Every run, its config validated (and its credit sources known) before any starts."""
    from clicker.credit import CREDITS
    from clicker.tasks import make_world

    runs = []
    for task in spec.tasks or []:
        for seed in range(spec.seeds or 1):
            for method in spec.methods or []:
                cfg = make_config(spec, task, method, seed)
                unknown = [s for s in cfg.credit.sources if s not in CREDITS]
                if unknown:
                    raise ConfigError(f"method {method}: unknown credit source {unknown[0]!r}; "
                                      f"choose from: {', '.join(CREDITS)}")
                runs.append(Run(task, method, seed, cfg, run_dir_of(out / "runs", task, method,
                                                                    seed)))
        cfg = runs[-1].cfg
        make_world(cfg.task.name, **cfg.task.args)  # a bad task argument fails now, not later
    return runs


def check_same_config(run: Run) -> None:
    """Fail if an existing run was made with another config (train.progress aside). Fields a
    later version added count at their defaults, so finished runs stay usable."""
    path = run.run_dir / "config.yaml"
    if not path.is_file():
        return
    try:
        saved = build_config(yaml.safe_load(path.read_text())).model_dump(mode="json")
    except ConfigError:
        saved = yaml.safe_load(path.read_text())  # a field was removed since: surely different
    wanted = run.cfg.model_dump(mode="json")
    for c in (saved, wanted):
        c["train"].pop("progress", None)
    if saved != wanted:
        raise ConfigError(f"{run.run_dir} was run with a different config (budget, lr, ...?); "
                          "delete it or use another --out")


def collect(spec: CompareSpec, runs: list[Run]) -> dict[str, Any]:
    """results.json from the finished runs (unfinished ones are left out and listed)."""
    from clicker.experiment.gallery import read_gallery

    results: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "preset": spec.preset, "methods": spec.methods, "seeds": spec.seeds,
        "baseline": BASELINE,
        "never_reached": f"scored as {NEVER_REACHED_FACTOR:g} x budget in IQMs, CIs, ratios and "
                         "probabilities; null in per_seed",
        "method_overrides": {m: spec.all_methods()[m] | (
            {"update.lr": spec.lr[m]} if m in spec.lr else {}) for m in spec.methods or []},
        "tasks": {}, "overall": {}, "unfinished": [],
    }
    per_task: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for task in spec.tasks or []:
        curves: dict[str, list] = {}
        raw: dict[str, list[dict]] = {}
        summaries: dict[str, list[dict]] = {}
        gallery: dict[str, list[dict]] = {}
        named: dict[str, dict] = {}  # run name -> summary, for the weights' fingerprints
        for method in spec.methods or []:
            mine = [r for r in runs if r.task == task and r.method == method]
            for r in mine:
                loaded = load_curve(r.run_dir, with_iterations=True)
                if loaded is None:
                    results["unfinished"].append(r.name)
                    continue
                *c, its = loaded
                curves.setdefault(method, []).append(tuple(c))
                raw.setdefault(method, []).append(
                    {"seed": r.seed, "world_tokens": c[0].tolist(), "success": c[1].tolist(),
                     "imagined_tokens": None, **(dream_series(r.run_dir, its) or {})})
                named[r.name] = json.loads((r.run_dir / "summary.json").read_text())
                summaries.setdefault(method, []).append(named[r.name])
                if len(gallery.get(method, [])) < GALLERY_PER_METHOD:
                    eps = read_gallery(r.run_dir)[: GALLERY_PER_METHOD]
                    gallery.setdefault(method, []).extend(eps)
        if not curves:
            continue
        res, per_task[task] = analyse_task(curves, budget_of(spec, task), target_of(spec, task),
                                           spec.reps)
        for method, row in res["methods"].items():
            row["resources"] = resources_of(summaries[method])
        first = next(r for r in runs if r.task == task)
        resolved = first.cfg.model_dump(mode="json")
        res["config"] = {k: resolved[k] for k in ("model", "task", "rollout", "update", "train")}
        res["curves"] = raw
        res["environments"] = environments_of(named)  # the libraries behind each build
        if mixed := mixed_fingerprints(named):  # rows from several model builds
            res["mixed_weights"] = mixed
        if missing := [n for n in results["unfinished"] if n.startswith(f"{task}/")]:
            res["unfinished"] = missing  # not in the rows (a part run with --only-seeds?)
        res["gallery"] = {m: g[:GALLERY_PER_METHOD] for m, g in gallery.items()}
        results["tasks"][task] = res
    for method in spec.methods or []:
        both = [t for t in per_task if method in per_task[t] and BASELINE in per_task[t]]
        if both:
            results["overall"][method] = {"poi_over_grpo_tokens_to_target": (
                probability_of_improvement({t: -per_task[t][method]["ttt"] for t in both},
                                           {t: -per_task[t][BASELINE]["ttt"] for t in both})),
                "tasks": both}
    return results


def select_runs(spec: CompareSpec, runs: list[Run], seeds: list[int] | None = None,
                methods: list[str] | None = None) -> list[Run]:
    """The runs among `runs` with a seed in `seeds` and a method in `methods` (None: any). The
    spec stays whole, so the others keep their run dirs and the report covers every finished
    run: a compare's seeds can be spread over sessions or machines, or some of them rerun."""
    n = spec.seeds or 1
    if seeds is not None:
        bad = sorted(s for s in seeds if not 0 <= s < n)
        if bad:
            raise ConfigError(f"only seed {bad[0]}: this compare has seeds 0..{n - 1} (raise "
                              "seeds to add more)")
    if methods is not None:
        bad_m = [m for m in methods if m not in (spec.methods or [])]
        if bad_m:
            raise ConfigError(f"only method {bad_m[0]!r} is not among the compare's methods: "
                              f"{', '.join(spec.methods or [])}")
    return [r for r in runs if (seeds is None or r.seed in seeds)
            and (methods is None or r.method in methods)]


def compare(spec: CompareSpec, out: Path, *, report_only: bool = False,
            only_seeds: list[int] | None = None,
            only_methods: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) every run of the spec (or those `select_runs` picks with `only_seeds`
    and `only_methods`), then write results.json, PNGs and report.html over every finished run
    of the spec. Raises RuntimeError after writing the report if any run failed."""
    from clicker.experiment.report import write_report
    from clicker.train.checkpoint import write_atomic

    runs = plan(spec, out)
    chosen = select_runs(spec, runs, only_seeds, only_methods)
    for r in runs:
        check_same_config(r)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "compare.yaml", yaml.safe_dump(spec.model_dump(mode="json"),
                                                      sort_keys=False))
    failures: dict[str, str] = {}
    if not report_only:
        # jobs (and so each run's threads) from the whole compare: a run picked alone gets the
        # threads it would have had among all of them, and with them the same samples
        failures = execute(chosen, spec.jobs or default_jobs(runs))
    results = collect(spec, runs)
    results["failed"] = failures
    write_atomic(out / "results.json", json.dumps(results, indent=1))
    print_tables(results)
    if results["tasks"]:
        write_report(out, results)
    if failures:
        names = ", ".join(failures)
        raise RuntimeError(f"{len(failures)} run(s) failed ({names}); their logs are next to "
                           "their run dirs (<run>.log); run the same compare again to retry them")
    return results
