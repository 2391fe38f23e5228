"""The built-in tiny default: a ~0.9M-parameter Llama with a character tokenizer, warm-started.

Like a pretrained LLM that RL only has to steer, it is trained briefly (supervised) on
task-format text from the built-in tasks in two phases: right answers only (the skill gets into
the weights), then each task's noisy `warmup_text`, mostly a systematic wrong habit (addition
forgets its carries). So RL starts from a low but non-zero success rate: the model knows the
format and keeps real mass on the right answer, and reward has something to select.

It is built reproducibly from a seed and cached under `$CLICKER_HOME/models` (default: the user
cache dir, e.g. ~/.cache/clicker). `tiny_model_dir()` builds it on first use; the directory is a
normal Hugging Face model directory (`AutoModelForCausalLM.from_pretrained` loads it).

Recipes: `default` is the mixture above. `arith` trains longer on 2- and 3-digit addition only:
the default model's 1,000 steps over five worlds leave it at 0/512 on 3-digit sums (forward-order
carries need more training than a 0.9M model gets there), so no RL method can start on
`addition --digits 3` from it. `model.tiny_recipe=arith` selects it. `context` puts blocks
(a solution, the verifier's feedback, the answer, a lesson; half of them irrelevant) before
single-turn tasks, so the model reads privileged context as a pretrained LLM does: what
self-distillation's teacher and the lessons book rely on. `arith_context` and
`keydoor_context` do the same for 3-digit sums and for keydoor runs (a block there is a
successful run in the same layout, or its shortest action sequence).

Command: `clicker init-model [--seed N] [--recipe NAME] [--force]`.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from clicker.core.context import context_block, review_prompt
from clicker.models.chartok import build_char_tokenizer
from clicker.models.fingerprint import environment, weights_fingerprint

VERSION = 3  # bump when the recipe changes, so caches are rebuilt


@dataclass(frozen=True)
class TinySpec:
    hidden: int = 128
    layers: int = 4
    heads: int = 4
    intermediate: int = 384
    max_positions: int = 1024
    steps: int = 1000
    clean_fraction: float = 0.8  # first share of steps: right answers only (learn the skill)
    batch_tokens: int = 1536  # characters per step
    max_rows: int = 128
    lr: float = 1e-3
    warmup_steps: int = 50
    context: float = 0.0  # share of single-turn texts that carry a context block (recipe context)
    review: float = 0.0  # share of batches of review texts (attempts + feedback -> a lesson)
    context_turns: bool = False  # multi-turn worlds get context blocks too (a sibling's run)
    # (task name, kwargs, sampling weight) of the warm-start mixture
    mixture: tuple = (
        ("addition", {"digits": 2}, 6.0),
        ("letters", {}, 1.0),
        ("keydoor", {"rooms": 2}, 0.5),
        ("keydoor", {"rooms": 3}, 1.0),  # so the long keydoor worlds start above zero success
    )


# name -> recipe. The default stays at its own cache name so existing caches keep working.
RECIPES: dict[str, TinySpec] = {
    "default": TinySpec(),
    "arith": TinySpec(
        steps=3000,
        mixture=(("addition", {"digits": 2}, 1.0), ("addition", {"digits": 3}, 3.0)),
    ),
    # the default mixture, plus context blocks (solutions, feedback, answers, lessons) before
    # the task, half of them helpful and half irrelevant, and review texts that end in a lesson
    "context": TinySpec(steps=3000, context=0.5, review=0.05, mixture=(
        ("addition", {"digits": 2}, 6.0), ("letters", {}, 3.0), ("keydoor", {"rooms": 2}, 0.5),
        ("keydoor", {"rooms": 3}, 1.0))),
    # the benchmark of record's worlds with context blocks (issue 6: self-distillation needs a
    # teacher that reads them): 3-digit sums as `arith`, and keydoor, where a block is a
    # successful run in the same layout or its shortest action sequence
    "arith_context": TinySpec(steps=4000, context=0.5, mixture=(
        ("addition", {"digits": 2}, 1.0), ("addition", {"digits": 3}, 3.0))),
    "keydoor_context": TinySpec(steps=3000, context=0.5, context_turns=True, mixture=(
        ("addition", {"digits": 2}, 3.0), ("letters", {}, 1.0), ("keydoor", {"rooms": 2}, 1.0),
        ("keydoor", {"rooms": 3}, 2.0))),
}

# Lessons the `context` recipe teaches the model to follow (a helpful lesson before a task
# makes the right answer likely, as an instruction does for a real LLM) and to write as a
# reviewer, with paraphrases; and lessons that do not help on any task.
HINTS: dict[str, tuple[str, ...]] = {
    "addition": ("carry the one.", "add the carry to the next digit.",
                 "when a column passes 9, carry 1."),
    "letters": ("count every copy of the letter.", "count each letter, repeats too."),
}
DISTRACTORS: tuple[str, ...] = ("answer with one number.", "keep it short.",
                                "read the question twice.")


def clicker_home() -> Path:
    env = os.environ.get("CLICKER_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clicker"


def tiny_model_dir(seed: int = 0, *, recipe: str = "default", force: bool = False,
                   verbose: bool = False) -> Path:
    """Directory of the built-in tiny model for `seed` and `recipe`, building it if missing."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown tiny model recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    name = "tiny" if recipe == "default" else f"tiny-{recipe}"
    target = clicker_home() / "models" / f"{name}-v{VERSION}-seed{seed}"
    if (target / "config.json").is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One builder per model: others (parallel test workers, compare runs) wait for it, then read.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").is_file() and not force:
            return target
        _build_into(target, seed, recipe, force, verbose)
    return target


def _build_into(target: Path, seed: int, recipe: str, force: bool, verbose: bool) -> None:
    spec = RECIPES[recipe]
    print(f"building the built-in tiny model (recipe {recipe}, seed {seed}) into {target}: about "
          f"{135 * spec.steps // 1000} s (one thread)", file=sys.stderr, flush=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        build_tiny_model(tmp, seed=seed, spec=spec, verbose=verbose)
        if force and target.exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)  # atomic: readers see a whole model or none
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _clean_text(world, index: int, rng: random.Random) -> str:
    """A right answer for a single-turn world; a multi-turn world's own warm-up transcript (its
    noise is exploration, not wrong knowledge)."""
    if world.max_turns > 1:
        return world.warmup_text(index, rng)
    return world.make("train", index).reset() + world.reference("train", index) + world.stop[0]


def _context_text(world, index: int, rng: random.Random) -> str:
    """A single-turn text with a context block before it: half the time a block that gives the
    answer away or tells how to get it (a solution to this very problem, the verifier's feedback
    on an attempt at it, its answer, or a lesson for this task), followed by the right answer;
    otherwise a block about something else (another problem's solution, a lesson that does not
    apply), followed by the task's noisy habit, in both phases. So the model learns to read the
    context, not that any context means "answer right". (Feedback on another problem is not
    among the irrelevant blocks: it names no problem, so nothing could tell it apart.)"""
    prompt = world.make("train", index).reset()
    right = prompt + world.reference("train", index) + world.stop[0]
    plain = world.warmup_text(index, rng)  # the habit, even in the clean phase
    other = index + rng.randrange(1, 1_000_000)

    def solution(i: int) -> str:
        return context_block("solution", world.make("train", i).reset()
                             + world.reference("train", i))

    def feedback(i: int) -> str:
        p = world.make("train", i).reset()
        attempt = world.warmup_text(i, rng)[len(p):]
        return context_block("feedback", world.make("train", i).step(attempt).feedback)

    hints = HINTS.get(world.name, ())
    foreign = [h for name, hs in HINTS.items() if name != world.name for h in hs]
    helpful = [lambda: solution(index), lambda: feedback(index),
               lambda: context_block("reference", world.reference("train", index))]
    if hints:
        helpful.append(lambda: context_block("lesson", rng.choice(hints)))
    irrelevant = [lambda: solution(other),
                  lambda: context_block("lesson", rng.choice(list(DISTRACTORS) + foreign))]
    blocks = []
    if rng.random() < 0.3:  # a second, irrelevant lesson first: several blocks, one that counts
        blocks.append(context_block("lesson", rng.choice(DISTRACTORS)))
    if rng.random() < 0.5:
        return "".join(blocks) + rng.choice(helpful)() + right
    return "".join(blocks) + rng.choice(irrelevant)() + plain


def _keydoor_run(world, index: int, rng: random.Random, eps: float,
                 split: str = "train") -> tuple[str, float]:
    """A transcript of an expert that acts randomly with probability eps, and its return."""
    from clicker.tasks.keydoor import ACTIONS

    env = world.make(split, index)
    text, ret = env.reset(), 0.0
    while not env.done:
        a = rng.choice(ACTIONS) if rng.random() < eps else env.expert_action()
        step = env.step(a + "\n")
        text, ret = text + a + "\n" + step.observation, ret + step.reward
    return text, ret


def _turns_context_text(world, index: int, rng: random.Random) -> str:
    """A keydoor run with a context block before it: half the time a block that shows the way
    in this very layout (a successful run, as a sibling's transcript is shown to the distill
    teacher, or the shortest action sequence, as the reference is), followed by a near-expert
    run; otherwise a block about another layout or a lesson that does not apply, followed by
    the usual noisy warm-up run."""
    other = index + rng.randrange(1, 1_000_000)

    def solution(i: int) -> str:
        for _ in range(8):
            text, ret = _keydoor_run(world, i, rng, eps=0.3)
            if ret > 0:
                return context_block("solution", text)
        return context_block("solution", _keydoor_run(world, i, rng, eps=0.0)[0])

    helpful = [lambda: solution(index),
               lambda: context_block("reference", world.reference("train", index))]
    irrelevant = [lambda: solution(other),
                  lambda: context_block("reference", world.reference("train", other)),
                  lambda: context_block("lesson", rng.choice(DISTRACTORS))]
    if rng.random() < 0.5:
        return rng.choice(helpful)() + _keydoor_run(world, index, rng, eps=0.1)[0]
    return rng.choice(irrelevant)() + world.warmup_text(index, rng)


def _review_text(world, index: int, rng: random.Random) -> str:
    """A review of a few attempts at a task (transcript and feedback) ending in one of the
    task's lessons: so the tiny model can act as a reviewer, as a real LLM can."""
    attempts = []
    for i in range(index, index + rng.randint(2, 4)):
        p = world.make("train", i).reset()
        completion = world.warmup_text(i, rng)[len(p):]
        attempts.append((p + completion, world.make("train", i).step(completion).feedback))
    return review_prompt(attempts) + rng.choice(HINTS[world.name]) + "\n"


def _warmup_batches(spec: TinySpec, rng: random.Random):
    """Endless batches of warm-start texts, each from one task so lengths match (no padding
    waste); a batch holds about `spec.batch_tokens` characters. The first `clean_fraction` of
    steps shows right answers only, so the skill is learned; the rest shows each task's noisy
    warm-up text (mostly a systematic wrong habit), which moves the model's mode off the right
    answer while the skill stays in the weights: RL then has to steer, not teach."""
    from clicker.tasks import make_world

    worlds = [make_world(name, **kw) for name, kw, _ in spec.mixture]
    weights = [w for _, _, w in spec.mixture]
    counter, step = 0, 0
    while True:
        clean = step < spec.clean_fraction * spec.steps
        step += 1
        world = rng.choices(worlds, weights=weights)[0]
        review = spec.review > 0 and world.name in HINTS and rng.random() < spec.review
        texts: list[str] = []
        size = 0
        while size < spec.batch_tokens and len(texts) < spec.max_rows:
            counter += 1
            if review:
                texts.append(_review_text(world, counter, rng))
            elif (spec.context > 0 and (world.max_turns == 1 or spec.context_turns)
                  and rng.random() < spec.context):
                texts.append(_context_text(world, counter, rng) if world.max_turns == 1
                             else _turns_context_text(world, counter, rng))
            else:
                texts.append(_clean_text(world, counter, rng) if clean
                             else world.warmup_text(counter, rng))
            size += len(texts[-1])
        yield texts


# torch's CPU kernels split their sums by thread count, so builds on 1 and 2 threads give
# different weights from the same seed (seen: fingerprints aba190f53b5c and aabdb5fafc28 from one
# machine and one set of libraries). Every build runs on this many threads, whatever the machine
# has, so the weights are a function of seed, recipe, libraries and CPU only. One: more threads
# than a process was given would contend with its neighbours (test workers, compare's parallel
# runs each hold one thread), and the thirteenth round of dreaming measured the 1-thread build.
BUILD_THREADS = 1


def build_tiny_model(out_dir: Path, seed: int = 0, spec: TinySpec = TinySpec(), verbose=False):
    """Create, warm-start and save the tiny model + tokenizer into out_dir, on BUILD_THREADS."""
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        return _build(Path(out_dir), seed, spec, verbose)
    finally:
        torch.set_num_threads(threads)


def _build(out_dir: Path, seed: int, spec: TinySpec, verbose: bool) -> dict:
    tok = build_char_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min(1.0, (s + 1) / spec.warmup_steps)
        * max(0.05, 1.0 - s / spec.steps),
    )
    rng = random.Random(seed)
    batches = _warmup_batches(spec, rng)
    t0 = time.time()
    losses = []
    for step in range(spec.steps):
        texts = next(batches)
        rows = [tok.encode(t, add_special_tokens=False)[: spec.max_positions - 1] for t in texts]
        rows = [r + [tok.eos_token_id] for r in rows]
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), T), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if verbose and (step % 100 == 0 or step == spec.steps - 1):
            print(f"  warm-start step {step:4d}  loss {loss.item():.3f}  ({time.time() - t0:.0f}s)")
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    info = {
        "version": VERSION,
        "seed": seed,
        "parameters": n_params,
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "seconds": round(time.time() - t0, 1),
        "spec": asdict(spec),
        # equal builds need equal libraries: a new one can change the weights (fingerprint.py)
        "built_with": environment(),
        "fingerprint": weights_fingerprint(out_dir),
    }
    (out_dir / "clicker_tiny.json").write_text(json.dumps(info, indent=1, default=str))
    return info
