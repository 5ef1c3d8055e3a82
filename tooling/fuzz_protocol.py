"""Protocol fuzzing over stdio: ``pie-lsp bench fuzz``.

A seeded generator sends a real server (``python -m lsp_server``) a stream of messages,
most of them valid (documents opened, edited at random positions in the negotiated
encoding, closed; completions requested and cancelled; stats), the rest hostile:
malformed JSON, a ``Content-Length`` too long or too short, unknown methods, params of
the wrong type, requests before ``initialize`` and after ``shutdown``, duplicate ids,
``didChange`` for documents not open, versions out of order, ranges past the end,
texts with emoji, CJK, combining marks, CRLF, lone CR and lone surrogates.

The client keeps its own replay of the valid edits (:class:`Replay`, written apart
from the server's position code: it is the oracle) and checks, per session: the
server is alive until ``exit`` and exits then with 0; every request got an answer
(errors where due); the documents the server holds (``pie/stats``: uri, version,
SHA-256 of the text) equal the replay's; stdout carried nothing but frames.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .wire import Wire, frame

ENCODINGS = ("utf-8", "utf-16", "utf-32")

PIECES = (
    "x", "def f(a, b):\n", "    return a + b\n", "", " ", "\n", "\r\n", "\r", "\t",
    "# 注释 コメント\n", "s = '你好，世界'\n", "😀", "👩‍💻", "🇫🇷", "e\u0301", "a\u0308\u0323",
    "𝔘𝔫𝔦", "\u200b", "class A:\n    pass\n", "import os\n", "(", ")", "[]", '"""', "'",
    "<|endoftext|>", "<fim_middle>", "<|file_sep|>", "\ud800", "\udfff", "\x00", "\ufeff",
)  # fmt: skip
"""What the generator types: code, whitespace and every line break, astral and combining
characters, zero-width and byte-order marks, special-token look-alikes, lone surrogates."""

METHODS_UNKNOWN = ("pie/nothing", "textDocument/unheardOf", "$/secret", "workspace/x")
EXIT_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 120.0
"""How long the session's end waits for the answers to the requests sent."""


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_URI = re.compile(r"file://\S*")
_DIGITS = re.compile(r"\d+")


def _units(ch: str, encoding: str) -> int:
    if encoding == "utf-32":
        return 1
    if encoding == "utf-16":
        return 2 if ord(ch) > 0xFFFF else 1
    return len(ch.encode("utf-8", "surrogatepass"))


@dataclass
class Doc:
    """The client's copy of an open document."""

    text: str
    version: int


class Replay:
    """The documents as the valid messages sent so far make them.

    Positions follow the LSP specification: lines end at ``\\n``, ``\\r\\n`` or
    ``\\r``; a character past its line's end means the end of the line, a line past the
    document's end means the end of the document; a character inside a code point
    (a surrogate pair's middle in UTF-16, a byte inside a UTF-8 sequence) means the
    code point's start; a reversed range is the same range forwards.
    """

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.docs: dict[str, Doc] = {}
        self.log: list[tuple[str, tuple[int, int, int, int] | None, str]] = []
        """The changes applied, in order (to find where a server parted from them)."""

    def offset(self, text: str, line: int, character: int) -> int:
        """The str offset of an LSP position in ``text``, clamped as above."""
        starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text)]
        if line >= len(starts):
            return len(text)
        start = starts[line]
        end = len(text) if line + 1 >= len(starts) else starts[line + 1]
        content_end = start
        while content_end < end and text[content_end] not in "\r\n":
            content_end += 1
        units, i = 0, start
        while i < content_end:
            width = _units(text[i], self.encoding)
            if units + width > character:
                return i
            units += width
            i += 1
        return content_end

    def position(self, text: str, offset: int) -> tuple[int, int]:
        """The LSP position of a str offset."""
        starts = [0] + [m.end() for m in _LINE_BREAK.finditer(text[:offset])]
        start = starts[-1]
        return len(starts) - 1, sum(_units(c, self.encoding) for c in text[start:offset])

    def open(self, uri: str, text: str) -> None:
        """``didOpen``."""
        self.docs[uri] = Doc(text, 1)
        self.log.append((uri, None, text))

    def change(
        self, uri: str, rng: tuple[int, int, int, int] | None, new: str, version: int
    ) -> None:
        """Apply one ``didChange`` content change (``rng`` None: the whole text)."""
        doc = self.docs[uri]
        self.log.append((uri, rng, new))
        if rng is None:
            doc.text = new
        else:
            a = self.offset(doc.text, rng[0], rng[1])
            b = self.offset(doc.text, rng[2], rng[3])
            a, b = min(a, b), max(a, b)
            doc.text = doc.text[:a] + new + doc.text[b:]
        doc.version = version


@dataclass
class Counts:
    """What one session sent and saw."""

    encoding: str
    seed: int
    messages: int = 0
    requests: int = 0
    hostile: int = 0
    edits: int = 0
    completions: int = 0
    cancels: int = 0
    answered: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    """Error responses by code and the start of their message."""
    unanswered: list[Any] = field(default_factory=list)
    divergences: list[str] = field(default_factory=list)
    crashed: str | None = None
    exit_code: int | None = None
    seconds: float = 0.0


class Session:
    """One server process, fuzzed from its start to its ``exit``."""

    def __init__(
        self,
        wire: Wire,
        encoding: str,
        rng: random.Random,
        counts: Counts,
        options: dict[str, Any],
    ) -> None:
        self.options = options
        self.wire = wire
        self.replay = Replay(encoding)
        self.rng = rng
        self.counts = counts
        self.next_id = 1
        self.expected: dict[Any, int] = {}  # request id -> responses due
        self.methods: dict[Any, str] = {}
        self.pending_completions: list[int] = []

    ##### Sending #####

    def _send(self, data: bytes, hostile: bool = False) -> None:
        self.counts.messages += 1
        self.counts.hostile += hostile
        if not self.wire.send(data):
            self.counts.crashed = self.counts.crashed or "stdin closed"

    def request(self, method: str, params: Any, hostile: bool = False, msg_id: Any = None) -> int:
        """Send a request; returns its id."""
        if msg_id is None:
            msg_id, self.next_id = self.next_id, self.next_id + 1
        self.expected[msg_id] = self.expected.get(msg_id, 0) + 1
        self.methods[msg_id] = method
        self.counts.requests += 1
        self._send(
            frame({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params}), hostile
        )
        return msg_id

    def notify(self, method: str, params: Any, hostile: bool = False) -> None:
        """Send a notification."""
        self._send(frame({"jsonrpc": "2.0", "method": method, "params": params}), hostile)

    ##### The session #####

    def initialize(self, root: Path) -> None:
        """``initialize`` (after a few requests that come too early) and ``initialized``."""
        for _ in range(self.rng.randint(1, 3)):
            self.request("textDocument/inlineCompletion", self._inline_params(), hostile=True)
        caps = {
            "general": {"positionEncodings": [self.replay.encoding]},
            "workspace": {"didChangeWatchedFiles": {"dynamicRegistration": True}},
        }
        msg_id = self.request(
            "initialize",
            {
                "processId": os.getpid(),
                "rootUri": root.as_uri(),
                "capabilities": caps,
                "initializationOptions": self.options,
            },
        )
        got = self.wire.wait_for(msg_id, 600)
        result = got[0].get("result") if got else None
        encoding = (result or {}).get("capabilities", {}).get("positionEncoding")
        if encoding != self.replay.encoding:
            self.counts.divergences.append(f"encoding negotiated {encoding!r}")
        self.notify("initialized", {})

    def step(self, root: Path) -> None:
        """One random action (one message or a few)."""
        actions: list[tuple[int, Callable[[Path], None]]] = [
            (30, self._edit),
            (8, self._complete),
            (4, self._cancel),
            (4, self._open),
            (2, self._close),
            (2, self._stats),
            (3, self._malformed_frame),
            (3, self._wrong_params),
            (2, self._unknown_method),
            (2, self._unknown_document),
            (1, self._duplicate_id),
            (1, self._out_of_order_version),
            (1, self._full_replace),
        ]
        weights = [w for w, _ in actions]
        self.rng.choices([a for _, a in actions], weights)[0](root)

    def finish(self) -> None:
        """Wait for the answers, compare the documents, shut down and exit."""
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        for msg_id, due in list(self.expected.items()):
            got = self.wire.wait_for(msg_id, max(0.1, deadline - time.monotonic()), due)
            self._count(got[:due])
            if len(got) < due:
                self.counts.unanswered.append(f"{msg_id} {self.methods[msg_id]}")
        self._compare()
        shutdown = self.request("shutdown", None)
        got = self.wire.wait_for(shutdown, 60)
        self._count(got)
        if not got:
            self.counts.unanswered.append(f"{shutdown} shutdown")
        late = self.request("textDocument/inlineCompletion", self._inline_params(), hostile=True)
        got = self.wire.wait_for(late, 30)
        self._count(got)
        if not got:
            self.counts.unanswered.append(f"{late} after shutdown")
        elif "error" not in got[0]:
            self.counts.divergences.append(f"a request after shutdown was served: {got[0]}")
        self.notify("exit", None)
        self.counts.exit_code = self.wire.close(EXIT_TIMEOUT_S)
        if self.counts.exit_code != 0:
            self.counts.crashed = self.counts.crashed or f"exit code {self.counts.exit_code}"

    def _count(self, responses: list[dict[str, Any]]) -> None:
        self.counts.answered += len(responses)
        for response in responses:
            error = response.get("error")
            if error is not None:
                self.counts.errors += 1
                message = _DIGITS.sub("N", _URI.sub("URI", str(error.get("message"))))[:60]
                kind = f"{error.get('code')} {message}"
                self.counts.error_kinds[kind] = self.counts.error_kinds.get(kind, 0) + 1

    def _compare(self) -> None:
        stats = self.wire.stats(f"stats-{self.next_id}", 120)
        if stats is None:
            self.counts.unanswered.append("final pie/stats")
            return
        held = {d["uri"]: (d["version"], d["sha256"]) for d in stats["documents"]}
        replay = {
            uri: (
                doc.version,
                hashlib.sha256(doc.text.encode("utf-8", "surrogatepass")).hexdigest(),
            )
            for uri, doc in self.replay.docs.items()
        }
        for uri in sorted(set(held) | set(replay)):
            if held.get(uri) != replay.get(uri):
                self.counts.divergences.append(
                    f"{uri}: server {held.get(uri)} replay {replay.get(uri)}"
                )

    ##### Valid actions #####

    def _uri(self, root: Path, n: int) -> str:
        return (root / f"doc{n}.py").as_uri()

    def _some_doc(self) -> str | None:
        return self.rng.choice(sorted(self.replay.docs)) if self.replay.docs else None

    def _text(self, pieces: int) -> str:
        """Random text as the server will read it.

        JSON makes a high and a low surrogate escaped one after the other one code point.
        """
        return json.loads(json.dumps("".join(self.rng.choice(PIECES) for _ in range(pieces))))

    def _open(self, root: Path) -> None:
        uri = self._uri(root, self.rng.randint(0, 5))
        if uri in self.replay.docs:
            return self._edit(root)
        text = self._text(self.rng.randint(0, 60))
        self.replay.open(uri, text)
        item = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": item})

    def _close(self, root: Path) -> None:
        uri = self._some_doc()
        if uri is None:
            return self._open(root)
        del self.replay.docs[uri]
        self.notify("textDocument/didClose", {"textDocument": {"uri": uri}})

    def _random_position(self, text: str) -> tuple[int, int]:
        """Mostly a real position; else past a line's end, the end, or in a code point."""
        roll = self.rng.random()
        if roll < 0.8 or not text:
            return self.replay.position(text, self.rng.randint(0, len(text)))
        line, character = self.replay.position(text, self.rng.randint(0, len(text)))
        if roll < 0.9:
            return line, character + self.rng.randint(1, 50)
        if roll < 0.95:
            return line + self.rng.randint(1, 5), self.rng.randint(0, 10)
        return line, max(0, character - 1) + self.rng.choice((0, 1))

    def _edit(self, root: Path) -> None:
        uri = self._some_doc()
        if uri is None:
            return self._open(root)
        doc = self.replay.docs[uri]
        changes = []
        version = doc.version + 1
        for _ in range(self.rng.choice((1, 1, 1, 2, 3))):
            a = self._random_position(doc.text)
            b = self._random_position(doc.text) if self.rng.random() < 0.4 else a
            new = self._text(self.rng.choice((0, 1, 1, 2, 5)))
            self.replay.change(uri, (*a, *b), new, version)
            changes.append({"range": {"start": _pos(a), "end": _pos(b)}, "text": new})
        self.counts.edits += len(changes)
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": changes},
        )

    def _full_replace(self, root: Path) -> None:
        uri = self._some_doc()
        if uri is None:
            return self._open(root)
        text = self._text(self.rng.randint(0, 40))
        version = self.replay.docs[uri].version + 1
        self.replay.change(uri, None, text, version)
        self.counts.edits += 1
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": version}, "contentChanges": [{"text": text}]},
        )

    def _out_of_order_version(self, root: Path) -> None:
        """An edit whose version is lower than the last one's.

        Applied: the server applies changes in the order they come and records the
        version as sent.
        """
        uri = self._some_doc()
        if uri is None:
            return self._open(root)
        doc = self.replay.docs[uri]
        version = doc.version - self.rng.randint(1, 3)
        a = self._random_position(doc.text)
        new = self._text(1)
        self.replay.change(uri, (*a, *a), new, version)
        self.counts.edits += 1
        self.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"range": {"start": _pos(a), "end": _pos(a)}, "text": new}],
            },
            hostile=True,
        )

    def _inline_params(self) -> dict[str, Any]:
        uri = self._some_doc() or "file:///nowhere.py"
        doc = self.replay.docs.get(uri)
        line, character = (
            self.replay.position(doc.text, self.rng.randint(0, len(doc.text))) if doc else (0, 0)
        )
        return {
            "textDocument": {"uri": uri},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": self.rng.choice((1, 2))},
        }

    def _complete(self, root: Path) -> None:
        method = self.rng.choice(
            ("textDocument/inlineCompletion",) * 4 + ("textDocument/completion",)
        )
        params = self._inline_params()
        if method == "textDocument/completion":
            params["context"] = {"triggerKind": 1}
        self.pending_completions.append(self.request(method, params))
        self.counts.completions += 1

    def _cancel(self, root: Path) -> None:
        if not self.pending_completions:
            return self._complete(root)
        msg_id = self.pending_completions.pop(self.rng.randrange(len(self.pending_completions)))
        self.counts.cancels += 1
        self.notify("$/cancelRequest", {"id": msg_id})

    def _stats(self, root: Path) -> None:
        self.request("pie/stats", self.rng.choice((None, {}, [])))

    ##### Hostile actions #####

    def _malformed_frame(self, root: Path) -> None:
        kind = self.rng.choice(("json", "long", "short", "header", "array", "number"))
        if kind == "json":
            body = self.rng.choice(
                (b"{", b'{"jsonrpc": "2.0", "method": ', b"\xff\xfe", b"null", b"[]")
            )
            self._send(b"Content-Length: %d\r\n\r\n" % len(body) + body, hostile=True)
        elif kind == "long":
            # Claims more than it holds, then pads the rest with spaces: the body is
            # not JSON, and the next frame starts where the claim ends.
            body = b'{"jsonrpc": "2.0", "method": "initialized"'
            claim = len(body) + self.rng.randint(1, 40)
            self._send(
                b"Content-Length: %d\r\n\r\n" % claim + body + b" " * (claim - len(body)),
                hostile=True,
            )
        elif kind == "short":
            # Claims less than it holds: the rest is junk before the next header.
            body = b'{"jsonrpc": "2.0", "method": "$/nothing", "params": {}}'
            cut = self.rng.randint(1, len(body) - 1)
            self._send(b"Content-Length: %d\r\n\r\n" % cut + body, hostile=True)
        elif kind == "header":
            self._send(b"Content-Type: nothing\r\n\r\n", hostile=True)
        elif kind == "array":
            self._send(frame([{"jsonrpc": "2.0", "method": "initialized"}]), hostile=True)
        else:
            self._send(frame(42), hostile=True)

    def _wrong_params(self, root: Path) -> None:
        uri = self._some_doc() or self._uri(root, 0)
        bad: Any = self.rng.choice(
            (
                {"textDocument": {"uri": uri}, "position": "here"},
                {"textDocument": {"uri": uri}, "position": {"line": -1, "character": 0}},
                {"textDocument": {"uri": 7}, "position": {"line": 0, "character": 0}},
                {"textDocument": {"uri": uri}, "position": {"line": 2**40, "character": 2**40}},
                {"textDocument": None},
                [],
                "text",
            )
        )
        method = self.rng.choice(
            ("textDocument/inlineCompletion", "textDocument/completion", "pie/panelCompletion")
        )
        self.request(method, bad, hostile=True)
        if self.rng.random() < 0.5:
            # A notification with bad params: dropped (logged), the documents unchanged.
            self.notify(
                "textDocument/didChange",
                {"textDocument": {"uri": uri}, "contentChanges": "x"},
                hostile=True,
            )

    def _unknown_method(self, root: Path) -> None:
        method = self.rng.choice(METHODS_UNKNOWN)
        if self.rng.random() < 0.5:
            self.request(method, {"x": 1}, hostile=True)
        else:
            self.notify(method, {"x": 1}, hostile=True)

    def _unknown_document(self, root: Path) -> None:
        uri = self._uri(root, 99)
        change = {"range": {"start": _pos((0, 0)), "end": _pos((0, 0))}, "text": "x"}
        self.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": 5}, "contentChanges": [change]},
            hostile=True,
        )
        params = {
            "textDocument": {"uri": uri},
            "position": _pos((0, 0)),
            "context": {"triggerKind": 1},
        }
        self.request("textDocument/inlineCompletion", params, hostile=True)

    def _duplicate_id(self, root: Path) -> None:
        msg_id = self.next_id - 1 if self.next_id > 1 else 1
        self.request("pie/stats", None, hostile=True, msg_id=f"dup-{msg_id}")
        self.request("pie/stats", None, hostile=True, msg_id=f"dup-{msg_id}")


def _pos(p: tuple[int, int]) -> dict[str, int]:
    return {"line": p[0], "character": p[1]}


def run_session(
    command: list[str], options: dict[str, Any], encoding: str, seed: int, messages: int, root: Path
) -> Counts:
    """Fuzz one server process with ``messages`` messages; what it sent and saw."""
    counts = Counts(encoding, seed)
    t0 = time.perf_counter()
    wire = Wire(command, env=dict(os.environ))
    session = Session(wire, encoding, random.Random(seed), counts, options)
    try:
        session.initialize(root)
        while counts.messages < messages and counts.crashed is None:
            session.step(root)
            if wire.proc.poll() is not None:
                counts.crashed = f"exited with {wire.proc.returncode} mid-session"
        session.finish()
    finally:
        if wire.proc.poll() is None:
            wire.proc.kill()
    if wire.bad_output is not None:
        counts.divergences.append(f"stdout: {wire.bad_output}")
    if counts.crashed:
        tail = b"".join(wire.stderr_tail[-20:]).decode("utf-8", "replace")
        counts.divergences.append(f"stderr tail: {tail}")
    counts.seconds = round(time.perf_counter() - t0, 1)
    return counts


def run_fuzz(args: argparse.Namespace) -> int:
    """``pie-lsp bench fuzz``: sessions over every encoding; 0 when nothing failed."""
    import tempfile

    from .tiny_model import make_tiny_model

    command = [sys.executable, "-m", "lsp_server"]
    scratch = Path(tempfile.mkdtemp(prefix="pie-fuzz-"))
    model = str(make_tiny_model(scratch / "tiny")) if args.model == "tiny" else args.model
    options = {"model": model, "completion": {"maxTokens": 4}}
    root = scratch / "workspace"
    root.mkdir()
    per = max(1, args.messages // (len(ENCODINGS) * args.sessions))
    reports = []
    for i in range(args.sessions):
        for encoding in ENCODINGS:
            seed = args.seed + i * len(ENCODINGS) + ENCODINGS.index(encoding)
            counts = run_session(command, options, encoding, seed, per, root)
            reports.append(counts)
            print(_line(counts), file=sys.stderr)
    summary = summarise(reports)
    print(json.dumps(summary, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "fuzz.json"
    path.write_text(
        json.dumps({"summary": summary, "sessions": [asdict(c) for c in reports]}, indent=2)
    )
    print(f"written: {path}", file=sys.stderr)
    return 0 if summary["failures"] == 0 else 1


def summarise(reports: list[Counts]) -> dict[str, Any]:
    """Totals over sessions.

    ``failures``: crashes, unanswered requests and divergences.
    """
    return {
        "sessions": len(reports),
        "messages": sum(c.messages for c in reports),
        "hostile": sum(c.hostile for c in reports),
        "requests": sum(c.requests for c in reports),
        "answered": sum(c.answered for c in reports),
        "errorResponses": sum(c.errors for c in reports),
        "errorKinds": _merged([c.error_kinds for c in reports]),
        "edits": sum(c.edits for c in reports),
        "completions": sum(c.completions for c in reports),
        "cancels": sum(c.cancels for c in reports),
        "crashes": sum(c.crashed is not None for c in reports),
        "unanswered": sum(len(c.unanswered) for c in reports),
        "divergences": sum(len(c.divergences) for c in reports),
        "failures": sum(
            (c.crashed is not None) + len(c.unanswered) + len(c.divergences) for c in reports
        ),
        "seconds": round(sum(c.seconds for c in reports), 1),
    }


def _merged(counters: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for counter in counters:
        for key, n in counter.items():
            out[key] = out.get(key, 0) + n
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _line(c: Counts) -> str:
    return (
        f"[{c.encoding} seed {c.seed}] {c.messages} messages ({c.hostile} hostile), "
        f"{c.edits} edits, {c.requests} requests, {c.answered} answered, "
        f"crashed {c.crashed}, unanswered {len(c.unanswered)}, divergences "
        f"{len(c.divergences)} {c.divergences[:2]}, {c.seconds} s"
    )
