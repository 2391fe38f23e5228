"""Where a world model starts (`dream.wm_init`): a copy of the policy, or another checkpoint.

By default every world model (every ensemble member) starts as a copy of the policy's LM, which
knows the text of the world. Members that start from the same weights and read the same real
episodes make correlated errors: in issue 7's seventh round (docs/dreaming_rounds.md) all three
members agreed on about as large a share of the false goals as of the true ones, and agreement
only guards against errors the members do not share. Members started from different checkpoints
(PETS and MBPO draw each member's initialisation independently; Osband et al. 2018 add a
different prior per member) disagree more where the data do not pin the answer down. A
checkpoint larger than the policy is the other use: a world model need not be as small as the
policy it dreams for.

An init is one of:
- `policy`: a float32 deep copy of the policy's LM (the default);
- `tiny:SEED` or `tiny:SEED:RECIPE`: the built-in tiny model of that seed and recipe (built on
  first use, as `clicker init-model` does);
- a local Hugging Face model directory, with its own tokenizer;
- `words` or `words:LAYERSxHIDDEN`: a fresh LM (random weights, the tiny model's shape by default)
  with a tokenizer of the world's words (`clicker.dream.words`).

A member whose tokenizer is not the policy's reads the policy's token ids through text
(`WorldModel(source=...)`); its tokenizer needs an EOS token, which ends its replies.
"""

from __future__ import annotations

import copy
from typing import Any

from clicker.dream.words import fresh_lm, parse_shape, world_tokenizer
from clicker.models.policy import Policy
from clicker.tasks.base import World


def parse_init(init: str) -> tuple[str, Any]:
    """("policy", None), ("tiny", (seed, recipe)), ("words", (layers, hidden)) or ("path", path)
    from a `dream.wm_init` entry; ValueError for a malformed `tiny:` or `words:` entry."""
    if init == "policy":
        return "policy", None
    if init == "words" or init.startswith("words:"):
        return "words", parse_shape(init[6:]) if init != "words" else (4, 128)
    if init.startswith("tiny:"):
        parts = init.split(":")
        if len(parts) not in (2, 3) or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"world model init {init!r}: write tiny:SEED or tiny:SEED:RECIPE")
        return "tiny", (int(parts[1]), parts[2] if len(parts) == 3 else "default")
    if not init:
        raise ValueError("world model init: an empty string (write policy, tiny:SEED or a path)")
    return "path", init


def member_model(init: str, policy: Policy, world: World | None = None, seed: int = 0
                 ) -> tuple[Any, Any]:
    """(a trainable float32 LM on the policy's device, its tokenizer) for one world model, from
    `init` (see the module doc). `words` builds its tokenizer from `world`'s text and its
    weights from `seed`."""
    kind, arg = parse_init(init)
    if kind == "policy":
        model, tokenizer = copy.deepcopy(policy.model).float(), policy.tokenizer
    elif kind == "words":
        if world is None:
            raise ValueError("world model init 'words' builds its vocabulary from the world's "
                             "text: pass the world")
        tokenizer = world_tokenizer(world)
        model = fresh_lm(tokenizer, *arg, seed=seed).to(policy.device)
    else:
        seed_, recipe = arg if kind == "tiny" else (0, "default")
        other = Policy.load(arg if kind == "path" else None, device=str(policy.device),
                            dtype="float32", tiny_seed=seed_, tiny_recipe=recipe)
        model, tokenizer = other.model.float(), other.tokenizer
        if tokenizer.eos_token_id is None:
            raise ValueError(f"world model init {init!r}: its tokenizer has no EOS token (a "
                             "world model ends each reply with it)")
    model.requires_grad_(True)
    return model, tokenizer
