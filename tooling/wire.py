"""JSON-RPC over a language server's stdio, byte for byte (no LSP library).

For the programs that must send what a library would refuse to: malformed frames,
wrong ``Content-Length``, params of the wrong type (:mod:`tooling.fuzz_protocol`). A
:class:`Wire` starts the server, reads every message it writes on a thread of its own,
answers the server's requests to the client (``null``), and keeps the responses by id.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import defaultdict
from typing import IO, Any

from lsp_server.server import STATS


def frame(obj: Any) -> bytes:
    """One message as the protocol frames it."""
    body = json.dumps(obj).encode("utf-8")
    return f"Content-Length: {len(body)}\r\n\r\n".encode("ascii") + body


class BadOutput(Exception):
    """The server wrote something that is not a framed JSON-RPC message (stdout polluted)."""


def read_message(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next message on ``stream``; None at its end."""
    headers: dict[str, str] = {}
    while True:
        line = stream.readline()
        if not line:
            return None
        if line in (b"\r\n", b"\n"):
            break
        try:
            key, _, value = line.decode("ascii").partition(":")
        except UnicodeDecodeError as exc:
            raise BadOutput(line[:200]) from exc
        headers[key.strip().lower()] = value.strip()
    if "content-length" not in headers:
        raise BadOutput(f"a frame without Content-Length: {headers}")
    body = stream.read(int(headers["content-length"]))
    try:
        message = json.loads(body)
    except json.JSONDecodeError as exc:
        raise BadOutput(body[:200]) from exc
    if not isinstance(message, dict):
        raise BadOutput(f"not an object: {body[:200]!r}")
    return message


class Wire:
    """A server process and everything it said.

    ``responses``: id -> the responses with that id (a list: duplicate ids are sent on
    purpose); ``notifications``: method -> how many; ``bad_output``: what could not be
    read as a message (the reader stops there).
    """

    def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.responses: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        self.notifications: dict[str, int] = defaultdict(int)
        self.shown: list[str] = []
        self.bad_output: str | None = None
        self.stderr_tail: list[bytes] = []
        self._changed = threading.Condition()
        self._lock = threading.Lock()  # writes to stdin
        threading.Thread(target=self._read, name="wire-read", daemon=True).start()
        threading.Thread(target=self._drain_stderr, name="wire-stderr", daemon=True).start()

    def send(self, data: bytes) -> bool:
        """Write bytes to the server; False when its stdin is closed (it exited)."""
        assert self.proc.stdin is not None
        try:
            with self._lock:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def request(self, msg_id: Any, method: str, params: Any = None) -> bool:
        """Send a well-formed request."""
        return self.send(
            frame({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        )

    def notify(self, method: str, params: Any = None) -> bool:
        """Send a well-formed notification."""
        return self.send(frame({"jsonrpc": "2.0", "method": method, "params": params}))

    def wait_for(self, msg_id: Any, timeout: float, count: int = 1) -> list[dict[str, Any]]:
        """The responses to ``msg_id`` once ``count`` arrived (fewer at the timeout)."""
        end = time.monotonic() + timeout
        with self._changed:
            while len(self.responses.get(msg_id, [])) < count:
                left = end - time.monotonic()
                if left <= 0 or self.bad_output is not None or self.proc.poll() is not None:
                    break
                self._changed.wait(min(left, 0.5))
            return list(self.responses.get(msg_id, []))

    def stats(self, msg_id: Any, timeout: float = 60.0) -> dict[str, Any] | None:
        """``pie/stats``'s result (None without an answer)."""
        self.request(msg_id, STATS)
        got = self.wait_for(msg_id, timeout)
        return got[0].get("result") if got else None

    def close(self, timeout: float = 30.0) -> int | None:
        """Close stdin and wait for the process; its exit code (None: killed)."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            try:
                message = read_message(self.proc.stdout)
            except BadOutput as exc:
                with self._changed:
                    self.bad_output = str(exc)
                    self._changed.notify_all()
                return
            if message is None:
                with self._changed:
                    self._changed.notify_all()
                return
            if "method" in message and "id" in message:  # the server asks the client
                self.send(frame({"jsonrpc": "2.0", "id": message["id"], "result": None}))
                continue
            with self._changed:
                if "method" in message:
                    self.notifications[message["method"]] += 1
                    if message["method"] == "window/showMessage":
                        self.shown.append(str(message.get("params", {}).get("message")))
                else:
                    self.responses[message.get("id")].append(message)
                self._changed.notify_all()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line)
            if len(self.stderr_tail) > 200:
                del self.stderr_tail[:100]
