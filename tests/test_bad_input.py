"""Bad input, generated (issue 9): malformed `--set` overrides, config files and task arguments
thrown at `clicker train` in process. Every one ends with exit code 2 and one clear line on
stderr, never a traceback, and never reaches training."""

from __future__ import annotations

import inspect
import string
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clicker import cli
from clicker.core.config import Config
from clicker.tasks.addition import Addition

SECTIONS = {name: f.annotation for name, f in Config.model_fields.items()}
NUMERIC = [(s, k) for s, sec in SECTIONS.items() for k, f in sec.model_fields.items()
           if f.annotation in (int, float)]
# the default task's own arguments (digits, seed): an unknown one is what is bad
ADDITION_ARGS = set(inspect.signature(Addition).parameters)
ident = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
junk = st.text(string.ascii_letters, min_size=1, max_size=10).filter(
    lambda t: t.lower() not in {"true", "false", "yes", "no", "on", "off", "null", "nan", "inf",
                                "y", "n", "infinity"})


@st.composite
def bad_override(draw) -> str:
    kind = draw(st.sampled_from(["unknown_key", "unknown_section", "not_a_number", "negative",
                                 "broken_yaml", "no_equals", "bad_task_arg"]))
    if kind == "unknown_key":
        section = draw(st.sampled_from(sorted(SECTIONS)))
        key = draw(ident.filter(lambda k: k not in SECTIONS[section].model_fields))
        return f"{section}.{key}=1"
    if kind == "unknown_section":
        return f"{draw(ident.filter(lambda k: k not in SECTIONS))}.x=1"
    if kind == "not_a_number":
        section, key = draw(st.sampled_from(NUMERIC))
        return f"{section}.{key}={draw(junk)}"
    if kind == "negative":
        section, key = draw(st.sampled_from([(s, k) for s, k in NUMERIC
                                             if k in ("prompts", "group_size", "epochs")]))
        return f"{section}.{key}=-{draw(st.integers(1, 10**6))}"
    if kind == "broken_yaml":
        return f"task.args={draw(st.sampled_from(['{', '[', '{a: [1,', '}: x', '[[]']))}"
    if kind == "no_equals":
        return draw(ident)
    return f"task.args={{digits: 2, {draw(ident.filter(lambda k: k not in ADDITION_ARGS))}: 1}}"


def _run(argv: list[str], capsys, monkeypatch) -> str:
    from clicker.train import loop

    def never(*a, **k):
        raise AssertionError(f"bad input reached training: {argv}")

    monkeypatch.setattr(loop, "train", never)
    monkeypatch.setattr(sys, "argv", ["clicker", *argv])
    monkeypatch.delenv("CLICKER_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2, (argv, err)
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("clicker: error: "), (argv, err)
    return lines[0]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bad=bad_override())
def test_malformed_overrides_are_one_clear_line(bad, capsys, monkeypatch):
    _run(["train", "--set", bad], capsys, monkeypatch)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.one_of(
    st.binary(min_size=1, max_size=64),
    st.lists(st.integers(), min_size=1).map(lambda xs: str(xs).encode()),
    st.sampled_from([b"task: [", b"- a\n- b\n", b"42", b"model: {device: [}", b"\xff\xfe\x00",
                     b"train: {iterations: lots}", b"task: {name: 7, args: 3}"]),
))
def test_malformed_config_files_are_one_clear_line(body, capsys, monkeypatch, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "bad.yaml"
    path.write_bytes(body)
    import yaml

    try:  # a file that happens to be a valid, complete config is not bad input
        data = yaml.safe_load(body.decode()) or {}  # as load_config: empty (null, 0) = defaults
        Config.model_validate(data)
        valid = isinstance(data, dict)
    except Exception:  # noqa: BLE001 - any failure makes it bad input
        valid = False
    if valid:
        return
    _run(["train", "--config", str(path)], capsys, monkeypatch)
