"""Reading framed messages from stdio, and finding the next frame after a broken one.

pygls' loop took a header only when a whole line was exactly ``Content-Length: N``: the
rest of a frame whose ``Content-Length`` was too short stayed in the stream with no line
break, glued itself to the next frame's header line, and from there on every frame was
lost (the protocol fuzzer found it: tooling/fuzz_protocol.py). Here a header is found
anywhere in a line (junk before it is skipped), names are case-insensitive, and a body
that is not JSON is answered with a ParseError (id null, as JSON-RPC asks) instead of
silence.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

CONTENT_LENGTH = re.compile(rb"content-length[ \t]*:[ \t]*(\d+)[ \t]*\r?\n?$", re.IGNORECASE)


class AsyncReader(Protocol):
    """What the loop reads from (pygls' ``StdinAsyncReader``)."""

    def readline(self) -> Awaitable[bytes]:
        """The next line, with its line break; empty at the stream's end."""
        ...

    def readexactly(self, n: int) -> Awaitable[bytes]:
        """The next ``n`` bytes."""
        ...


class Handler(Protocol):
    """What the loop hands messages to (pygls' protocol)."""

    def structure_message(self, data: dict[str, Any]) -> Any:
        """A JSON object as a message (the ``object_hook`` of ``json.loads``)."""
        ...

    def handle_message(self, message: Any) -> None:
        """Act on one message."""
        ...


PARSE_ERROR = -32700
INVALID_REQUEST = -32600


async def serve_frames(
    stop: threading.Event,
    reader: AsyncReader,
    protocol: Handler,
    reply: Callable[[dict[str, Any]], None],
) -> None:
    """Read frames until the stream ends or ``stop`` is set; hand each message over.

    ``reply`` sends an error response the loop makes itself (a body that is not a JSON
    object). A header block is the lines up to an empty line; the last
    ``Content-Length`` in it counts; a block without one is skipped.
    """
    length: int | None = None
    while not stop.is_set():
        line = await reader.readline()
        if not line:
            return
        if line.strip():
            found = CONTENT_LENGTH.search(line)
            if found:
                length = int(found.group(1))
            elif length is None and line.strip():
                log.debug("skipped a line outside any frame: %r", line[:80])
            continue
        if length is None:
            continue  # an empty line outside a header block
        body = await reader.readexactly(length) if length else b""
        length = None
        if not body and not stop.is_set():
            reply(_error(PARSE_ERROR, "Parse error: an empty body"))
            continue
        _dispatch(body, protocol, reply)


def _dispatch(body: bytes, protocol: Handler, reply: Callable[[dict[str, Any]], None]) -> None:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.error("a frame's body is not JSON (%s): %r", exc, body[:120])
        reply(_error(PARSE_ERROR, f"Parse error: {exc}"))
        return
    if not isinstance(data, dict):
        log.error("a frame's body is not a JSON object: %r", body[:120])
        reply(_error(INVALID_REQUEST, "Invalid request: not a JSON object"))
        return
    try:
        message = json.loads(body, object_hook=protocol.structure_message)
        protocol.handle_message(message)
    except Exception:
        log.exception("could not handle a message: %r", body[:200])


def _error(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
