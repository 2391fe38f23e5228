"""`clicker serve`: the OpenAI-compatible chat server on loopback, its rendering, and its CLI."""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from clicker.models.chartok import build_char_tokenizer
from clicker.rollout.chat import complete_chat, render_chat
from clicker.serve import ChatServer, build_server

PROMPT = [{"role": "system", "content": "Q:"}, {"role": "user", "content": "12+34="}]


@pytest.fixture(scope="module")
def server(policy) -> Iterator[ChatServer]:
    srv = build_server(policy, model_name="tiny-test", max_tokens_cap=64, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def call(srv: ChatServer, method: str, path: str, body: Any = None) -> tuple[int, dict]:
    """(status, JSON reply); `body` bytes are sent as is, anything else as JSON."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = resp.status, json.loads(resp.read())
    conn.close()
    return out


def chat(srv: ChatServer, **fields: Any) -> tuple[int, dict]:
    return call(srv, "POST", "/v1/chat/completions", {"model": "tiny-test", "messages": PROMPT,
                                                      **fields})


def assert_error(status: int, body: dict, want_status: int) -> dict:
    assert status == want_status, body
    err = body["error"]
    assert set(err) >= {"message", "type", "code"} and err["message"], err
    return err


def test_models_and_health(server):
    status, body = call(server, "GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["tiny-test"]
    assert call(server, "GET", "/health") == (200, {"status": "ok"})


def test_completion_is_well_formed_and_matches_in_process(server, policy):
    status, body = chat(server, max_tokens=16, temperature=0)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny-test" and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    # Greedy: the server answers exactly what the model answers in process.
    [want] = complete_chat(policy, PROMPT, max_tokens=16, temperature=0)
    assert choice["message"]["content"] == want.text and want.text
    usage = body["usage"]
    prompt_ids = policy.tokenizer.encode("Q:\n12+34=", add_special_tokens=False)
    assert usage["prompt_tokens"] == len(prompt_ids) == want.prompt_tokens
    assert usage["completion_tokens"] == want.completion_tokens
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # Char tokenizer: every generated token but a final EOS is one character of the reply.
    assert usage["completion_tokens"] - len(want.text) in (0, 1)


def test_n_seed_and_length(server):
    status, body = chat(server, n=2, max_tokens=8, temperature=1.0, seed=7)
    assert status == 200, body
    assert [c["index"] for c in body["choices"]] == [0, 1]
    texts = [c["message"]["content"] for c in body["choices"]]
    assert sum(map(len, texts)) <= body["usage"]["completion_tokens"] <= 16
    again = chat(server, n=2, max_tokens=8, temperature=1.0, seed=7)[1]
    assert [c["message"]["content"] for c in again["choices"]] == texts  # same seed, same text

    status, body = chat(server, max_tokens=1, temperature=0)  # greedy's first token is a digit
    assert status == 200
    [choice] = body["choices"]
    assert choice["finish_reason"] == "length" and len(choice["message"]["content"]) == 1
    assert body["usage"]["completion_tokens"] == 1
    # max_completion_tokens is the newer name of the same limit
    body = chat(server, max_completion_tokens=1, temperature=0)[1]
    assert body["choices"][0]["finish_reason"] == "length"


def test_stop_string_cuts_the_reply(server, policy):
    [full] = complete_chat(policy, PROMPT, max_tokens=16, temperature=0)
    assert len(full.text) >= 2
    status, body = chat(server, max_tokens=16, temperature=0, stop=[full.text[1]])
    assert status == 200
    [choice] = body["choices"]
    assert choice["message"]["content"] == full.text[: full.text.index(full.text[1])]
    assert choice["finish_reason"] == "stop"


def test_bad_requests_get_openai_errors(server):
    err = assert_error(*call(server, "POST", "/v1/chat/completions", b"{not json"), 400)
    assert err["type"] == "invalid_request_error" and "JSON" in err["message"]
    assert_error(*call(server, "POST", "/v1/chat/completions", {"model": "x"}), 400)
    assert_error(*call(server, "POST", "/v1/chat/completions", b""), 400)
    assert assert_error(*chat(server, n=0), 400)["param"] == "n"
    assert assert_error(*chat(server, temperature="hot"), 400)["param"] == "temperature"
    assert assert_error(*chat(server, max_tokens=True), 400)["param"] == "max_tokens"
    assert assert_error(*chat(server, seed=-1), 400)["param"] == "seed"
    bad_role = call(server, "POST", "/v1/chat/completions",
                    {"messages": [{"role": "wizard", "content": "hi"}]})
    assert "role" in assert_error(*bad_role, 400)["message"]
    err = assert_error(*chat(server, stream=True), 400)
    assert "stream" in err["message"]
    assert assert_error(*call(server, "GET", "/v1/nope"), 404)["code"] == "not_found"
    assert_error(*call(server, "GET", "/v1/chat/completions"), 405)
    assert_error(*call(server, "POST", "/v1/models", {}), 405)
    long = [{"role": "user", "content": "1" * 2000}]  # the tiny model's context is 1024
    err = assert_error(*call(server, "POST", "/v1/chat/completions", {"messages": long}), 400)
    assert err["code"] == "context_length_exceeded"
    assert chat(server, max_tokens=2)[0] == 200  # still serving after all that


def test_render_with_and_without_chat_template():
    tok = build_char_tokenizer()
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
            {"role": "assistant", "content": "a"}]
    assert render_chat(tok, msgs) == tok.encode("s\nu\na", add_special_tokens=False)
    tok.chat_template = ("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    want = "<system>s<user>u<assistant>a<assistant>"
    assert render_chat(tok, msgs) == tok.encode(want, add_special_tokens=False)


def clicker(*args: str, **kw: Any) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("CLICKER_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "clicker.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_model_option_resolves_a_run_to_its_latest_checkpoint(tmp_path):
    from clicker.cli import _resolve_model
    from clicker.core.config import ConfigError

    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "iter-000003"
    ckpt.mkdir(parents=True)
    (run / "config.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match="no checkpoint"):
        _resolve_model(run)
    (ckpt / "trainer_state.pt").write_bytes(b"")
    (run / "checkpoints" / "latest").write_text("iter-000003\n")
    assert _resolve_model(run) == (ckpt, run / "config.yaml")
    assert _resolve_model(None) == (None, None)
    with pytest.raises(ConfigError, match="config.json"):
        _resolve_model(tmp_path / "nope")


def test_cli_bad_model_is_one_line_exit_2(tmp_path):
    proc = clicker("serve", "--model", str(tmp_path / "nope"), "--port", "0")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and "nope" in err and "Traceback" not in err


def test_cli_serves_and_stops_cleanly_on_ctrl_c(tiny_dir):
    proc = clicker("serve", "--port", "0", "--device", "cpu", "--dtype", "float32",
                   "--name", "cli-test")
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        line, deadline = "", time.monotonic() + 120
        while "\n" not in line and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=1):
                line += proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url, (line, proc.poll())
        with urllib.request.urlopen(f"{url.group(0)}/v1/models", timeout=30) as resp:
            assert json.loads(resp.read())["data"][0]["id"] == "cli-test"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
