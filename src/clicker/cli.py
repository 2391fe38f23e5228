"""The `clicker` command: train, eval, compare, serve, lessons, init-model.

Bad input (unknown task or method, a field of the wrong type, a missing model directory, an
unreadable YAML) prints one line naming what is wrong and exits with code 2, without a
traceback (set CLICKER_DEBUG=1 to see one). Everything is checked before a run directory is
touched, so nothing already written there is lost.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from clicker.core.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from clicker.lessons.store import LessonBook

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Clicker: RL for language-model policies with dense credit.")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]
SetOpt = Annotated[list[str], typer.Option("--set", "-s", help="override: key.sub=value")]


def _check(cfg: Config) -> None:
    """Fail fast on anything that would fail later: task, credit sources, model directory."""
    from clicker.credit import CREDITS
    from clicker.tasks import make_world

    make_world(cfg.task.name, **cfg.task.args)
    unknown = [name for name in cfg.credit.sources if name not in CREDITS]
    if unknown:
        raise ConfigError(f"unknown credit source {unknown[0]!r}; choose from: "
                          f"{', '.join(CREDITS)}")
    if cfg.model.path is not None and not (Path(cfg.model.path) / "config.json").is_file():
        raise ConfigError(f"model.path: no model directory (config.json) at {cfg.model.path}")


@app.command()
def train(
    config: ConfigOpt = None,
    set_: SetOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    run_dir: Annotated[Path | None, typer.Option(help="run directory")] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run in this dir")] = None,
    ray: Annotated[str | None, typer.Option(
        help="rollouts on Ray workers: auto (join this machine's cluster, else start one), "
             "local, or a cluster address")] = None,
) -> None:
    """Train a policy (default: GRPO on 2-digit addition with the built-in tiny model)."""
    from clicker.train.loop import train as run_training

    if resume is not None:
        if config is not None:
            raise ConfigError("--resume reads the run's own config.yaml; drop --config")
        if not (resume / "config.yaml").is_file():
            raise ConfigError(f"--resume: no run (config.yaml) in {resume}")
        config, run_dir = resume / "config.yaml", resume
    cfg = load_config(config, [*set_, *([f"rollout.ray={ray}"] if ray else [])])
    _check(cfg)
    summary = run_training(cfg, run_dir, resume=resume is not None)
    before, after = summary["initial_eval_success"], summary["final_eval_success"]
    if before is not None and after is not None and resume is None:
        typer.echo(f"held-out success: before {before:.3f} -> after {after:.3f}")
    typer.echo(f"run directory: {summary['run_dir']}")


def _resolve_model(model: Path | None) -> tuple[Path | None, Path | None]:
    """`--model` as a model directory, and the run's config.yaml when it named a run directory
    (which stands for its latest checkpoint). None stays None: the built-in tiny model."""
    if model is None:
        return None, None
    if (model / "config.yaml").is_file():
        from clicker.train.checkpoint import latest_checkpoint

        ckpt = latest_checkpoint(model)
        if ckpt is None:
            raise ConfigError(f"run {model} has no checkpoint yet")
        return ckpt, model / "config.yaml"
    if not (model / "config.json").is_file():
        raise ConfigError(f"--model: no model directory (config.json) or run at {model}")
    return model, None


@app.command("eval")
def evaluate_cmd(
    model: Annotated[Path | None, typer.Option(help="model dir or run dir (default: tiny)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = [],  # noqa: B006
    problems: Annotated[int, typer.Option(min=1, help="held-out problems")] = 128,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy")] = 0.0,
    split: Annotated[str, typer.Option(help="test | train")] = "test",
) -> None:
    """Held-out success of a model (or a run's latest checkpoint) on a task."""
    from clicker.models.policy import Policy
    from clicker.tasks import make_world
    from clicker.train.loop import evaluate

    if split not in ("test", "train"):
        raise ConfigError(f"--split must be test or train, got {split!r}")
    model, run_config = _resolve_model(model)
    cfg = load_config(config or run_config, set_)  # a run dir: its task, unless --config
    world = make_world(cfg.task.name, **cfg.task.args)
    policy = Policy.load(model or cfg.model.path, device=cfg.model.device, dtype=cfg.model.dtype,
                         tiny_seed=cfg.model.tiny_seed,
                         tiny_recipe=cfg.model.tiny_recipe)
    r = evaluate(policy, world, problems, temperature=temperature, seed=cfg.train.seed,
                 max_turns=cfg.rollout.max_turns, split=split,
                 reuse_cache=cfg.rollout.reuse_cache)
    typer.echo(json.dumps({"task": cfg.task.name, "split": split, "success": r.success,
                           "reward": r.reward, "episodes": r.episodes}))


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _seed_list(text: str | None) -> list[int] | None:
    """'1,3' or '1-4' or '0,2-3' -> sorted seeds; None if not given."""
    if not text:
        return None
    seeds: set[int] = set()
    for part in _names(text) or []:
        lo, dash, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi if dash else lo)
        except ValueError:
            raise ConfigError(f"--only-seeds {text!r}: expected seeds like 1,3 or 1-4") from None
        if b < a:
            raise ConfigError(f"--only-seeds {text!r}: range {part} runs backwards")
        seeds.update(range(a, b + 1))
    return sorted(seeds)


@app.command()
def compare(
    spec: Annotated[Path | None, typer.Argument(help="YAML compare spec (optional)")] = None,
    preset: Annotated[str | None, typer.Option(help="quick (default) | full")] = None,
    tasks: Annotated[str | None, typer.Option(help="comma-separated task names")] = None,
    methods: Annotated[str | None, typer.Option(help="comma-separated method names")] = None,
    seeds: Annotated[int | None, typer.Option(help="seeds per method and task")] = None,
    budget: Annotated[int | None, typer.Option(help="world tokens per run (every task)")] = None,
    target: Annotated[float | None, typer.Option(help="held-out success target")] = None,
    jobs: Annotated[int | None, typer.Option(help="parallel runs (0 = one per core)")] = None,
    lr: Annotated[list[str], typer.Option(help="METHOD=LR, repeatable")] = [],  # noqa: B006
    set_: SetOpt = [],  # noqa: B006
    out: Annotated[Path, typer.Option(help="output directory")] = Path("runs/compare"),
    report_only: Annotated[bool, typer.Option(help="no training: report finished runs")] = False,
    only_seeds: Annotated[str | None, typer.Option(
        help="run only these seeds, e.g. 1,3 or 1-4 (the report covers every finished run)")] = None,
    only_methods: Annotated[str | None, typer.Option(
        help="run only these methods, comma-separated (the report covers every finished run)")
    ] = None,
) -> None:
    """Compare credit methods on tasks at equal world-token budgets over seeds; write a report.

    Runs are resumable: run the same command again to continue an interrupted compare.
    --only-seeds / --only-methods run part of a compare (spread its seeds over sessions or
    machines, or rerun some) with the same configs and threads as the whole compare.
    Methods, tasks and presets: `clicker.experiment.compare` (METHODS, TASKS, PRESETS).
    """
    from clicker.experiment.compare import compare as run_compare
    from clicker.experiment.compare import load_spec

    lrs = {}
    for item in lr:
        name, _, value = item.partition("=")
        try:
            lrs[name] = float(value)
        except ValueError:
            raise ConfigError(f"--lr {item!r}: expected METHOD=FLOAT") from None
    s = load_spec(spec, preset=preset, tasks=_names(tasks), methods=_names(methods), seeds=seeds,
                  budget=budget, target=target, jobs=jobs, lr=lrs, set=list(set_))
    results = run_compare(s, out, report_only=report_only, only_seeds=_seed_list(only_seeds),
                          only_methods=_names(only_methods))
    if results["tasks"]:
        typer.echo(f"report: {(out / 'report.html').resolve()}")
    else:
        typer.echo(f"no finished runs to report in {out}")


@app.command()
def serve(
    model: Annotated[Path | None, typer.Option(help="model dir or run dir (default: tiny)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="0 = any free port")] = 8000,
    name: Annotated[str | None, typer.Option(help="model name (default: dir name)")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N]")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
    max_tokens: Annotated[int, typer.Option(min=1, help="cap on max_tokens per request")] = 1024,
) -> None:
    """Serve a model (or a run's latest checkpoint) as an OpenAI-compatible chat API."""
    from clicker.models.policy import Policy
    from clicker.serve import build_server

    path, _ = _resolve_model(model)
    policy = Policy.load(path, device=device, dtype=dtype)
    try:
        server = build_server(policy, host=host, port=port, model_name=name,
                              max_tokens_cap=max_tokens)
    except OSError as e:  # address in use, unknown host: bad input, not a crash
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    typer.echo(f"serving {server.model_name} at {server.url}/v1 (Ctrl-C to stop)")
    # a process started in the background of a non-interactive shell inherits SIGINT ignored;
    # Ctrl-C (or kill -INT) must still stop the server cleanly
    import signal

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.server_close()


@app.command("init-model")
def init_model(
    seed: Annotated[int, typer.Option(help="seed of the built-in tiny model")] = 0,
    recipe: Annotated[str, typer.Option(help="default | arith (2- and 3-digit addition)")] = "default",
    force: Annotated[bool, typer.Option(help="rebuild even if cached")] = False,
) -> None:
    """Build (or find cached) the built-in tiny model and print its directory."""
    from clicker.models.tiny import tiny_model_dir

    typer.echo(str(tiny_model_dir(seed, recipe=recipe, force=force, verbose=True)))


# ---- clicker lessons: inspect and move lesson books (issue 6) ------------------------------

lessons_app = typer.Typer(no_args_is_help=True,
                          help="Inspect, export and import lesson books (reflection).")
app.add_typer(lessons_app, name="lessons")
BookOpt = Annotated[Path | None, typer.Option("--book", "-b", help="lesson book (SQLite file)")]


@contextmanager
def _open_book(path: Path | None, budget: int | None = None) -> Iterator[LessonBook]:
    """Open an existing book (or create one when a budget is given); a damaged file is one
    line of bad input, not a traceback."""
    import sqlite3

    from clicker.lessons.store import BookError, LessonBook

    if path is None:
        raise ConfigError("--book is required: the lesson book's SQLite file")
    try:
        new = budget is not None and not path.exists()
        with LessonBook(path, token_budget=budget if new else None, create=new) as book:
            yield book
    except sqlite3.DatabaseError as e:
        raise BookError(f"{path} is not a readable lesson book: {e}") from None


@lessons_app.command("list")
def lessons_list(book: BookOpt = None,
                 all_: Annotated[bool, typer.Option("--all", help="retired and deleted too")]
                 = False) -> None:
    """List the book's lessons, highest worth first."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    with _open_book(book) as b:
        rows = b.lessons() if all_ else b.active()
        table = Table(title=f"{b.path}: {b.tokens_used()}/{b.token_budget} tokens active")
        for col in ("id", "worth", "status", "tokens", "text"):
            table.add_column(col, justify="right" if col in ("id", "worth", "tokens") else "left")
        for x in rows:  # Text: a lesson's brackets are not rich markup
            table.add_row(str(x.id), f"{x.worth:.3f}", x.status, str(x.tokens), Text(x.text))
    Console().print(table)


@lessons_app.command("show")
def lessons_show(lesson_id: Annotated[int, typer.Argument(help="lesson id")],
                 book: BookOpt = None) -> None:
    """One lesson with its full edit history and the reviewer replies that proposed it."""
    with _open_book(book) as b:
        x = b.get(lesson_id)
        typer.echo(f"lesson {x.id} [{x.status}] worth {x.worth:.3f}, {x.tokens} tokens, "
                   f"used {x.uses} (helped {x.helped}), iterations {x.created_iteration}-"
                   f"{x.updated_iteration}" + (f", merged into {x.merged_into}"
                                               if x.merged_into else ""))
        typer.echo(f"  {x.text}")
        if x.source_tasks or x.origin:
            typer.echo(f"  from tasks: {', '.join(x.source_tasks) or '-'}  {x.origin}".rstrip())
        shown: set[int] = set()
        for h in b.history(lesson_id):
            gate = json.dumps(h.gate) if h.gate is not None else "-"
            targets = f" {list(h.edit.target_ids)}" if h.edit.target_ids else ""
            typer.echo(f"edit {h.id} (iteration {h.iteration}): {h.edit.op}{targets} -> "
                       f"{h.status}{': ' + h.reason if h.reason else ''}; gate {gate}")
            if h.edit.reason:
                typer.echo(f"  reason: {h.edit.reason}")
            if h.review_id in shown:
                typer.echo(f"  reviewer reply: review {h.review_id}, shown above")
            elif h.review_id is not None:
                shown.add(h.review_id)
                r = b.review(h.review_id)
                typer.echo(f"  reviewer reply (review {r.id}, {json.dumps(r.backend)}):")
                typer.echo("    " + r.reply.replace("\n", "\n    "))


@lessons_app.command("export")
def lessons_export(file: Annotated[Path, typer.Argument(help="JSON file to write")],
                   book: BookOpt = None) -> None:
    """Write the book (lessons, edits, reviewer calls; no secrets) to a JSON file."""
    with _open_book(book) as b:
        b.export(file)
        n = len(b.lessons())
    typer.echo(f"exported {n} lessons to {file}")


@lessons_app.command("import")
def lessons_import(file: Annotated[Path, typer.Argument(help="JSON file from `export`")],
                   book: BookOpt = None,
                   budget: Annotated[int | None, typer.Option(
                       min=1, help="token budget of a new book: creates it if missing")] = None) -> None:
    """Merge an exported book into this one (fresh ids, provenance kept)."""
    with _open_book(book, budget) as b:
        counts = b.import_(file)
    typer.echo(f"imported {counts['lessons']} lessons, {counts['edits']} edits, "
               f"{counts['reviews']} reviews ({counts['over_budget']} retired: over budget)")


# typer >= 0.29 vendors its own click: its usage errors are not click's. Catch both, found
# through typer's public BadParameter (which is click's own class on older typer).
_USAGE_ERRORS = tuple({click.ClickException, *(c for c in typer.BadParameter.__mro__
                                               if c.__name__ == "ClickException")})
_ABORTS = tuple({click.exceptions.Abort, typer.Abort})


def main() -> None:
    debug = bool(os.environ.get("CLICKER_DEBUG"))
    try:
        # click 8.2+ returns (not raises) the exit code of an interrupt when not standalone
        code = app(standalone_mode=False)
        if isinstance(code, int) and code != 0:
            if code == 130:
                typer.echo("interrupted", err=True)
            sys.exit(code)
    except _USAGE_ERRORS as e:  # usage errors: click prints them, exit 2
        e.show()
        sys.exit(e.exit_code)
    except (*_ABORTS, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except (ConfigError, ValueError, FileNotFoundError, ImportError, TypeError) as e:
        if debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        typer.echo(f"clicker: error: {msg}", err=True)
        sys.exit(2)
    except RuntimeError as e:  # work that ran and failed (e.g. runs of a compare): not bad input
        if debug:
            raise
        typer.echo(f"clicker: failed: {str(e).splitlines()[0]}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
