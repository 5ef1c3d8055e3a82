"""The protocol fuzzer's own parts: its replay of edits (the oracle) and the framing
loop it found broken (lsp_server/framing.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest

from lsp_server.framing import INVALID_REQUEST, PARSE_ERROR, serve_frames
from tooling.fuzz_protocol import Replay
from tooling.wire import frame


@pytest.mark.parametrize(
    ("encoding", "line", "character", "offset"),
    [
        ("utf-16", 0, 2, 1),  # "a😀": inside the pair -> before the emoji
        ("utf-16", 0, 3, 2),
        ("utf-16", 0, 4, 2),  # past the line's end -> its end
        ("utf-8", 0, 3, 1),  # inside the emoji's four bytes
        ("utf-8", 0, 5, 2),
        ("utf-32", 0, 2, 2),
        ("utf-16", 1, 0, 4),  # "\r\n" is one break
        ("utf-16", 2, 1, 7),  # a lone "\r" breaks a line too
        ("utf-16", 9, 0, 8),  # past the last line -> the document's end
    ],
)
def test_replay_positions_follow_the_specification(
    encoding: str, line: int, character: int, offset: int
) -> None:
    text = "a😀\r\nx\ry\n"
    assert Replay(encoding).offset(text, line, character) == offset


def test_replay_applies_reversed_ranges_forwards_and_whole_replacements() -> None:
    replay = Replay("utf-16")
    replay.open("u", "abc\ndef")
    replay.change("u", (1, 2, 0, 1), "X", 2)
    assert replay.docs["u"].text == "aXf"
    replay.change("u", None, "new", 3)
    assert (replay.docs["u"].text, replay.docs["u"].version) == ("new", 3)
    assert replay.position("a😀\r\nx", 6) == (1, 1)


class Reader:
    """Bytes served as an asyncio stream reader would."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def readline(self) -> bytes:
        end = self.data.find(b"\n") + 1 or len(self.data)
        line, self.data = self.data[:end], self.data[end:]
        return line

    async def readexactly(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out


class Protocol:
    def __init__(self) -> None:
        self.handled: list[Any] = []

    def structure_message(self, data: dict[str, Any]) -> Any:
        return data

    def handle_message(self, message: Any) -> None:
        self.handled.append(message)


def serve(data: bytes) -> tuple[list[Any], list[dict[str, Any]]]:
    protocol, replies = Protocol(), []
    asyncio.run(serve_frames(threading.Event(), Reader(data), protocol, replies.append))
    return protocol.handled, replies


def test_frames_are_found_after_junk_a_short_length_and_a_header_without_length() -> None:
    one = {"jsonrpc": "2.0", "method": "a"}
    body = json.dumps({"jsonrpc": "2.0", "method": "lost", "params": {}}).encode()
    short = b"Content-Length: 5\r\n\r\n" + body  # the rest is junk before the next header
    data = (
        b"garbage line\r\n"
        + frame(one)
        + short
        + b"Content-Type: x\r\n\r\n"
        + b"content-length:  %d\r\n\r\n" % len(json.dumps(one))  # any case, spaces
        + json.dumps(one).encode()
        + frame({"jsonrpc": "2.0", "method": "b"})
    )
    handled, replies = serve(data)
    assert [m["method"] for m in handled] == ["a", "a", "b"]
    assert [r["error"]["code"] for r in replies] == [PARSE_ERROR]  # the short frame


def test_bodies_that_are_not_json_objects_get_errors_with_a_null_id() -> None:
    handled, replies = serve(frame(42) + frame([1]) + b"Content-Length: 2\r\n\r\n\xff\xfe")
    assert handled == []
    assert [(r["id"], r["error"]["code"]) for r in replies] == [
        (None, INVALID_REQUEST),
        (None, INVALID_REQUEST),
        (None, PARSE_ERROR),
    ]


def test_replay_agrees_with_the_server_position_code_on_random_texts() -> None:
    """Two implementations written apart: the fuzzer's oracle and lsp_server/positions.py."""
    import random

    from lsp_server.positions import LineIndex
    from tooling.fuzz_protocol import PIECES

    rng = random.Random(3)
    for _ in range(400):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12)))
        index = LineIndex.of(text)
        for encoding in ("utf-8", "utf-16", "utf-32"):
            replay = Replay(encoding)
            for _ in range(5):
                line, character = rng.randint(0, 6), rng.randint(0, 30)
                expected = index.offset(line, character, encoding, strict=False)  # type: ignore[arg-type]
                assert replay.offset(text, line, character) == expected, (text, line, character)
