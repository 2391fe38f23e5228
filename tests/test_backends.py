"""Reviewer chat backends: HTTPChat against a real `clicker serve` and against misbehaving loopback
servers (it never raises, retries what is worth retrying, never leaks the key); local backends."""

from __future__ import annotations

import json
import pickle
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clicker.lessons.backends import ChatReply, HTTPChat, LocalHFChat, PolicyChat
from clicker.rollout.chat import complete_chat
from clicker.serve import build_server

MSGS = [{"role": "user", "content": "12+34="}]
OK_BODY = json.dumps({"choices": [{"message": {"role": "assistant", "content": "46"},
                                   "finish_reason": "stop"}]})

# handler(request headers, call number from 1) -> (status, body)
Respond = Callable[[dict[str, str], int], tuple[int, str]]


@contextmanager
def fake_server(respond: Respond) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback chat endpoint answering with `respond`; yields (base_url, headers seen)."""
    seen: list[dict[str, str]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                seen.append(dict(self.headers))
                n = len(seen)
            status, body = respond(dict(self.headers), n)
            data = body.encode()
            try:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (timeout test): nothing left to answer
                return

        def log_message(self, *args: object) -> None:
            """Quiet: the test output is not the place for an access log."""

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/v1", seen
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture(scope="module")
def served(policy) -> Iterator[str]:
    srv = build_server(policy, model_name="tiny", quiet=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"{srv.url}/v1"
    srv.shutdown()
    srv.server_close()


def ask(backend, **kw) -> ChatReply:
    return backend.chat(MSGS, max_tokens=kw.pop("max_tokens", 8), temperature=0.0, **kw)


def test_http_against_clicker_serve_matches_in_process(served, policy):
    reply = ask(HTTPChat(served, "tiny", retries=0))
    assert reply.ok and reply.reason == "ok" and reply.attempts == 1, reply
    [want] = complete_chat(policy, MSGS, max_tokens=8, temperature=0)
    assert reply.text == want.text
    assert json.loads(reply.raw)["choices"][0]["message"]["content"] == want.text
    assert ask(PolicyChat(policy)).text == want.text  # in process: the very same answer


@pytest.mark.parametrize("body, why", [('{"nope": 1}', "no choices"),
                                       ("<html>bad gateway</html>", "not JSON"),
                                       ('{"choices": [{"message": {"content": ""}}]}', "empty"),
                                       ('{"error": {"message": "model overloaded"}}',
                                        "overloaded")])
def test_malformed_replies_are_not_ok(body, why):
    with fake_server(lambda h, n: (200, body)) as (url, seen):
        reply = ask(HTTPChat(url, "m", retries=2, backoff_s=0))
    assert not reply.ok and reply.text is None and why in reply.reason, reply
    assert reply.attempts == 1 and len(seen) == 1  # malformed is not retried
    assert reply.raw == body


def test_timeout_is_retried_then_reported():
    release = threading.Event()

    def hang(headers, n):
        release.wait(5)
        return 200, OK_BODY

    with fake_server(hang) as (url, seen):
        reply = ask(HTTPChat(url, "m", timeout_s=0.5, retries=2, backoff_s=0))
        release.set()
    assert not reply.ok and "timeout" in reply.reason and reply.attempts == 3, reply
    assert len(seen) == 3 and reply.seconds >= 1.5


def test_5xx_is_retried_4xx_is_not():
    with fake_server(lambda h, n: (500, "busy") if n == 1 else (200, OK_BODY)) as (url, seen):
        reply = ask(HTTPChat(url, "m", retries=2, backoff_s=0.01))
    assert reply.ok and reply.text == "46" and reply.attempts == 2 and len(seen) == 2, reply
    with fake_server(lambda h, n: (429, "slow down")) as (url, seen):
        reply = ask(HTTPChat(url, "m", retries=1, backoff_s=0))
    assert not reply.ok and "429" in reply.reason and reply.attempts == 2
    with fake_server(lambda h, n: (400, '{"error": {"message": "bad"}}')) as (url, seen):
        reply = ask(HTTPChat(url, "m", retries=2, backoff_s=0))
    assert not reply.ok and "400" in reply.reason and reply.attempts == 1 and len(seen) == 1


def test_connection_refused_is_not_ok():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reply = ask(HTTPChat(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff_s=0))
    assert not reply.ok and "connection" in reply.reason and reply.attempts == 2, reply


def test_api_key_is_sent_but_never_kept_or_echoed(monkeypatch):
    key = f"sk-{secrets.token_hex(16)}"
    monkeypatch.setenv("CLICKER_TEST_API_KEY", key)

    def echo(headers, n):  # a server that echoes the request headers, error or not
        auth = headers.get("Authorization", "")
        if n == 1:
            return 500, f"upstream failed for {auth}"
        if n == 2:
            return 401, json.dumps({"error": {"message": f"invalid key {auth}"}})
        content = f"you sent {auth}"
        return 200, json.dumps({"choices": [{"message": {"content": content}}]})

    with fake_server(echo) as (url, seen):
        backend = HTTPChat(url, "m", api_key_env="CLICKER_TEST_API_KEY", retries=1, backoff_s=0)
        failed = ask(backend)  # 500 (retried), then 401 (not)
        ok = ask(backend)
    assert [h["Authorization"] for h in seen] == [f"Bearer {key}"] * 3
    assert not failed.ok and failed.attempts == 2 and "401" in failed.reason
    assert ok.ok and "[redacted]" in ok.text
    for text in (repr(backend), json.dumps(backend.describe()), str(pickle.dumps(backend)),
                 failed.raw, failed.reason, ok.raw, ok.reason, ok.text):
        assert key not in text
    assert backend.describe()["api_key_env"] == "CLICKER_TEST_API_KEY"


def test_missing_key_variable_is_not_ok(monkeypatch):
    monkeypatch.delenv("CLICKER_TEST_NO_SUCH_KEY", raising=False)
    reply = ask(HTTPChat("http://127.0.0.1:9/v1", "m", api_key_env="CLICKER_TEST_NO_SUCH_KEY"))
    assert not reply.ok and "CLICKER_TEST_NO_SUCH_KEY" in reply.reason and reply.attempts == 0


def test_bad_settings_raise_at_construction():
    with pytest.raises(ValueError, match="base_url"):
        HTTPChat("localhost:8000", "m")
    with pytest.raises(ValueError, match="retries"):
        HTTPChat("http://127.0.0.1:8000/v1", "m", retries=-1)


def test_local_backends(policy, tiny_dir):
    policy.model.train()
    chat = PolicyChat(policy)
    reply = ask(chat)
    assert reply.ok and reply.text and reply.attempts == 1
    assert policy.model.training  # the live policy's mode is restored
    policy.model.eval()
    bad = chat.chat([{"role": "wizard", "content": "x"}], max_tokens=4, temperature=1.0)
    assert not bad.ok and "role" in bad.reason  # bad input is a reply, not an exception
    local = LocalHFChat(tiny_dir, device="cpu", dtype="float32")
    assert ask(local).text == reply.text
    json.dumps(local.describe())
    json.dumps(chat.describe())
    a, b = (PolicyChat(policy, seed=3).chat(MSGS, max_tokens=8, temperature=1.0)
            for _ in range(2))
    assert a.text == b.text  # a seeded backend reviews reproducibly
