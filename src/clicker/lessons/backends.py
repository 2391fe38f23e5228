"""Chat backends for the reviewer: an OpenAI-compatible endpoint, a local model, the live policy.

Why a backend never raises for a failed call: the reviewer runs inside a training loop, and a
flaky endpoint (timeout, 5xx, a proxy's HTML error page, an empty reply) must cost one review,
not the run. Every call returns a `ChatReply`; `ok=False` carries the reason. Bad *settings*
(a malformed URL, a missing model directory) still raise at construction, where they are input
errors.

The API key of `HTTPChat` is read at call time from the environment variable it names and sent as
`Authorization: Bearer ...`; it is never stored on the object, so it is in no repr, `describe()`
or pickle, and it is scrubbed from every reply's `text`, `raw` and `reason` (an error page may
echo the request's headers).

Local backends render messages and sample exactly as `clicker serve` does
(`clicker.rollout.chat`), so a reviewer gets the same answers in process as over HTTP.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from clicker.models.policy import Policy
from clicker.rollout.chat import complete_chat

MAX_RAW_CHARS = 65_536  # a reply body kept for provenance; beyond this is noise
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ChatReply:
    """One chat call's outcome. `text` is the reply (None unless ok); `reason` says why not ok
    (or "ok"); `raw` is the response body (or the local reply text); `seconds` is the wall time
    over all `attempts`."""

    text: str | None
    ok: bool
    reason: str
    raw: str
    seconds: float
    attempts: int


class ChatBackend(Protocol):
    """What the reviewer calls. `chat` never raises; `describe` is JSON-able provenance."""

    def chat(self, messages: list[dict], *, max_tokens: int, temperature: float) -> ChatReply:
        ...

    def describe(self) -> dict[str, Any]:
        ...


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def parse_chat_reply(raw: str) -> tuple[str | None, str]:
    """(reply text, reason) from an OpenAI chat.completion body; text is None when malformed."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None, f"reply is not JSON: {_snippet(raw) or '(empty body)'}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return None, f"API error: {_snippet(str(body['error'].get('message')))}"
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None, f"reply has no choices: {_snippet(raw)}"
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
        return None, "reply has empty content"
    finish = choices[0].get("finish_reason")
    return content, "ok" if finish in (None, "stop") else f"ok, finish_reason {finish}"


@dataclass(frozen=True)
class HTTPChat:
    """An OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, `clicker serve`).

    `base_url` ends before `/chat/completions` (e.g. http://127.0.0.1:8000/v1). Timeouts,
    connection errors, 429 and 5xx are retried `retries` times with exponential backoff from
    `backoff_s`; other 4xx and malformed replies are not (they would fail the same way again).
    """

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 30.0
    retries: int = 2
    backoff_s: float = 0.5

    def __post_init__(self) -> None:
        url = urllib.parse.urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        if self.timeout_s <= 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("timeout_s must be > 0, retries and backoff_s >= 0")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    def describe(self) -> dict[str, Any]:
        """The settings, for a run's provenance: the key's variable name, never the key."""
        return {"backend": "http", "base_url": self.base_url, "model": self.model,
                "api_key_env": self.api_key_env, "timeout_s": self.timeout_s,
                "retries": self.retries, "backoff_s": self.backoff_s}

    def chat(self, messages: list[dict], *, max_tokens: int, temperature: float) -> ChatReply:
        start = time.monotonic()
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if self.api_key_env and not key:
            return ChatReply(None, False, f"environment variable {self.api_key_env} is not set",
                             "", 0.0, 0)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            data = json.dumps({"model": self.model, "messages": messages,
                               "max_tokens": max_tokens, "temperature": temperature}).encode()
        except (TypeError, ValueError) as e:
            return ChatReply(None, False, f"messages are not JSON-serialisable: {e}", "", 0.0, 0)
        text, reason, raw, attempts = None, "", "", 0
        for attempts in range(1, self.retries + 2):
            if attempts > 1:
                time.sleep(self.backoff_s * 2 ** (attempts - 2))
            text, reason, raw, retry = self._once(data, headers)
            if text is not None or not retry:
                break
        return ChatReply(None if text is None else _scrub(text, key), text is not None,
                         _scrub(reason, key), _scrub(raw, key)[:MAX_RAW_CHARS],
                         time.monotonic() - start, attempts)

    def _once(self, data: bytes, headers: dict[str, str]) -> tuple[str | None, str, str, bool]:
        """One POST: (text, reason, raw body, worth retrying)."""
        url = f"{self.base_url}/chat/completions"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        # Loopback never goes through an HTTP proxy from the environment.
        handlers = ([urllib.request.ProxyHandler({})]
                    if urllib.parse.urlsplit(url).hostname in _LOOPBACK else [])
        try:
            with urllib.request.build_opener(*handlers).open(request,
                                                             timeout=self.timeout_s) as resp:
                raw = resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            try:
                raw = e.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException):
                raw = ""
            retry = e.code == 429 or e.code >= 500
            return None, f"HTTP {e.code}: {_snippet(raw) or e.reason}", raw, retry
        except TimeoutError:
            return None, f"timeout after {self.timeout_s:g} s", "", True
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                return None, f"timeout after {self.timeout_s:g} s", "", True
            return None, f"connection error: {e.reason}", "", True
        except (OSError, http.client.HTTPException) as e:
            return None, f"connection error: {type(e).__name__}: {e}", "", True
        except Exception as e:  # noqa: BLE001 - a reviewer call must not crash training
            return None, f"{type(e).__name__}: {e}", "", False
        return *parse_chat_reply(raw), raw, False


class PolicyChat:
    """A policy in this process as the reviewer: the live training policy (no copy) or a loaded
    one. Sampling draws from a generator seeded once, so a run's reviews are reproducible."""

    def __init__(self, policy: Policy, *, seed: int = 0) -> None:
        self.policy = policy
        self.seed = seed
        self._generator = torch.Generator(device=policy.device).manual_seed(seed)
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"backend": "policy", "path": self.policy.path, "seed": self.seed}

    def chat(self, messages: list[dict], *, max_tokens: int, temperature: float) -> ChatReply:
        start = time.monotonic()
        try:
            reply = complete_chat(self.policy, messages, max_tokens=max_tokens,
                                  temperature=temperature, generator=self._generator,
                                  lock=self._lock)[0]
        except Exception as e:  # noqa: BLE001 - a reviewer call must not crash training
            return ChatReply(None, False, f"{type(e).__name__}: {e}", "",
                             time.monotonic() - start, 1)
        ok = bool(reply.text.strip())
        reason = ("ok" if reply.finish_reason == "stop" else "ok, finish_reason length") if ok \
            else "reply has empty content"
        return ChatReply(reply.text if ok else None, ok, reason, reply.text,
                         time.monotonic() - start, 1)


class LocalHFChat(PolicyChat):
    """A local Hugging Face causal LM directory (`Policy.load`) as the reviewer."""

    def __init__(self, model_dir: str | Path, device: str = "auto", dtype: str = "auto", *,
                 seed: int = 0) -> None:
        self.device, self.dtype = device, dtype
        super().__init__(Policy.load(model_dir, device=device, dtype=dtype), seed=seed)

    def describe(self) -> dict[str, Any]:
        return {"backend": "local_hf", "model_dir": self.policy.path, "device": self.device,
                "dtype": self.dtype, "seed": self.seed}
