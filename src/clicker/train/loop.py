"""The training loop. It reads top to bottom: rollout -> credit -> update -> log -> checkpoint.

`train(cfg)` runs a whole run in a run directory: the resolved `config.yaml`, `metrics.jsonl`,
TensorBoard events and atomic HF-format checkpoints. `train(cfg, resume=True)` continues a run
from its latest checkpoint (model, optimizer, RNG states, credit models, counters).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from clicker.core.config import Config, dump_config
from clicker.core.types import Batch
from clicker.credit import CreditContext, make_credit
from clicker.experiment.gallery import gallery_records, write_gallery
from clicker.models.fingerprint import environment, weights_fingerprint
from clicker.models.policy import Policy
from clicker.rollout.engine import make_engine
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.rollout.sampler import Sampler
from clicker.rollout.shards import run_shard, shard_spans
from clicker.tasks import make_world
from clicker.tasks.base import World
from clicker.train.checkpoint import (
    latest_checkpoint,
    load_trainer_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_atomic,
)
from clicker.train.distributed import DataParallel
from clicker.train.metrics import MetricsLog
from clicker.train.progress import TrainProgress
from clicker.train.update import SkipStreak, policy_update

EVAL_SEED_OFFSET = 1_000_003  # eval draws are fixed per run, so curves compare like with like


@dataclass(frozen=True)
class EvalResult:
    success: float
    reward: float
    episodes: int
    world_tokens: int = 0


def evaluate(
    policy: Policy, world: World, n: int, *, temperature: float = 0.0, seed: int = 0,
    max_turns: int | None = None, split: str = "test", reuse_cache: bool = True,
    context: Callable[[str, int], str] | None = None, offset: int = 0,
    model: torch.nn.Module | None = None,
) -> EvalResult:
    """Held-out success: one episode per problem on problems offset..offset+n-1 of the split,
    with `context(split, index)` before each prompt if given (the lessons book); `model`:
    sample with this module instead of the policy's (a sharded policy's whole replica)."""
    gen = torch.Generator(device=policy.device).manual_seed(seed + EVAL_SEED_OFFSET)
    settings = RolloutSettings(group_size=1, temperature=temperature, max_turns=max_turns,
                               reuse_cache=reuse_cache)
    eps = []
    chunk = 64
    sampler = Sampler(model or policy.model, policy.tokenizer)
    for start in range(0, n, chunk):
        idx = list(range(offset + start, offset + min(n, start + chunk)))
        eps += run_episodes(policy, world, split, idx, settings, gen, sampler,  # type: ignore[arg-type]
                            context=context)
    return EvalResult(
        success=sum(e.success for e in eps) / len(eps),
        reward=sum(e.reward for e in eps) / len(eps),
        episodes=len(eps),
        world_tokens=sum(e.world_tokens for e in eps),
    )


def write_reports(run_dir: Path, files: dict[str, str | bytes]) -> None:
    """Credit sources' reports (disagreement lists, over-optimisation plots) into reports/."""
    if not files:
        return
    out = run_dir / "reports"
    out.mkdir(exist_ok=True)
    for name, content in files.items():
        if isinstance(content, bytes):
            tmp = out / (name + ".tmp")
            tmp.write_bytes(content)
            tmp.replace(out / name)
        else:
            write_atomic(out / name, content)


def open_lessons(cfg: Config, run_dir: Path, policy: Policy, world: World):
    """The run's lesson book and, when it reviews, its Reflection (None, None without a book)."""
    lc = cfg.lessons
    if not lc.enabled:
        return None, None
    from clicker.lessons.backends import HTTPChat, LocalHFChat, PolicyChat
    from clicker.lessons.reflect import VALIDATION_OFFSET, Reflection
    from clicker.lessons.store import LessonBook

    book = LessonBook(lc.book or run_dir / "lessons.db", token_budget=lc.token_budget,
                      count_tokens=lambda t: len(policy.encode(t)), retire_below=lc.retire_below)
    if not lc.review:
        return book, None
    if lc.reviewer == "http":
        backend = HTTPChat(lc.base_url, lc.model, api_key_env=lc.api_key_env,
                           timeout_s=lc.timeout_s, retries=lc.retries)
    elif lc.reviewer == "hf":
        backend = LocalHFChat(lc.reviewer_model, device=cfg.model.device, seed=cfg.train.seed)
    else:
        backend = PolicyChat(policy, seed=cfg.train.seed)
    def score(context):  # greedy validation reward on train problems training never samples
        r = evaluate(policy, world, lc.gate_problems, seed=cfg.train.seed, split="train",
                     offset=VALIDATION_OFFSET, context=context, max_turns=cfg.rollout.max_turns)
        return r.reward, r.world_tokens

    return book, Reflection(book, backend, score, lc)


def default_run_dir(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.task.name}-{'+'.join(cfg.credit.sources)}"


def resources(t_start: float, iteration_s: list[float], device: torch.device) -> dict:
    """Cost of this process's run: wall seconds since t_start, median seconds per iteration, peak
    resident memory of the process (MB; per run when each run has its own process, as under
    `clicker compare`) and peak CUDA memory allocated (MB, None without CUDA)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux, bytes on macOS
    rss_mb = rss / (2**20 if sys.platform == "darwin" else 2**10)
    cuda = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None)
    return {"wall_s": time.time() - t_start,
            "s_per_iteration": statistics.median(iteration_s) if iteration_s else None,
            "peak_rss_mb": rss_mb, "peak_cuda_mb": cuda}


def eval_due(every: int, it: int, iterations: int, spent: bool) -> bool:
    """Whether a held-out eval follows iteration `it` (the last one always has one)."""
    return bool(every) and ((it + 1) % every == 0 or it + 1 == iterations or spent)


FSDP_CREDIT = ("grpo", "drgrpo", "rloo", "rft", "value")


def check_fsdp(cfg: Config, dp: DataParallel | None) -> None:
    """`train.fsdp` runs only where every forward pass of the sharded policy is one every rank
    makes: the update, and scoring the shared batch. Sampling runs on a replica."""
    if dp is None:
        raise ValueError("train.fsdp shards the policy over torchrun processes: launch with "
                         "torchrun --nproc_per_node N -m clicker.cli train ...")
    other = [s for s in cfg.credit.sources if s not in FSDP_CREDIT]
    if other or ("value" in cfg.credit.sources and cfg.credit.value.model != "separate"):
        raise ValueError(f"train.fsdp runs credit sources {', '.join(FSDP_CREDIT)} (value with "
                         f"model: separate); not {', '.join(other) or 'value with model: head'}")


def train(cfg: Config, run_dir: Path | None = None, *, resume: bool = False) -> dict:
    """Train a policy as configured; returns the run summary (also in summary.json)."""
    t_start = time.time()
    run_dir = Path(run_dir or cfg.train.run_dir or default_run_dir(cfg))
    dp = DataParallel.from_env(sharded=cfg.train.fsdp)  # torchrun: clicker.train.distributed
    if cfg.train.fsdp:
        check_fsdp(cfg, dp)
    if dp is not None:
        if cfg.dream.enabled or cfg.lessons.enabled:
            raise ValueError("dream and lessons do not run under torchrun yet (issue 8); "
                             "train them in one process")
        if cfg.rollout.shards or cfg.rollout.ray:
            raise ValueError("under torchrun each rank samples its share of the prompts; "
                             "rollout.shards and rollout.ray do not apply")
    main_dir = run_dir  # checkpoints: rank 0 writes them (with every rank's RNG), all read them
    if dp is not None and not dp.main:  # rank 0 owns the run dir; the others log under ranks/<r>
        run_dir = run_dir / "ranks" / str(dp.rank)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = latest_checkpoint(main_dir) if resume else None
    has_metrics = (run_dir / "metrics.jsonl").is_file() and (run_dir / "metrics.jsonl").stat().st_size
    if resume and ckpt is None and has_metrics:
        raise ValueError(f"cannot resume {run_dir}: it has metrics but no finished checkpoint")
    if not resume and has_metrics:
        raise ValueError(f"run directory {run_dir} already has metrics; use --resume or a new dir")

    # --- set-up: world, policy, optimizer, credit, reference -----------------------------
    torch.manual_seed(cfg.train.seed)
    world = make_world(cfg.task.name, **cfg.task.args)
    initial = Policy.load(cfg.model.path, device=cfg.model.device, dtype=cfg.model.dtype,
                          tiny_seed=cfg.model.tiny_seed, tiny_recipe=cfg.model.tiny_recipe)
    policy = initial if ckpt is None else Policy.load(ckpt, device=cfg.model.device,
                                                      dtype=cfg.model.dtype)
    # the frozen initial policy: the KL reference and the PRM's pi_ref; copied only if needed
    frozen = initial.model if ckpt is not None else None
    if frozen is not None:
        frozen.eval().requires_grad_(False)
    # each rank samples its own share of the prompts, so its own stream (rank 0: the seed's)
    rank = dp.rank if dp is not None else 0
    generator = torch.Generator(device=policy.device).manual_seed(cfg.train.seed + 7919 * rank)
    cpu_gen = torch.Generator().manual_seed(cfg.train.seed + 1)
    sharded = dp is not None and dp.sharded  # FSDP: sample on a whole replica
    sampler = make_engine(cfg.rollout.engine, policy, device=cfg.rollout.engine_device,
                          dtype=cfg.rollout.engine_dtype or (
                              str(policy.model.dtype).removeprefix("torch.") if sharded else None))
    settings = RolloutSettings(cfg.rollout.group_size, cfg.rollout.temperature, cfg.rollout.top_p,
                               cfg.rollout.max_action_tokens, cfg.rollout.max_turns,
                               cfg.rollout.reuse_cache, cfg.rollout.step_timeout_s)
    pool = None  # Ray rollout workers
    if cfg.rollout.ray:
        if cfg.lessons.enabled or dp is not None or cfg.dream.in_process:
            raise ValueError("Ray rollouts do not run with lessons, in-process dreams (dream.plan, "
                             "branch, dyna_updates, doubt=cut) or torchrun yet (issue 8)")
        from clicker.rollout.ray_workers import RayRollouts

        pool = RayRollouts(cfg.model.model_dump(), cfg.task.model_dump(),
                           workers=cfg.rollout.workers, address=cfg.rollout.ray,
                           threads=cfg.rollout.worker_threads)
    elif cfg.credit.on_workers:
        raise ValueError("credit.on_workers runs credit sources in Ray actors: set rollout.ray "
                         "(auto, local or a cluster address)")
    ctx = CreditContext(policy, world, settings, generator, initial=frozen, seed=cfg.train.seed)
    remote = {}  # credit sources in Ray actors (clicker.credit.remote)
    if cfg.credit.on_workers:
        from clicker.credit.remote import remote_sources

        remote = remote_sources(cfg.credit.on_workers, cfg.credit.model_dump(),
                                cfg.model.model_dump(), cfg.task.model_dump(), settings, ctx,
                                lambda: pool.weights, threads=cfg.rollout.worker_threads,
                                options=pool.options)
    credit = make_credit(cfg.credit, ctx, remote)
    reference = ctx.reference if cfg.update.kl_coef > 0 else None
    if sharded:  # after every copy of the policy (replica, value model, reference) is made
        dp.shard_model(policy.model)
    u = cfg.update
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=u.lr, weight_decay=u.weight_decay,
                                  betas=(0.9, 0.99))
    dreamer = None
    if cfg.dream.enabled and pool is not None:  # the world model on a worker (Dyna only)
        from clicker.dream.remote import RemoteDreamer

        dreamer = RemoteDreamer(cfg.dream, cfg.rollout, cfg.model.model_dump(),
                                cfg.task.model_dump(), seed=cfg.train.seed, pool=pool,
                                threads=cfg.rollout.worker_threads)
    elif cfg.dream.enabled:
        from clicker.dream.dreamer import Dreamer
        from clicker.dream.dyna import after_update

        value = next((s for _, s in credit.sources if s.name == "value"), None)
        dreamer = Dreamer(cfg.dream, cfg.rollout, policy, world, seed=cfg.train.seed,
                          value=value.state_value if value else None, gamma=cfg.credit.value.gamma)
    shards = cfg.rollout.shards or (cfg.rollout.workers if pool is not None else 0)
    start, world_tokens = 0, 0
    if ckpt is not None:
        state = load_trainer_state(ckpt)
        if dp is not None:
            dp.load_optimizer_state(policy.model, optimizer, state["optimizer"])
        else:
            optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
        if dp is not None or "rank_rng" in state:  # a torchrun checkpoint: each rank its own
            ranks = len(state.get("rank_rng", [None]))
            if ranks != (dp.world if dp is not None else 1):
                how = f"torchrun --nproc_per_node {ranks}" if ranks > 1 else "one process"
                raise ValueError(f"{ckpt} was written by {ranks} process(es); resume it with {how}")
            rng = state["rank_rng"][dp.rank]
        set_rng_state(rng, generator)
        cpu_gen.set_state(rng["cpu_gen"])
        credit.load_state_dict(state["credit"])
        if dreamer is not None:
            dreamer.load_state_dict(state.get("dream", {}))
        start, world_tokens = state["iteration"] + 1, state["world_tokens"]
    write_atomic(run_dir / "config.yaml", dump_config(cfg))
    log = MetricsLog(run_dir, resume_from_iteration=start - 1 if resume else None)
    book, reflection = open_lessons(cfg, run_dir, policy, world)
    lessons = None
    if book is not None:
        from clicker.lessons.reflect import book_context

        ctx.lessons = book_context(book)
        lessons = ctx.lessons if cfg.lessons.inject else None  # what rollouts read

    def checkpoint(it: int) -> None:
        rng = rng_state(generator) | {"cpu_gen": cpu_gen.get_state()}
        optim = dp.optimizer_state(policy.model, optimizer) if dp else optimizer.state_dict()
        weights = dp.model_state(policy.model) if dp else None  # FSDP: gathered whole
        state = {"optimizer": optim, "rng": rng, "iteration": it,
                 "world_tokens": world_tokens, "credit": credit.state_dict()}
        if dreamer is not None:
            state["dream"] = dreamer.state_dict()
        if dp is not None:  # every rank's sampling streams; the rest is the same on every rank
            state["rank_rng"] = dp.gather([rng])
            if not dp.main:
                return
        save_checkpoint(main_dir, it, policy, state, keep=cfg.train.keep_checkpoints,
                        weights=weights)

    def held_out(context=None) -> float:
        r = evaluate(policy, world, cfg.train.eval_problems, temperature=cfg.train.eval_temperature,
                     seed=cfg.train.seed, max_turns=cfg.rollout.max_turns,
                     reuse_cache=cfg.rollout.reuse_cache, context=context,
                     model=sampler.model if sharded else None)
        return r.success

    tc = cfg.train
    if dp is not None and not dp.main:  # rank 0 evaluates (every rank holds the same policy)
        tc = tc.model_copy(update={"eval_every": 0})
    first_eval = held_out(lessons) if (start == 0 and tc.eval_every) else None
    progress = TrainProgress(tc.iterations, start, enabled=tc.progress)
    if first_eval is not None:
        log.log(-1, {"world/tokens": 0, "eval/success": first_eval})
        progress.update(start, held_out=first_eval, world_tokens=0)
    done = start - 1  # last finished iteration
    last_eval = first_eval
    last_batch = None  # (iteration, episodes, credit) of the newest iteration, for the gallery
    iteration_s: list[float] = []
    skips, stopped = SkipStreak(tc.max_skipped_updates), None
    try:
        for it in range(start, tc.iterations):
            if tc.world_token_budget and world_tokens >= tc.world_token_budget:
                break
            t0 = time.time()
            # --- rollout ------------------------------------------------------------------
            sampler.sync(it)  # the engine samples with the weights the update will train
            base = tc.seed * 10_000_019 + it * cfg.rollout.prompts
            indices = [base + j for j in range(cfg.rollout.prompts)]
            if pool is not None:
                episodes = pool.rollouts(policy.model.state_dict(), it, indices, settings,
                                         seed=tc.seed, shards=shards)
            elif shards:
                episodes = [e for s, span in enumerate(shard_spans(len(indices), shards))
                            for e in run_shard(policy, world, indices, span, settings,
                                               seed=tc.seed, iteration=it, shard=s,
                                               sampler=sampler, context=lessons,
                                               planner=dreamer.plan() if dreamer else None)]
            elif dp is None:
                episodes = run_episodes(
                    policy, world, "train", indices, settings, generator, sampler,
                    context=lessons, planner=dreamer.plan() if dreamer is not None else None)
            else:  # this rank's prompts, then every rank's episodes in prompt order
                lo, hi = dp.span(len(indices))
                episodes = dp.gather(run_episodes(policy, world, "train", indices[lo:hi],
                                                  settings, generator, sampler, group_offset=lo))
            t_roll = time.time() - t0
            world_tokens += sum(e.world_tokens for e in episodes)
            m_dream: dict[str, float] = {}
            dreams = []
            if dreamer is not None:  # the world model learns from the real episodes, then dreams
                m_dream = dreamer.observe(episodes) | dreamer.plan_metrics()
                dreams, m_dyna = dreamer.imagine(it, cfg.rollout.prompts, generator, indices)
                m_dream |= m_dyna | {"dream/imagined_tokens": float(dreamer.imagined_tokens)}
            batch = Batch.from_episodes(episodes + dreams, policy.pad_id)
            # --- credit -------------------------------------------------------------------
            ctx.iteration = it
            credit_out = credit(batch)
            world_tokens += credit_out.world_tokens  # e.g. Monte-Carlo continuations
            if dp is not None:  # continuations differ by rank: rank 0's count ends the run
                world_tokens = dp.first(world_tokens)
            advantages = credit_out.advantages
            if dreams:
                advantages = dreamer.weigh(batch, advantages)
            # --- update -------------------------------------------------------------------
            result = policy_update(policy, optimizer, batch, advantages, cfg.update, dp=dp,
                                   temperature=cfg.rollout.temperature or 1.0, reference=reference,
                                   generator=cpu_gen, distill=credit_out.distill)
            if cfg.dream.in_process:  # Dyna's planning steps, branched dreams
                m_more, spent = after_update(dreamer, credit, episodes, policy, optimizer, cfg,
                                             it, indices, generator, reference, cpu_gen)
                world_tokens += spent  # credit's real-world spending on dreams, if any
                m_dream |= m_more
            # --- log ----------------------------------------------------------------------
            action_tokens = sum(e.num_action_tokens for e in episodes)
            m = {
                "world/tokens": world_tokens,
                "world/tokens_iter": sum(e.world_tokens for e in episodes)
                + credit_out.world_tokens,
                "rollout/episodes": len(episodes),
                "rollout/verifier_errors": sum("verifier_error" in e.meta for e in episodes),
                **({"ray/workers": len(pool.workers), "ray/replaced": pool.replaced}
                   if pool is not None else {}),
                "rollout/success": sum(e.success for e in episodes) / len(episodes),
                "rollout/reward": sum(e.reward for e in episodes) / len(episodes),
                "rollout/action_tokens_mean": action_tokens / len(episodes),
                "rollout/truncated": sum(e.truncated for e in episodes) / len(episodes),
                "rollout/tokens_per_s": action_tokens / max(t_roll, 1e-9),
                "time/rollout_s": t_roll,
                "time/iteration_s": time.time() - t0,
            } | credit_out.metrics | result.metrics | m_dream
            if reflection is not None and (it + 1) % cfg.lessons.every == 0:
                m |= reflection.step(it, episodes, policy.decode)
                world_tokens += int(m["lessons/world_tokens"])  # gate rollouts are real
                m["world/tokens"] = world_tokens
            iteration_s.append(m["time/iteration_s"])
            last_batch = (it, episodes, credit_out)
            spent = bool(tc.world_token_budget and world_tokens >= tc.world_token_budget)
            if sharded and eval_due(cfg.train.eval_every, it, tc.iterations, spent):
                sampler.sync(it + 1)  # every rank gathers the weights of rank 0's eval replica
            if eval_due(tc.eval_every, it, tc.iterations, spent):
                last_eval = m["eval/success"] = held_out(lessons)
                if book is not None:  # the same policy with the book and without it
                    other = held_out(None if lessons else ctx.lessons)
                    m["eval/success_with_lessons"] = last_eval if lessons else other
                    m["eval/success_no_lessons"] = other if lessons else last_eval
            log.log(it, m)
            progress.update(it + 1, train=m["rollout/success"], held_out=last_eval,
                            world_tokens=world_tokens)
            # --- checkpoint ---------------------------------------------------------------
            if tc.checkpoint_every and (it + 1) % tc.checkpoint_every == 0:
                checkpoint(it)
            done = it
            if stopped := skips.after(it, result.skipped):
                break
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    finally:
        progress.close()
        log.close()
        if book is not None:
            book.close()
    if done >= start:
        checkpoint(done)
    write_reports(run_dir, credit.report())
    if pool is not None:  # after the checkpoint and reports: they read the credit/dream actors
        pool.close()
    if last_batch is not None:
        it, episodes, credit_out = last_batch
        write_gallery(run_dir, gallery_records(episodes, credit_out, policy.tokenizer, it,
                                               seed=tc.seed))
    summary = {"run_dir": str(run_dir), "iterations": done + 1, "world_tokens": world_tokens,
               **({"ranks": dp.world, "ranks_in_sync": dp.in_sync(policy.model)} if dp else {}),
               "imagined_tokens": dreamer.imagined_tokens if dreamer is not None else 0,
               "initial_eval_success": first_eval, "final_eval_success": last_eval,
               **({"stopped": stopped} if stopped else {}),
               "model_fingerprint": weights_fingerprint(initial.path), "environment": environment(),
               **resources(t_start, iteration_s, policy.device)}
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=1))
    if dp is not None:
        dp.close()
    return summary

