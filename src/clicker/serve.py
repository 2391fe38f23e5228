"""`clicker serve`: an OpenAI-compatible chat server over any checkpoint, stdlib only.

Why: a trained policy should be usable by anything that speaks the OpenAI chat API (a reviewer in
another run, an eval harness, curl) without a serving stack. Endpoints:

- `GET /v1/models`: the one served model, in OpenAI's list format;
- `POST /v1/chat/completions`: model, messages, max_tokens (or max_completion_tokens),
  temperature, top_p, n, stop, seed; the reply is OpenAI's chat.completion object;
- `GET /health`.

Departures from OpenAI: no streaming (`stream: true` is a 400); the request's `model` is not
checked (one model is served, its name is echoed); max_tokens is reduced to `max_tokens_cap` and
to the room left in the context. Messages are rendered by `clicker.rollout.chat.render_chat`: with
the tokenizer's chat template if it has one, else the raw contents joined by newlines (the tiny
model just continues the text). Generation holds a lock: the model is not thread-safe, so
requests are answered one at a time. Errors use OpenAI's shape `{"error": {message, type, code}}`.

Command: `clicker serve --model runs/<run>` (a run directory serves its latest checkpoint).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from clicker.models.policy import Policy
from clicker.rollout.chat import ContextLengthError, complete_chat

MAX_BODY_BYTES = 8 << 20  # a chat request far beyond any context this serves
MAX_N = 64


class RequestError(Exception):
    """A request the server refuses: becomes an OpenAI error body with this status."""

    def __init__(self, status: int, message: str, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class ChatServer(ThreadingHTTPServer):
    """The HTTP server holding the policy; `port` and `url` are the bound address."""

    daemon_threads = True  # a hung client never blocks shutdown

    def __init__(self, policy: Policy, host: str, port: int, model_name: str,
                 max_tokens_cap: int, quiet: bool = False) -> None:
        super().__init__((host, port), _Handler)
        self.quiet = quiet
        self.policy = policy
        self.model_name = model_name
        self.max_tokens_cap = max_tokens_cap
        self.created = int(time.time())
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.server_address[0]
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


def build_server(
    policy: Policy,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    model_name: str | None = None,
    max_tokens_cap: int = 1024,
    quiet: bool = False,
) -> ChatServer:
    """A bound (not yet serving) server; port 0 picks a free port. Call `serve_forever()` (in a
    thread for tests) and `shutdown()` + `server_close()` to stop. The default name is the
    model directory's name; `quiet` drops the one-line-per-request log on stderr."""
    if max_tokens_cap < 1:
        raise ValueError(f"max_tokens_cap must be >= 1, got {max_tokens_cap}")
    name = model_name or (Path(policy.path).name if policy.path else "clicker")
    return ChatServer(policy, host, port, name, max_tokens_cap, quiet)


def _field(body: dict, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """body[key] if it has the right JSON type (null counts as absent), else a 400."""
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, kind):  # JSON true is no number
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RequestError(400, f"{key} must be a {names}", "invalid_type", key)
    return value


def _parse(body: Any, cap: int) -> dict[str, Any]:
    """The sampling arguments of a chat request; RequestError on anything malformed."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object", "invalid_json")
    if body.get("stream"):
        raise RequestError(400, "streaming is not supported; send stream: false",
                           "unsupported_parameter", "stream")
    if "messages" not in body:
        raise RequestError(400, "missing required field: messages", "missing_field", "messages")
    _field(body, "model", str, None)
    max_tokens = _field(body, "max_completion_tokens", int, None)
    max_tokens = _field(body, "max_tokens", int, max_tokens if max_tokens is not None else cap)
    temperature = float(_field(body, "temperature", (int, float), 1.0))
    top_p = float(_field(body, "top_p", (int, float), 1.0))
    n = _field(body, "n", int, 1)
    seed = _field(body, "seed", int, None)
    stop = _field(body, "stop", (str, list), [])
    stop = [stop] if isinstance(stop, str) else stop
    checks = [
        (max_tokens >= 1, "max_tokens must be >= 1", "max_tokens"),
        (0.0 <= temperature <= 2.0, "temperature must be in [0, 2]", "temperature"),
        (0.0 < top_p <= 1.0, "top_p must be in (0, 1]", "top_p"),
        (1 <= n <= MAX_N, f"n must be in [1, {MAX_N}]", "n"),
        (seed is None or 0 <= seed < 2**63, "seed must be in [0, 2**63)", "seed"),
        (len(stop) <= 4 and all(isinstance(s, str) and s for s in stop),
         "stop must be a non-empty string or a list of up to 4 of them", "stop"),
    ]
    for ok, message, param in checks:
        if not ok:
            raise RequestError(400, message, "invalid_value", param)
    return {"messages": body["messages"], "max_tokens": min(max_tokens, cap),
            "temperature": temperature, "top_p": top_p, "n": n, "stop": stop, "seed": seed}


def _completion(server: ChatServer, body: Any) -> dict[str, Any]:
    """The chat.completion object for a parsed request body."""
    args = _parse(body, server.max_tokens_cap)
    policy = server.policy
    seed = args["seed"] if args["seed"] is not None else secrets.randbits(63)
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    try:
        replies = complete_chat(policy, args["messages"], n=args["n"],
                                max_tokens=args["max_tokens"], temperature=args["temperature"],
                                top_p=args["top_p"], stop=args["stop"], generator=generator,
                                lock=server.lock)
    except ContextLengthError as e:
        raise RequestError(400, str(e), "context_length_exceeded", "messages") from None
    except ValueError as e:
        raise RequestError(400, str(e), "invalid_value", "messages") from None
    prompt_tokens = replies[0].prompt_tokens
    completion_tokens = sum(r.completion_tokens for r in replies)
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": server.model_name,
        "choices": [{"index": i, "message": {"role": "assistant", "content": r.text},
                     "logprobs": None, "finish_reason": r.finish_reason}
                    for i, r in enumerate(replies)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    server_version = "clicker-serve"

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: RequestError) -> None:
        kind = "server_error" if e.status >= 500 else "invalid_request_error"
        self._send(e.status, {"error": {"message": e.message, "type": kind, "param": e.param,
                                        "code": e.code}})

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        routes = {"/v1/models": "GET", "/health": "GET", "/v1/chat/completions": "POST"}
        try:
            if path not in routes:
                raise RequestError(404, f"unknown path: {method} {path}", "not_found")
            if routes[path] != method:
                raise RequestError(405, f"{method} not allowed on {path}; use {routes[path]}",
                                   "method_not_allowed")
            if path == "/health":
                self._send(200, {"status": "ok"})
            elif path == "/v1/models":
                self._send(200, {"object": "list", "data": [
                    {"id": self.server.model_name, "object": "model",
                     "created": self.server.created, "owned_by": "clicker"}]})
            else:
                self._send(200, _completion(self.server, self._json_body()))
        except RequestError as e:
            self._error(e)
        except Exception as e:  # noqa: BLE001 - a failed generation is a 500, not a dead server
            self._error(RequestError(500, f"{type(e).__name__}: {e}", "internal_error"))

    def _json_body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestError(400, "bad Content-Length header", "invalid_request") from None
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"request body over {MAX_BODY_BYTES} bytes", "too_large")
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(400, f"the request body is not valid JSON: {e}",
                               "invalid_json") from None

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        """One short line per request on stderr, nothing else (no headers, so no keys)."""
        if not self.server.quiet:
            super().log_message(format, *args)
