"""Chat messages in, completions out: the one path shared by `clicker serve` and the local reviewer
backends (`clicker.lessons.backends`), so a reviewer sees a model exactly as a served client does.

Rendering: a tokenizer with a chat template renders the messages with it (generation prompt
added). A tokenizer without one, like the built-in tiny character model, gets the raw contents of
every message (system, user and assistant alike) joined by newlines, with nothing after the last
one: such a model was trained on plain text, so it simply continues that text. Generation uses
the batched `Sampler`; the completion is cut at the first stop string.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from clicker.models.policy import Policy
from clicker.rollout.sampler import Sampler

ROLES = ("system", "developer", "user", "assistant", "tool")


class ContextLengthError(ValueError):
    """The prompt leaves no room in the model's context for even one new token."""


@dataclass(frozen=True)
class ChatCompletion:
    """One sampled reply: its text (cut at a stop string), why it ended ("stop" on EOS or a stop
    string, "length" on the token limit), and token counts as the model saw them."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _content(i: int, message: Any) -> str:
    """The text of message `i`; OpenAI's list-of-text-parts form is joined. Malformed messages are
    ValueError (bad input, a 400 from the server), wrong JSON types included."""
    if not isinstance(message, dict):
        raise ValueError(f"messages[{i}] must be an object with role and content")  # noqa: TRY004
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
    if isinstance(content, list):
        if not all(isinstance(p, dict) and p.get("type") == "text"
                   and isinstance(p.get("text"), str) for p in content):
            raise ValueError(f"messages[{i}].content: only text parts are supported")
        return "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ValueError(f"messages[{i}].content must be a string")  # noqa: TRY004
    return content


def check_messages(messages: Any) -> list[dict[str, str]]:
    """Validate chat messages; return them as plain {role, content} dicts with string content."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    return [{"role": m["role"], "content": _content(i, m)} for i, m in enumerate(messages)]


def render_chat(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Prompt token ids for `messages` (see the module docstring for the two renderings)."""
    if getattr(tokenizer, "chat_template", None):
        # Render to text, then encode: the template already writes any BOS it wants.
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=False)
    else:
        text = "\n".join(m["content"] for m in messages)
    return tokenizer.encode(text, add_special_tokens=False)


def _cut(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def complete_chat(
    policy: Policy,
    messages: list[dict[str, Any]],
    *,
    n: int = 1,
    max_tokens: int = 256,
    temperature: float = 1.0,
    top_p: float = 1.0,
    stop: Sequence[str] = (),
    generator: torch.Generator | None = None,
    lock: threading.Lock | None = None,
) -> list[ChatCompletion]:
    """Sample `n` replies to `messages`. Bad input raises ValueError (ContextLengthError when the
    prompt fills the context); `max_tokens` is reduced to the room left in the context.

    `lock` serialises generation (the model and its caches are not thread-safe). The model is put
    in eval mode for the call and restored after, so a live training policy can be used.
    """
    msgs = check_messages(messages)
    prompt = render_chat(policy.tokenizer, msgs)
    if not prompt:
        raise ValueError("the messages render to an empty prompt")
    room = policy.max_length - len(prompt)
    if room < 1:
        raise ContextLengthError(f"the prompt is {len(prompt)} tokens; the model's context is "
                                 f"{policy.max_length} tokens")
    model = policy.model
    with lock if lock is not None else contextlib.nullcontext():
        was_training = model.training
        model.eval()
        try:
            samples = Sampler(model, policy.tokenizer).sample(
                [prompt], num_samples=n, max_new_tokens=min(max_tokens, room),
                temperature=temperature, top_p=top_p, stop=tuple(stop), generator=generator)
        finally:
            model.train(was_training)
    out = []
    for tokens, finished in zip(samples.tokens, samples.finished, strict=True):
        text, stopped = _cut(policy.decode(tokens), stop)
        out.append(ChatCompletion(text=text, finish_reason="stop" if finished or stopped
                                  else "length", prompt_tokens=len(prompt),
                                  completion_tokens=len(tokens)))
    return out
