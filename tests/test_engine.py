"""Rollout engines (issue 8): the built-in engine on the trainer's module or on a replica in
another dtype, weight sync with versions, the registry, and a bf16-sampling run whose
rollout/trainer mismatch the update measures and corrects."""

from __future__ import annotations

import json

import pytest
import torch

from clicker.core.config import build_config
from clicker.rollout.engine import ENGINES, HFEngine, make_engine, register_engine
from clicker.train.loop import train


def test_shared_engine_syncs_by_version_only(random_policy):
    e = make_engine("hf", random_policy)
    assert isinstance(e, HFEngine) and not e.replica and e.model is random_policy.model
    e.sync(3)
    assert e.version == 3


def test_replica_engine_copies_the_trainers_weights_on_sync(random_policy):
    e = make_engine("hf", random_policy, dtype="bfloat16")
    assert e.replica and next(e.model.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        for p in random_policy.model.parameters():
            p.add_(0.5)  # an update the replica has not seen
    pairs = list(zip(e.model.parameters(), random_policy.model.parameters()))
    assert not torch.equal(pairs[0][0], pairs[0][1].to(torch.bfloat16))
    e.sync(1)
    assert e.version == 1
    assert all(torch.equal(a, b.to(torch.bfloat16)) for a, b in pairs)
    out = e.sample([[5, 6, 7]], num_samples=2, max_new_tokens=3,
                   generator=torch.Generator().manual_seed(0))
    assert len(out.tokens) == 2


def test_engine_registry(random_policy):
    with pytest.raises(ValueError, match="unknown rollout engine"):
        make_engine("nope", random_policy)
    made = []
    register_engine("mine", lambda policy, dtype=None, device=None: made.append(dtype) or
                    HFEngine(policy))
    try:
        assert isinstance(make_engine("mine", random_policy, dtype="float16"), HFEngine)
        assert made == ["float16"]
    finally:
        del ENGINES["mine"]


def _run(tmp_path, name, *sets):
    base = ["task.name=addition", "rollout.prompts=4", "rollout.group_size=4",
            "train.iterations=2", "train.eval_every=0", "train.progress=false",
            "train.checkpoint_every=0", "update.mismatch=token"]
    train(build_config({}, base + list(sets)), tmp_path / name)
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]


def test_bf16_sampling_mismatch_is_measured_and_corrected(tmp_path, tiny_dir):
    """Sampling on a bf16 replica of the fp32 trainer: the update sees the two engines' log-probs
    differ (the trainer's own sampling does not) and trains on through the correction."""
    same = _run(tmp_path, "fp32")
    bf16 = _run(tmp_path, "bf16", "rollout.engine_dtype=bfloat16")
    assert all(r["mismatch/abs_logp_diff_max"] < 1e-3 for r in same)
    assert all(r["mismatch/abs_logp_diff"] > 1e-3 for r in bf16)
    assert all(0.5 < r["mismatch/weight_mean"] < 1.5 for r in bf16)
    assert all(r["loss/skipped_steps"] == 0 for r in bf16)
