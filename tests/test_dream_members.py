"""Where world models start (`dream.wm_init`, `clicker.dream.members`; issue 7)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoTokenizer

from clicker.core.config import Config, DreamConfig, RolloutConfig
from clicker.dream.dreamer import Dreamer
from clicker.dream.members import member_model, parse_init
from clicker.tasks.keydoor import KeyDoor


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_parse_init():
    assert parse_init("policy") == ("policy", None)
    assert parse_init("tiny:3") == ("tiny", (3, "default"))
    assert parse_init("tiny:1:arith") == ("tiny", (1, "arith"))
    assert parse_init("/models/wm") == ("path", "/models/wm")
    for bad in ("tiny:", "tiny:x", "tiny:1:a:b", ""):
        with pytest.raises(ValueError, match="world model init"):
            parse_init(bad)


def test_members_start_where_told(random_policy, tmp_path):
    """A member from a checkpoint has that checkpoint's weights, a `policy` member the policy's;
    each is its own float32 trainable copy (training one leaves the policy and the checkpoint
    as they were)."""
    torch.manual_seed(1)
    other = type(random_policy.model)(random_policy.model.config)
    other.save_pretrained(tmp_path / "wm")
    random_policy.tokenizer.save_pretrained(tmp_path / "wm")
    d = Dreamer(DreamConfig(dyna=True, wm_members=2, wm_init=["policy", str(tmp_path / "wm")]),
                RolloutConfig(), random_policy, KeyDoor(rooms=2), seed=0)
    first, second = (m.model for m in d.model.members)
    assert _same(first, random_policy.model) and _same(second, other)
    assert not _same(first, second)
    for m in (first, second):
        assert m is not random_policy.model
        assert all(p.requires_grad and p.dtype == torch.float32 for p in m.parameters())
    with torch.no_grad():
        next(second.parameters()).add_(1.0)
    assert _same(first, random_policy.model)
    assert not _same(second, type(other).from_pretrained(tmp_path / "wm"))


def test_tiny_member_is_the_built_in_model(policy):
    """`tiny:0` is the built-in tiny model of seed 0: the policy's own weights here."""
    model = member_model("tiny:0", policy)
    assert model is not policy.model and _same(model, policy.model)


def test_a_checkpoint_with_another_tokenizer_is_refused(random_policy, tmp_path):
    random_policy.model.save_pretrained(tmp_path / "wm")
    random_policy.tokenizer.save_pretrained(tmp_path / "wm")
    changed = AutoTokenizer.from_pretrained(tmp_path / "wm")
    changed.add_tokens(["<room>"])
    changed.save_pretrained(tmp_path / "wm")
    with pytest.raises(ValueError, match="tokenizer is not the policy's"):
        member_model(str(tmp_path / "wm"), random_policy)
    with pytest.raises(FileNotFoundError):
        member_model(str(tmp_path / "nowhere"), random_policy)


def test_config_checks_wm_init():
    DreamConfig(dyna=True, wm_members=2, wm_init=["policy", "tiny:1"])
    with pytest.raises(ValidationError, match="give 3 entries"):
        DreamConfig(dyna=True, wm_members=3, wm_init=["policy", "tiny:1"])
    with pytest.raises(ValidationError, match="oracle"):
        DreamConfig(dyna=True, oracle=True, wm_init=["policy"])
    with pytest.raises(ValidationError, match="tiny:SEED"):
        Config.model_validate({"dream": {"dyna": True, "wm_init": ["tiny:one"]}})
