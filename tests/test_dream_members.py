"""Where world models start (`dream.wm_init`, `clicker.dream.members`; issue 7)."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from transformers import AutoTokenizer

from clicker.core.config import Config, DreamConfig, RolloutConfig
from clicker.dream.dreamer import Dreamer
from clicker.dream.members import member_model, parse_init
from clicker.dream.world_model import WorldModel, WorldModelConfig
from clicker.tasks.keydoor import KeyDoor


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


def test_parse_init():
    assert parse_init("policy") == ("policy", None)
    assert parse_init("tiny:3") == ("tiny", (3, "default"))
    assert parse_init("tiny:1:arith") == ("tiny", (1, "arith"))
    assert parse_init("/models/wm") == ("path", "/models/wm")
    assert parse_init("words") == ("words", (4, 128))
    assert parse_init("words:6x256") == ("words", (6, 256))
    for bad in ("tiny:", "tiny:x", "tiny:1:a:b", ""):
        with pytest.raises(ValueError, match="world model init"):
            parse_init(bad)
    for bad in ("words:", "words:6", "words:6x100", "words:0x128"):
        with pytest.raises(ValueError, match="LAYERSxHIDDEN"):
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
    model, tokenizer = member_model("tiny:0", policy)
    assert model is not policy.model and _same(model, policy.model)
    assert tokenizer.get_vocab() == policy.tokenizer.get_vocab()


def test_a_checkpoint_with_another_tokenizer_reads_the_policys_ids_as_text(random_policy,
                                                                           tmp_path):
    """A member whose tokenizer is not the policy's converts what it is given (the policy's ids)
    through text; one whose tokenizer has no EOS token is refused, in one line."""
    random_policy.tokenizer.save_pretrained(tmp_path / "wm")
    changed = AutoTokenizer.from_pretrained(tmp_path / "wm")
    changed.add_tokens(["exits"])  # one token for a word the policy spells letter by letter
    changed.save_pretrained(tmp_path / "wm")
    other = copy.deepcopy(random_policy.model)
    other.resize_token_embeddings(len(changed))
    other.save_pretrained(tmp_path / "wm")
    model, tokenizer = member_model(str(tmp_path / "wm"), random_policy)
    assert "exits" in tokenizer.get_vocab()
    wm = WorldModel(model, tokenizer, WorldModelConfig(), max_turns=8,
                    source=random_policy.tokenizer)
    text = "R1: exits n,e.\n> e\n"
    ids = random_policy.encode(text)
    assert wm.source is not None and wm.own(ids) == tokenizer.encode(text,
                                                                    add_special_tokens=False)
    assert len(wm.own(ids)) == len(ids) - 4 and tokenizer.decode(wm.own(ids)) == text
    same = WorldModel(model, random_policy.tokenizer, WorldModelConfig(), max_turns=8,
                      source=random_policy.tokenizer)
    assert same.source is None and same.own(ids) == ids
    no_eos = AutoTokenizer.from_pretrained(tmp_path / "wm")
    no_eos.eos_token = None
    no_eos.save_pretrained(tmp_path / "wm")
    with pytest.raises(ValueError, match="no EOS token"):
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
