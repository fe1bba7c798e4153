"""Server-sent events from an upstream's byte stream, decoded incrementally.

Events are separated by a blank line; of the fields only ``event`` and ``data`` matter
to us (several ``data`` lines join with ``\\n``; comments and ``id``/``retry`` are
skipped). CRLF line endings are accepted. A stream that ends inside an event yields
nothing for it: callers decide whether the end was clean (``[DONE]``, ``message_stop``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str | None
    data: str


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
    """Every complete event in ``chunks`` (the raw response body), in order."""
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            block, buffer = buffer[:end], buffer[end + 2 :]
            event = parse_event(block)
            if event is not None:
                yield event


def parse_event(block: bytes) -> SseEvent | None:
    """One event block (its lines without the blank separator); None if it has no data."""
    name: str | None = None
    data: list[str] = []
    for raw in block.split(b"\n"):
        if not raw or raw.startswith(b":"):
            continue
        field, _, value = raw.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value.decode("utf-8", errors="replace"))
        elif field == b"event":
            name = value.decode("utf-8", errors="replace")
    if not data:
        return None
    return SseEvent(name, "\n".join(data))
