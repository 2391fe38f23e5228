"""Which weights a run started from (clicker.models.fingerprint): the fingerprint tells builds
apart, the tiny model records its own and the libraries that built it, runs record theirs in
summary.json, and a compare whose runs started from different weights says so in its results,
its table and its report."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from clicker.experiment.report import write_report
from clicker.experiment.results import mixed_weights_warning, print_tables
from clicker.models import fingerprint
from clicker.models.fingerprint import mixed_fingerprints, weights_fingerprint
from clicker.models.tiny import BUILD_THREADS, TinySpec, build_tiny_model


def _weights(d: Path, content: bytes) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.safetensors").write_bytes(content)
    (d / "config.json").write_text("{}")
    return d


def test_the_fingerprint_tells_weights_apart(tmp_path, monkeypatch):
    blob = bytes(range(256)) * 20_000  # ~5 MB
    a = weights_fingerprint(_weights(tmp_path / "a", blob))
    assert a is not None and len(a) == 12 and int(a, 16) >= 0
    assert weights_fingerprint(_weights(tmp_path / "b", blob)) == a  # content, not path
    changed = bytearray(blob)
    changed[len(blob) // 2] ^= 1
    assert weights_fingerprint(_weights(tmp_path / "c", bytes(changed))) != a  # one bit, whole
    (tmp_path / "b" / "config.json").write_text('{"other": 1}')
    assert weights_fingerprint(tmp_path / "b") == a  # only the weight files count
    assert weights_fingerprint(tmp_path / "none") is None and weights_fingerprint(None) is None
    # large checkpoints: name, size and both ends (a change there shows, the middle is skipped)
    monkeypatch.setattr(fingerprint, "WHOLE_BELOW", 0)
    big = weights_fingerprint(tmp_path / "a")
    assert big != a and weights_fingerprint(tmp_path / "c") == big
    end = bytearray(blob)
    end[-1] ^= 1
    assert weights_fingerprint(_weights(tmp_path / "d", bytes(end))) != big


def test_the_tiny_model_records_its_fingerprint_and_libraries(tmp_path):
    spec = TinySpec(steps=2, warmup_steps=1, batch_tokens=256, max_rows=4)
    info = build_tiny_model(tmp_path / "m", seed=0, spec=spec)
    saved = json.loads((tmp_path / "m" / "clicker_tiny.json").read_text())
    assert saved["fingerprint"] == info["fingerprint"] == weights_fingerprint(tmp_path / "m")
    # its libraries (the next test), and the build's own thread count, not the caller's
    assert saved["built_with"] == fingerprint.environment() | {"torch_threads": str(BUILD_THREADS)}
    again = build_tiny_model(tmp_path / "m2", seed=0, spec=spec)  # same environment: same build
    assert again["fingerprint"] == info["fingerprint"]
    other = build_tiny_model(tmp_path / "m3", seed=1, spec=spec)
    assert other["fingerprint"] != info["fingerprint"]


def test_the_tiny_model_is_the_same_whatever_threads_the_process_has(tmp_path):
    """Without a fixed build thread count these 20 steps gave three fingerprints on 1, 2 and 4
    threads."""
    spec = TinySpec(steps=20, warmup_steps=1, batch_tokens=1536, max_rows=64)
    before = torch.get_num_threads()
    prints = set()
    try:
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            prints.add(build_tiny_model(tmp_path / f"t{n}", seed=0, spec=spec)["fingerprint"])
            assert torch.get_num_threads() == n  # the caller's setting comes back
    finally:
        torch.set_num_threads(before)
    assert len(prints) == 1, prints


def test_mixed_weights_are_flagged_in_results_table_and_report(tmp_path, capsys):
    same = {"m/seed0": {"model_fingerprint": "aaa"}, "m/seed1": {"model_fingerprint": "aaa"}}
    assert mixed_fingerprints(same) == {}
    mixed = mixed_fingerprints(same | {"n/seed0": {"model_fingerprint": "bbb"},
                                       "n/seed1": {}})
    assert mixed == {"aaa": ["m/seed0", "m/seed1"], "bbb": ["n/seed0"],
                     "unrecorded": ["n/seed1"]}
    line = mixed_weights_warning(mixed)
    assert "3 different sets of weights" in line and "bbb: n/seed0" in line
    stat = {"per_seed": [None], "iqm": None, "ci": [None, None]}
    row = {"seeds": 1, "reached": 0, "tokens_to_target": stat, "final_success": stat,
           "auc": stat}
    task = {"budget": 1000, "target": 0.5, "methods": {"m": row},
            "curves": {"m": [{"seed": 0, "world_tokens": [0, 1000], "success": [0.1, 0.2],
                              "imagined_tokens": None}]}}
    results = {"methods": ["m"], "seeds": 1, "baseline": None,
               "tasks": {"t": task | {"mixed_weights": mixed}}}
    print_tables(results)
    assert "different sets of weights" in capsys.readouterr().out
    page = write_report(tmp_path / "r", results).read_text()
    assert "3 different sets of weights" in page
    results["tasks"]["t"] = task  # agreeing runs: no warning
    assert "different sets of weights" not in write_report(tmp_path / "s", results).read_text()


def test_the_environment_names_the_libraries_that_make_a_build():
    env = fingerprint.environment()
    assert env["torch"] == torch.__version__ and env["transformers"] == transformers.__version__
    assert set(fingerprint.LIBRARIES) <= set(env) and env["python"].startswith("3.")
    assert all(isinstance(v, str) and v for v in env.values())
    assert env["torch_threads"] == str(torch.get_num_threads())
    a, b = {"torch": "1"}, {"torch": "2"}
    runs = {"m/seed0": {"model_fingerprint": "aaa", "environment": a},
            "m/seed1": {"model_fingerprint": "aaa", "environment": a},
            "n/seed0": {"model_fingerprint": "bbb", "environment": b}, "old/seed0": {}}
    assert fingerprint.environments_of(runs) == {"aaa": a, "bbb": b, "unrecorded": {}}
