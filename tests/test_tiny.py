"""The built-in tiny model's recipes: each has its own cache directory and its own mixture."""

from __future__ import annotations

import json

import pytest

from clicker.models import tiny


def test_recipe_builds_its_own_mixture_into_its_own_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("CLICKER_HOME", str(tmp_path))
    small = tiny.TinySpec(hidden=32, layers=1, heads=2, intermediate=64, steps=3,
                          batch_tokens=64, max_rows=8, warmup_steps=1,
                          mixture=(("addition", {"digits": 3}, 1.0),))
    monkeypatch.setitem(tiny.RECIPES, "arith", small)
    d = tiny.tiny_model_dir(0, recipe="arith")
    assert d.name == f"tiny-arith-v{tiny.VERSION}-seed0"
    info = json.loads((d / "clicker_tiny.json").read_text())
    assert info["spec"]["steps"] == 3
    assert info["spec"]["mixture"] == [["addition", {"digits": 3}, 1.0]]
    assert tiny.tiny_model_dir(0, recipe="arith") == d  # cached: no rebuild
    # the default recipe keeps the cache name it always had
    assert tiny.RECIPES["default"] == tiny.TinySpec()


def test_unknown_recipe_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CLICKER_HOME", str(tmp_path))
    with pytest.raises(ValueError, match="unknown tiny model recipe 'big'.*default, arith"):
        tiny.tiny_model_dir(0, recipe="big")
    assert not (tmp_path / "models").exists()


def test_config_names_the_recipe():
    from typing import get_args

    from pydantic import ValidationError

    from clicker.core.config import Config, ModelConfig

    assert Config().model.tiny_recipe == "default"
    # core cannot import models (layers point down): the Literal must list every recipe
    assert set(get_args(ModelConfig.model_fields["tiny_recipe"].annotation)) == set(tiny.RECIPES)
    with pytest.raises(ValidationError):
        Config.model_validate({"model": {"tiny_recipe": "big"}})
