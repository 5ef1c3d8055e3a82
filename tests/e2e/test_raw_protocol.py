"""Raw JSON-RPC over the server's stdio: requests without params, stdout hygiene.

Editors send ``pie/stats`` with no ``params`` member at all; pygls 2.1 was seen to drop
such requests unanswered. This speaks the wire protocol by hand to be sure of the bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import pytest

from tooling.wire import frame

pytestmark = [pytest.mark.e2e]


def read_message(stream: Any) -> dict[str, Any]:
    headers: dict[str, str] = {}
    while True:
        line = stream.readline()
        assert line, "server closed stdout"
        if line in (b"\r\n", b"\n"):
            break
        key, _, value = line.decode("ascii").partition(":")  # non-ASCII here means stdout pollution
        headers[key.strip().lower()] = value.strip()
    return json.loads(stream.read(int(headers["content-length"])))


def read_response(stream: Any, msg_id: int) -> dict[str, Any]:
    for _ in range(200):
        msg = read_message(stream)
        if msg.get("id") == msg_id and "method" not in msg:
            return msg
        if "method" in msg and "id" in msg:  # a server->client request (progress create)
            continue
    raise AssertionError(f"no response to {msg_id}")


def test_stats_without_params_member_and_with_null() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsp_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        proc.stdin.write(
            frame(
                {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}}
            )
        )
        proc.stdin.flush()
        init = read_response(proc.stdout, 1)
        assert "capabilities" in init["result"]
        proc.stdin.write(frame({"jsonrpc": "2.0", "method": "initialized", "params": {}}))
        proc.stdin.write(frame({"jsonrpc": "2.0", "id": 2, "method": "pie/stats"}))
        proc.stdin.write(frame({"jsonrpc": "2.0", "id": 3, "method": "pie/stats", "params": None}))
        proc.stdin.flush()
        for msg_id in (2, 3):
            response = read_response(proc.stdout, msg_id)
            assert "error" not in response, response
            assert {"model", "documents", "totals"} <= set(response["result"])
        proc.stdin.write(frame({"jsonrpc": "2.0", "id": 4, "method": "shutdown"}))
        proc.stdin.flush()
        assert read_response(proc.stdout, 4).get("result") is None
        proc.stdin.write(frame({"jsonrpc": "2.0", "method": "exit"}))
        proc.stdin.flush()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_request_with_params_of_the_wrong_shape_gets_invalid_params() -> None:
    """pygls dropped such a request unanswered: the client waited forever."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsp_server"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    uri = "file:///tmp/shape.py"
    doc = {"uri": uri, "languageId": "python", "version": 1, "text": "import os\n"}
    bad_position = {"textDocument": {"uri": uri}, "position": "line 0, column 3"}
    watchdog = threading.Timer(60, proc.kill)  # an unanswered request fails, never hangs
    watchdog.start()
    try:
        for msg in (
            {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"capabilities": {}}},
            {"jsonrpc": "2.0", "method": "initialized", "params": {}},
            {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": doc}},
            {"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"oops": 1}},
            {"jsonrpc": "2.0", "id": 2, "method": "textDocument/inlineCompletion",
             "params": bad_position},
            {"jsonrpc": "2.0", "id": 3, "method": "textDocument/completion", "params": [1, 2]},
            {"jsonrpc": "2.0", "id": 4, "method": "pie/stats"},
        ):  # fmt: skip
            proc.stdin.write(frame(msg))
        proc.stdin.flush()
        read_response(proc.stdout, 1)
        for msg_id in (2, 3):
            error = read_response(proc.stdout, msg_id).get("error")
            assert error is not None and error["code"] == -32602, error
        stats = read_response(proc.stdout, 4)["result"]  # still serving, the document intact
        assert [d["uri"] for d in stats["documents"]] == [uri]
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=10)


def test_tcp_transport_answers_initialize() -> None:
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lsp_server", "--tcp", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not listen"
                assert proc.poll() is None, "server exited"
                time.sleep(0.2)
        with conn:
            stream = conn.makefile("rwb")
            stream.write(
                frame(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "initialize",
                        "params": {"capabilities": {}},
                    }
                )
            )
            stream.flush()
            assert "capabilities" in read_response(stream, 1)["result"]
            stream.write(frame({"jsonrpc": "2.0", "id": 2, "method": "pie/stats"}))
            stream.flush()
            assert "totals" in read_response(stream, 2)["result"]
            stream.write(frame({"jsonrpc": "2.0", "id": 3, "method": "shutdown"}))
            stream.flush()
            assert read_response(stream, 3).get("result") is None
            stream.write(frame({"jsonrpc": "2.0", "method": "exit"}))
            stream.flush()
        out, _ = proc.communicate(timeout=30)  # it flushes stdout as it exits
        assert proc.returncode == 0
        assert out == b"", out[:200]  # the protocol went over the socket; logs go to stderr
    finally:
        proc.kill()
        proc.wait(timeout=10)
