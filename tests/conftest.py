"""Shared fixtures. The built-in tiny model is built once per machine into .cache/ (CI: once per
run) and shared by every test that needs it; small random models serve the unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CLICKER_HOME", str(ROOT / ".cache" / "clicker-test"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs the suite in parallel worker processes (pytest-xdist), one per core: each
    # gets one thread, and so do the processes it starts (CLI runs, Ray, torchrun). Two
    # OpenMP-threaded processes on two cores spin-wait on each other and run many times slower.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_configure(config):
    """Under xdist, the controller builds the tiny model (on every core) before the workers start,
    rather than one worker building it on one core while the other waits for it."""
    if getattr(config.option, "numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        from clicker.models.tiny import tiny_model_dir

        tiny_model_dir(0)


def pytest_collection_modifyitems(items):
    """The slow tests first, spread over the workers. xdist's worksteal gives each of the N
    workers one contiguous share of this order (then lets idle workers steal from the others'
    tails), so each share starts with every N-th slow test: the slow tests run at once on all
    cores, not one after another on the first worker."""
    slow = [i for i in items if i.get_closest_marker("slow") is not None]
    fast = [i for i in items if i.get_closest_marker("slow") is None]
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    order, left = [], len(items)
    for k in range(n):
        size = left // (n - k)  # worksteal's share for the k-th worker
        left -= size
        share = slow[k::n]
        take = len(fast) if k == n - 1 else max(0, size - len(share))
        order += share + fast[:take]
        fast = fast[take:]
    items[:] = order


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from clicker.models.tiny import tiny_model_dir

    return tiny_model_dir(0)


@pytest.fixture(scope="module")
def policy(tiny_dir):
    """The built-in tiny model as a float32 CPU policy, loaded once per test module."""
    from clicker.models.policy import Policy

    return Policy.load(None, device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def char_tokenizer():
    from clicker.models.chartok import build_char_tokenizer

    return build_char_tokenizer()


@pytest.fixture()
def random_policy(char_tokenizer):
    """A freshly initialised 2-layer Llama on the char tokenizer (no warm start)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from clicker.models.policy import Policy

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(char_tokenizer), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512, tie_word_embeddings=False,
                      eos_token_id=char_tokenizer.eos_token_id,
                      pad_token_id=char_tokenizer.pad_token_id, bos_token_id=None)
    return Policy(LlamaForCausalLM(cfg).eval(), char_tokenizer)


@pytest.fixture(autouse=True)
def _same_torch_threads():
    """Each test starts with the suite's thread count: a test that changes it (a compare worker
    run in process) would otherwise change the float rounding, and so the sampled trajectories,
    of every learning test after it."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
