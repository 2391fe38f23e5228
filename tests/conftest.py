"""Shared fixtures. The built-in tiny model is built once per machine into .cache/ (CI: once per
run) and shared by every test that needs it; small random models serve the unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CLICKER_HOME", str(ROOT / ".cache" / "clicker-test"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from clicker.models.tiny import tiny_model_dir

    return tiny_model_dir(0)


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
