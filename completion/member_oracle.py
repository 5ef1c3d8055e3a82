"""The member oracle: which members a receiver has, asked without blocking decoding.

Python goes to jedi in a worker process (:mod:`completion.member_worker`), so a slow or
crashed analysis never holds the model: a decode step waits at most its budget
(:meth:`MemberOracle.members`), and an answer that comes later is kept for the next
time the same text is asked about (users re-ask at the same place). A worker that died
is started again on the next query. JavaScript and TypeScript (and Python ``self.``
where jedi knows nothing) use tree-sitter symbol tables in process
(:mod:`completion.symbol_oracle`).

Answers are cached per (language, text, offset): the text is the whole document with
the generated text inserted, so a document's version and the position are in the key.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NamedTuple

from .syntax import grammar_name

log = logging.getLogger(__name__)

CACHED_ANSWERS = 1024
"""Answers kept (least recently used dropped)."""
RESTART_AFTER_S = 1.0
"""A worker that died is started again, but not more often than this."""
PYTHON = frozenset({"python", "py"})


class MemberQuery(NamedTuple):
    """The members at ``offset`` of ``text`` (right after the access's dot)."""

    text: str
    offset: int
    path: str | None = None
    language: str = "python"
    unsaved: frozenset[str] = frozenset()
    """Paths of files with unsaved changes (the oracle reads other files from disk)."""
    workspace: tuple[tuple[str, str], ...] = ()
    """Other files as (path, text), for the symbol-table oracle."""

    def key(self) -> tuple[str, int, int, int]:
        """What the answer depends on (the workspace aside: files on disk change rarely)."""
        return (self.language, len(self.text), hash(self.text), self.offset)


class Members(NamedTuple):
    """An answer: the complete member list, or None and why not."""

    names: frozenset[str] | None
    reason: str
    """known | object | empty | dynamic | narrowed | lambda | unsaved | error | timeout
    | unavailable | unsupported (names only with known and object: a receiver known only
    as ``object``, see :attr:`~completion.members.Names.only_object`)"""


TIMEOUT = Members(None, "timeout")
UNAVAILABLE = Members(None, "unavailable")
UNSUPPORTED = Members(None, "unsupported")


def supported(language: str) -> bool:
    """Whether some oracle answers for ``language``."""
    return language in PYTHON or grammar_name(language) in ("javascript", "typescript", "tsx")


class MemberOracle:
    """Asks jedi (worker process) or the symbol tables; caches; never blocks past a budget."""

    def __init__(self, roots: Sequence[str] = ()) -> None:
        self.roots = list(roots)
        self.restarts = 0
        self._cache: OrderedDict[tuple[str, int, int, int], Members] = OrderedDict()
        self._pending: dict[tuple[str, int, int, int], Future[Members]] = {}
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._started = 0.0

    ##### asking #####

    def cached(self, query: MemberQuery) -> Members | None:
        """The answer already known for ``query``, if any (never waits)."""
        with self._lock:
            found = self._cache.get(query.key())
            if found is not None:
                self._cache.move_to_end(query.key())
            return found

    def members(self, query: MemberQuery, budget_s: float | None) -> Members:
        """The answer for ``query``, waiting at most ``budget_s`` (None: as long as it takes).

        Past the budget: :data:`TIMEOUT`; the answer is still cached when it comes.
        """
        found = self.cached(query)
        if found is not None:
            return found
        if not supported(query.language):
            return UNSUPPORTED
        if query.language not in PYTHON:
            return self._remember(query.key(), self._from_symbols(query))
        try:
            return self._ask(query).result(timeout=budget_s)
        except FutureTimeout:
            return TIMEOUT

    def warm(self, text: str, path: str | None, language: str) -> None:
        """Start the worker and let it load what ``text`` imports (returns at once)."""
        if language in PYTHON:
            worker = self._running()
            if worker is not None:
                worker.send({"op": "warm", "text": text, "path": path, "roots": self.roots})

    def close(self) -> None:
        """Stop the worker process (a later query starts a new one)."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()

    @property
    def pid(self) -> int | None:
        """The worker process's id (None when none runs)."""
        worker = self._worker
        return worker.pid if worker is not None and worker.alive else None

    ##### internals #####

    def _ask(self, query: MemberQuery) -> Future[Members]:
        key = query.key()
        with self._lock:
            pending = self._pending.get(key)
            if pending is not None:
                return pending
        future: Future[Members] = Future()
        worker = self._running()
        if worker is None:
            future.set_result(UNAVAILABLE)
            return future
        with self._lock:
            self._pending[key] = future
        request = {
            "op": "members",
            "text": query.text,
            "offset": query.offset,
            "path": query.path,
            "roots": self.roots,
            "unsaved": sorted(query.unsaved),
        }
        reply = worker.send(request)
        reply.add_done_callback(lambda r: self._settle(query, future, r))
        return future

    def _settle(self, query: MemberQuery, future: Future[Members], reply: Future[Any]) -> None:
        """Turn the worker's reply into an answer, fall back to the symbol tables, cache it."""
        answer = reply.result()
        if answer is None:
            members = UNAVAILABLE
        elif answer.get("names") is not None:
            members = Members(frozenset(answer["names"]), str(answer.get("reason", "known")))
        else:
            members = Members(None, str(answer.get("reason", "error")))
            if answer.get("error"):
                log.info("member oracle: %s", answer["error"])
        if members.names is None and members.reason in ("empty", "error"):
            fallback = self._from_symbols(query)
            members = fallback if fallback.names is not None else members
        key = query.key()
        with self._lock:
            self._pending.pop(key, None)
        if members is not UNAVAILABLE:
            self._remember(key, members)
        future.set_result(members)

    def _remember(self, key: tuple[str, int, int, int], members: Members) -> Members:
        with self._lock:
            self._cache[key] = members
            while len(self._cache) > CACHED_ANSWERS:
                self._cache.popitem(last=False)
        return members

    @staticmethod
    def _from_symbols(query: MemberQuery) -> Members:
        try:
            from .symbol_oracle import symbol_members  # tree-sitter tables: when asked

            names = symbol_members(
                query.language, query.text, query.offset, query.workspace, path=query.path
            )
        except Exception as exc:  # a symbol table never fails a completion
            log.warning("symbol oracle failed: %s: %s", type(exc).__name__, exc)
            return Members(None, "error")
        return Members(names, "known") if names else Members(None, "empty")

    def _running(self) -> _Worker | None:
        """The worker, started (again) if needed; None while a restart must wait."""
        with self._lock:
            worker = self._worker
            if worker is not None and worker.alive:
                return worker
            now = time.monotonic()
            if worker is not None and now - self._started < RESTART_AFTER_S:
                return None
            if worker is not None:
                self.restarts += 1
                log.warning("member oracle worker exited: starting it again")
            self._started = now
            try:
                self._worker = _Worker()
            except OSError as exc:
                log.warning("member oracle worker failed to start: %s", exc)
                self._worker = None
            return self._worker


class _Worker:
    """One worker process and the thread that reads its answers."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "completion.member_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.pid = self.proc.pid
        self.alive = True
        self._next = 0
        self._replies: dict[int, Future[Any]] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="pie-oracle-reader", daemon=True).start()

    def send(self, request: dict[str, Any]) -> Future[Any]:
        """Send one request; its future gets the reply (None if the worker dies first)."""
        reply: Future[Any] = Future()
        with self._lock:
            self._next += 1
            self._replies[self._next] = reply
            line = json.dumps({**request, "id": self._next}) + "\n"
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(line)
                self.proc.stdin.flush()
            except (OSError, ValueError):
                self._replies.pop(self._next, None)
                self.alive = False
                reply.set_result(None)
        return reply

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                answer = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._lock:
                reply = self._replies.pop(answer.get("id"), None)
            if reply is not None:
                reply.set_result(answer)
        self.alive = False
        with self._lock:
            left, self._replies = self._replies, {}
        for reply in left.values():
            reply.set_result(None)

    def stop(self) -> None:
        """End the process (closing its stdin; killed if it lingers)."""
        self.alive = False
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
