"""Where a world model starts (`dream.wm_init`): a copy of the policy, or another checkpoint.

By default every world model (every ensemble member) starts as a copy of the policy's LM, which
knows the text of the world. Members that start from the same weights and read the same real
episodes make correlated errors: in issue 7's seventh round (README, "Dreaming") all three
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
- a local Hugging Face model directory.

The dreams are token ids of the policy's tokenizer, so a checkpoint must have the same
vocabulary and EOS token; `member_model` refuses one that does not, in one line.
"""

from __future__ import annotations

import copy
from typing import Any

from clicker.models.policy import Policy


def parse_init(init: str) -> tuple[str, Any]:
    """("policy", None), ("tiny", (seed, recipe)) or ("path", path) from a `dream.wm_init`
    entry; ValueError for a malformed `tiny:` entry."""
    if init == "policy":
        return "policy", None
    if init.startswith("tiny:"):
        parts = init.split(":")
        if len(parts) not in (2, 3) or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"world model init {init!r}: write tiny:SEED or tiny:SEED:RECIPE")
        return "tiny", (int(parts[1]), parts[2] if len(parts) == 3 else "default")
    if not init:
        raise ValueError("world model init: an empty string (write policy, tiny:SEED or a path)")
    return "path", init


def member_model(init: str, policy: Policy) -> Any:
    """A trainable float32 LM on the policy's device for one world model, from `init` (see the
    module doc); its tokenizer must be the policy's."""
    kind, arg = parse_init(init)
    if kind == "policy":
        model = copy.deepcopy(policy.model).float()
    else:
        seed, recipe = arg if kind == "tiny" else (0, "default")
        other = Policy.load(arg if kind == "path" else None, device=str(policy.device),
                            dtype="float32", tiny_seed=seed, tiny_recipe=recipe)
        mine, theirs = policy.tokenizer, other.tokenizer
        if (mine.get_vocab() != theirs.get_vocab()
                or mine.eos_token_id != theirs.eos_token_id):
            raise ValueError(f"world model init {init!r}: its tokenizer is not the policy's "
                             "(dreams are the policy's token ids; a world model must share its "
                             "vocabulary and EOS token)")
        model = other.model.float()
    model.requires_grad_(True)
    return model
