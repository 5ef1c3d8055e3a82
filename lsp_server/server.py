"""The language server: thin handlers around the document store and the engine.

Threading model: the asyncio loop handles the protocol and never blocks; the model
(loading and every forward pass) runs on one worker thread. A completion holds a
:class:`completion.engine.CancelToken` that ``$/cancelRequest``, a newer request for the
same document, or a ``didChange`` of it sets; the worker checks it between steps.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from functools import partial
from typing import Any, BinaryIO, NamedTuple

from lsprotocol import types
from pygls import uris
from pygls.capabilities import get_capability
from pygls.exceptions import (
    JsonRpcException,
    JsonRpcInvalidParams,
    JsonRpcInvalidRequest,
    JsonRpcServerNotInitialized,
)
from pygls.io_ import StdinAsyncReader, StdoutWriter
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol
from pygls.protocol.language_server import lsp_method

from completion.engine import (
    Cancelled,
    CancelToken,
    CompletionOptions,
    CompletionRequest,
    CompletionResult,
    Engine,
    OutOfMemory,
    Totals,
)
from completion.members import dot_before
from completion.models import load_model

from . import __version__, panel, parent
from .config import Config, parse_config, settings_from_did_change
from .disk_cache import DiskCache
from .documents import Document, DocumentStore, UnknownDocumentError
from .framing import serve_frames
from .positions import Encoding, PositionError
from .watching import Watching, on_watched_files

log = logging.getLogger(__name__)

STATS = "pie/stats"
DOCUMENT_SYNCED = "$/pie/documentSynced"
REQUEST_FAILED = types.LSPErrorCodes.RequestFailed.value
_WORD_TAIL = re.compile(r"[\w$]+$")
ACCEPT_COMMAND = "pie.accept"
"""``workspace/executeCommand`` a client runs when the user accepts a suggestion
(set as each ``InlineCompletionItem.command``; partial accepts send it themselves)."""
ACCEPT_KINDS = ("full", "word", "line", "partial")
ISSUED_KEPT = 256
CALIBRATION_SLICE_S = 0.1
"""Longest stretch of verify-cost measurement on the worker: a request that arrives
meanwhile waits at most this (and one forward)."""
CALIBRATION_CAP_S = 30.0
"""Measurement time after which the curve is built from what was timed."""
CALIBRATION_IDLE_S = 0.05
"""How often a waiting measurement looks whether the worker is free."""
CALIBRATION_QUIET_S = 1.0
"""Quiet time (no request since) before a measurement slice may start: the first
completion after start-up, and a burst of typing, go first."""


class RequestFailed(JsonRpcException):
    """LSP ``RequestFailed``: the request was valid but could not be served."""

    CODE = REQUEST_FAILED
    MESSAGE = "Request failed"


IN_ORDER = frozenset(
    {
        types.TEXT_DOCUMENT_DID_OPEN,
        types.TEXT_DOCUMENT_DID_CHANGE,
        types.TEXT_DOCUMENT_DID_CLOSE,
        types.WORKSPACE_DID_CHANGE_CONFIGURATION,
    }
)
"""Notifications handled after the request tasks started before them (see
:meth:`PieProtocol.handle_message`)."""


class _Unreadable(NamedTuple):
    """A message whose params did not fit its method (already answered, if a request)."""

    method: str
    jsonrpc: str = "2.0"


class PieProtocol(LanguageServerProtocol):
    """pygls' protocol, answering every request, also those it cannot read.

    pygls 2.1 structures unknown requests into a class whose ``params`` field is
    required, so ``{"method": "pie/stats", "id": 1}`` failed to deserialize and was
    never answered (editors send such requests without params): ``params`` defaults to
    null for methods lsprotocol does not know. And a request whose params have the wrong
    shape (``position`` as a string) was dropped unanswered, so the client waited
    forever: it gets an ``InvalidParams`` error response now; a malformed notification
    is logged.
    """

    def structure_message(self, data: dict[str, Any]) -> Any:
        """Structure a message; answer a malformed request with InvalidParams."""
        if (
            isinstance(data, dict)
            and "method" in data
            and "params" not in data
            and self.get_message_type(data["method"]) is None
        ):
            data = {**data, "params": None}
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            method = str(data.get("method", ""))
            if "id" in data and "method" in data:
                error = JsonRpcInvalidParams(f"{method}: the params do not fit the method")
                self._send_response(data["id"], error=error.to_response_error())
            else:
                log.error("dropped a malformed %s message: %s", method or "response", exc)
            return _Unreadable(method)

    # pygls keeps its own copy of every open document in its workspace, and to apply a
    # change to it, it rewrote the change's range in place when a character lay past the
    # end of a line as *it* splits lines (at "\n" only, where LSP also breaks at a lone
    # "\r"): the edit pie-lsp then applied was a different one (the protocol fuzzer
    # found it). pie-lsp keeps the documents (lsp_server/documents.py); pygls keeps none.

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> Any:
        """Hand ``didOpen`` to pie-lsp's handler only."""
        yield from self._ours(types.TEXT_DOCUMENT_DID_OPEN, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> Any:
        """Hand ``didChange`` to pie-lsp's handler only."""
        yield from self._ours(types.TEXT_DOCUMENT_DID_CHANGE, params)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> Any:
        """Hand ``didClose`` to pie-lsp's handler only."""
        yield from self._ours(types.TEXT_DOCUMENT_DID_CLOSE, params)

    def _ours(self, method: str, params: Any) -> Any:
        if (handler := self.fm.features.get(method)) is not None:
            yield handler, (params,), None

    _initialize_seen = False

    def _refusal(self, method: str | None) -> JsonRpcException | None:
        """The error for a message that comes too early or too late (None: handle it).

        Before ``initialize`` a request is answered ServerNotInitialized, after
        ``shutdown`` InvalidRequest, as the specification asks (pygls dropped both
        unanswered); notifications then are dropped, ``exit`` excepted.
        """
        if method is None or method == types.EXIT:
            return None
        if not self._initialize_seen:
            return JsonRpcServerNotInitialized(f"{method}: the server is not initialized yet")
        if self._shutdown:
            return JsonRpcInvalidRequest(f"{method}: the server is shutting down")
        return None

    def handle_message(self, message: Any) -> None:
        """Handle messages in arrival order; skip those already answered as unreadable.

        pygls runs a request's ``async`` handler as a task whose first step comes a loop
        step later, while a notification read right after it (``didChange``,
        ``didClose``) ran at once: the request then saw the document as it was *after*
        the edit it was sent before (a wrong position, or "document not open"). A
        notification that changes what requests read (:data:`IN_ORDER`) is therefore
        handled through ``call_soon`` too, in the same queue as the tasks' first steps,
        so each request takes its document snapshot first. (Not ``exit``: the reader
        loop must see it before it blocks on the next read.)
        """
        if isinstance(message, _Unreadable):
            return
        method = getattr(message, "method", None)
        if method == types.INITIALIZE:
            self._initialize_seen = True
        refusal = self._refusal(method)
        if refusal is not None:
            if hasattr(message, "id"):
                self._send_response(message.id, error=refusal.to_response_error())
            return
        if method in IN_ORDER and not hasattr(message, "id"):
            asyncio.get_running_loop().call_soon(super().handle_message, message)
            return
        super().handle_message(message)


class PieServer(LanguageServer):
    """pie-lsp: documents, configuration, the model and its worker thread."""

    def __init__(self, config: Config | None = None) -> None:
        super().__init__(
            "pie-lsp",
            __version__,
            protocol_cls=PieProtocol,
            text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
        )
        self.base_config = config or Config()
        self.config = self.base_config
        self.documents = DocumentStore()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pie-model")
        self.engine: Engine | None = None
        self.model_error: str | None = None
        self._load_task: asyncio.Task[Engine] | None = None
        self._loaded_key: tuple[str, str, str, str, bool] | None = None
        self.inflight: dict[str, CancelToken] = {}
        """Per document: the inline completion running for it."""
        self.panels: dict[str, CancelToken] = {}
        """Per document: the panel request running for it (automatic inline requests
        do not supersede it; a newer panel request or an edit does)."""
        self.pending_problems: list[str] = []
        self.started = time.time()
        self.counters = {
            "cancelled": 0,
            "superseded": 0,
            "errors": 0,
            "edits": 0,
            "suggested": 0,
            "accepted": 0,
            "partiallyAccepted": 0,
            "acceptedChars": 0,
            "skippedMidWord": 0,
            "memberPrefetches": 0,
            "panelRequests": 0,
            "panelDrafts": 0,
            "panelMs": 0.0,
            "panelAccepted": 0,
        }
        self.issued: OrderedDict[str, int] = OrderedDict()
        """Recent suggestion ids -> their length, for accept reports."""
        self.from_panel: set[str] = set()
        """Those of :attr:`issued` that a suggestions panel showed."""
        self._refresh_timers: dict[str, asyncio.TimerHandle] = {}
        self._refreshing: dict[str, CancelToken] = {}
        self._calibrating: asyncio.Future[None] | None = None
        self._last_request = 0.0
        """Loop time when a completion last started or ended."""
        self.calibration_seconds = 0.0
        """Worker time the verify-cost measurement has taken so far."""
        self.disk_cache = DiskCache(self)
        """Prompt caches saved across restarts (``cache.diskMB``, ``cache.diskDir``)."""
        self.watching = Watching(self)
        """The workspace folders' files on disk (``workspace.watch``)."""

    ##### Helpers for handlers #####

    @property
    def encoding(self) -> Encoding:
        """The negotiated position encoding."""
        enc = str(self.workspace.position_encoding or "utf-16")
        return enc if enc in ("utf-8", "utf-16", "utf-32") else "utf-16"  # type: ignore[return-value]

    def show(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """``window/showMessage`` plus a log line."""
        log.warning("%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"pie-lsp: {message}"))

    def apply_config(self, raw: Any, *, base: Config | None = None) -> None:
        """Parse client settings; report problems; reload the model if it changed."""
        config, problems = parse_config(raw, base or self.config)
        for problem in problems:
            self.show(f"configuration: {problem}")
        old = self.config
        self.config = config
        engine = self.engine
        if engine is not None:
            self.on_worker(
                engine.configure_caches,
                config.cache.maxDocuments,
                config.cache.maxMemoryMB << 20,
                config.cache.strategy != old.cache.strategy,
            )
        if config.speculative.enabled and not old.speculative.enabled:
            self.measure_verify_cost()
        if self._loaded_key is not None and config.model_key() != self._loaded_key:
            log.info("model settings changed: reloading")
            self.start_loading()
        else:
            self.disk_cache.configure(config, self.engine)

    def options(self) -> CompletionOptions:
        """Per-request options from the current configuration."""
        c = self.config
        return CompletionOptions(
            max_tokens=c.completion.maxTokens,
            temperature=c.completion.temperature,
            multiline=c.completion.multiline,  # type: ignore[arg-type]
            context_tokens=c.completion.contextTokens,
            strategy=c.cache.strategy,  # type: ignore[arg-type]
            tail_tokens=c.cache.tailTokens,
            after_edit_tokens=c.cache.afterEditTokens,
            stale_budget=None if c.cache.maxStaleTokens < 0 else c.cache.maxStaleTokens,
            confidence_margin=c.cache.confidenceMargin,
            gate_refresh_tokens=c.cache.gateRefreshTokens,
            speculative=c.speculative.enabled,
            max_draft_tokens=c.speculative.maxDraftTokens,
            members=c.constraints.members,
            syntax=c.constraints.syntax,
            oracle_budget_ms=None
            if c.constraints.oracleBudgetMs < 0
            else c.constraints.oracleBudgetMs,
            workspace_tokens=c.completion.workspaceTokens,
        )

    def workspace_roots(self) -> list[str]:
        """The workspace folders' paths (the member oracle's projects)."""
        folders = self.workspace.folders.values() if self.workspace is not None else []
        roots = [p for f in folders if (p := file_path(f.uri)) is not None]
        root = (
            file_path(self.workspace.root_uri)
            if self.workspace and self.workspace.root_uri
            else None
        )
        return roots or ([root] if root else [])

    def on_worker(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` on the model worker, after the work queued before it.

        Every change to the engine's per-document state goes through here (or runs in a
        completion), so it never races the work in flight; a failure is logged.
        """
        future = asyncio.get_running_loop().run_in_executor(self.worker, partial(fn, *args))

        def done(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.error("%s failed: %s", getattr(fn, "__name__", fn), f.exception())

        future.add_done_callback(done)
        return future

    def close(self, uri: str) -> None:
        """Forget a document: stop its work, then free its state on the worker."""
        self.documents.close(uri)
        self.touch(uri)
        self.stop_requests(uri, "document closed")
        if self.disk_cache.closed(uri) is None and self.engine is not None:
            self.on_worker(self.engine.forget, uri)

    def stop_requests(self, uri: str, reason: str) -> None:
        """Cancel the inline completion and the panel running for a document."""
        for running in (self.inflight.get(uri), self.panels.get(uri)):
            if running is not None:
                running.cancel(reason)

    def stop_refreshes(self, reason: str) -> None:
        """Pause every background refresh (each goes on later from where it stopped)."""
        for running in list(self._refreshing.values()):
            running.cancel(reason)

    def tracked_documents(self) -> set[str]:
        """Documents holding any state in the server, its caches or the engine."""
        keys = {d.uri for d in self.documents}
        keys |= set(self.inflight) | set(self.panels)
        keys |= set(self._refresh_timers) | set(self._refreshing)
        if self.engine is not None:
            keys |= self.engine.tracked_keys()
        return keys

    ##### Background refresh of stale tokens #####

    def touch(self, uri: str) -> None:
        """Activity on a document: stop its refresh and restart the idle clock."""
        self.documents.mark_used(uri)
        self.disk_cache.active(uri)
        timer = self._refresh_timers.pop(uri, None)
        if timer is not None:
            timer.cancel()
        running = self._refreshing.get(uri)
        if running is not None:
            running.cancel("activity")

    def schedule_refresh(self, uri: str, wanted: bool = False) -> None:
        """Refresh the document's stale tokens once it has been quiet for a while.

        ``wanted``: a completion's confidence gate wanted the refresh and left it to the
        background (``refresh_wanted``): it starts now, whatever the drift budget, and
        the next keystroke's activity pauses it (it goes on from there later).
        """
        stale = self.engine.stale_tokens(uri) if self.engine is not None else 0
        if not stale or (not wanted and stale <= self.config.cache.staleBudget):
            return
        self.touch(uri)
        loop = asyncio.get_running_loop()
        delay = 0.0 if wanted else self.config.cache.idleRefreshMs / 1000
        self._refresh_timers[uri] = loop.call_later(
            delay, lambda: asyncio.ensure_future(self._refresh(uri))
        )

    async def _refresh(self, uri: str) -> None:
        self._refresh_timers.pop(uri, None)
        engine = self.engine
        if engine is None or self.inflight or self.panels:
            return  # a completion is running or waiting: it has priority
        token = CancelToken()
        self._refreshing[uri] = token
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            n = await loop.run_in_executor(self.worker, engine.refresh, uri, token)
            log.info(
                "refreshed %d stale tokens of %s in %.0f ms",
                n,
                uri.rsplit("/", 1)[-1],
                (time.perf_counter() - t0) * 1000,
            )
            self.disk_cache.quiet(uri)
        except Cancelled:
            log.debug("refresh of %s cancelled", uri)
        except Exception:
            log.exception("background refresh failed")
        finally:
            if self._refreshing.get(uri) is token:
                del self._refreshing[uri]

    ##### Model lifecycle #####

    def start_loading(self) -> asyncio.Task[Engine]:
        """Load (or reload) the configured model in the background, with progress."""
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.engine is not None:
            self.engine.close()
        self.engine = None
        self.disk_cache.configure(self.config, None)
        self.model_error = None
        self._loaded_key = self.config.model_key()
        task = asyncio.ensure_future(self._load(self.config))
        # The failure is reported through showMessage and request errors; mark it seen.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._load_task = task
        return task

    async def _load(self, config: Config) -> Engine:
        loop = asyncio.get_running_loop()
        token: str | None = None
        if get_capability(self.client_capabilities, "window.work_done_progress", False):
            token = f"pie-load-{uuid.uuid4().hex[:8]}"
            try:
                await asyncio.wait_for(self.work_done_progress.create_async(token), 10)
                self.work_done_progress.begin(
                    token,
                    types.WorkDoneProgressBegin(
                        title="pie-lsp", message=f"loading {config.model}", percentage=0
                    ),
                )
            except Exception:  # a client may refuse progress; loading goes on without it
                log.debug("work done progress refused", exc_info=True)
                token = None

        def progress(message: str, percent: float | None) -> None:
            log.info("%s", message)
            if token is not None:
                report = types.WorkDoneProgressReport(
                    message=message, percentage=None if percent is None else int(percent)
                )
                loop.call_soon_threadsafe(self.work_done_progress.report, token, report)

        def work() -> Engine:
            loaded = load_model(
                config.model,
                config.device,
                config.dtype,
                quantize=config.quantize,
                trust_remote_code=config.trustRemoteCode,
                progress=progress,
            )
            engine = Engine(loaded, max_documents=config.cache.maxDocuments)
            engine.caches.max_bytes = config.cache.maxMemoryMB << 20
            return engine

        try:
            engine = await loop.run_in_executor(self.worker, work)
        except Exception as exc:
            self.model_error = str(exc)
            log.error("model failed to load: %s", exc, exc_info=True)
            self.show(f"the model failed to load: {exc}", types.MessageType.Error)
            if token is not None:
                self.work_done_progress.end(token, types.WorkDoneProgressEnd(message="failed"))
            raise
        self.engine = engine
        engine.set_workspace(self.workspace_roots())
        engine.prepare_guards()
        self.disk_cache.configure(self.config, engine)
        for doc in self.documents:
            engine.warm_oracle(doc.text, file_path(doc.uri), doc.language_id)
            self.disk_cache.opened(doc.uri, doc.text)
        if token is not None:
            self.work_done_progress.end(
                token,
                types.WorkDoneProgressEnd(
                    message=f"{config.model} ready on {engine.loaded.device.type}"
                ),
            )
        log.info("model ready: %s", engine.describe())
        self.measure_verify_cost()
        return engine

    def measure_verify_cost(self) -> None:
        """Measure the engine's verify cost on the worker once speculation is wanted.

        Not part of loading (the model is ready sooner) and never ahead of a request:
        it runs in slices of :data:`CALIBRATION_SLICE_S` while no request is in flight
        and none came for :data:`CALIBRATION_QUIET_S`, and stops at
        :data:`CALIBRATION_CAP_S` of work with what it timed. Until then completions
        decode plainly.
        """
        engine = self.engine
        if (
            engine is None
            or not self.config.speculative.enabled
            or engine.costs_measured
            or self._calibrating is not None
        ):
            return
        self._calibrating = asyncio.ensure_future(self._calibrate(engine))

    async def _calibrate(self, engine: Engine) -> None:
        loop = asyncio.get_running_loop()
        spent = 0.0
        try:
            self._last_request = max(self._last_request, loop.time())
            while self.engine is engine and self.config.speculative.enabled:
                quiet = loop.time() - self._last_request >= CALIBRATION_QUIET_S
                if self.inflight or self.panels or self._refreshing or not quiet:
                    await asyncio.sleep(CALIBRATION_IDLE_S)  # requests come first
                    continue
                t0 = loop.time()
                done = await loop.run_in_executor(
                    self.worker, engine.calibrate, CALIBRATION_SLICE_S
                )
                spent += loop.time() - t0
                self.calibration_seconds = round(spent, 2)
                if done:
                    return
                if spent > CALIBRATION_CAP_S:
                    await loop.run_in_executor(self.worker, engine.stop_calibration)
                    log.warning(
                        "verify cost measurement stopped at its cap (%.0f s): using what "
                        "it timed, %s",
                        CALIBRATION_CAP_S,
                        engine.verify_cost(),
                    )
                    return
                await asyncio.sleep(0)  # let a request that arrived meanwhile in first
        except Exception:
            log.exception("verify cost measurement failed")
        finally:
            self._calibrating = None

    async def ready_engine(self) -> Engine:
        """The engine, waiting for a load in progress; raises RequestFailed on failure."""
        if self.engine is not None:
            return self.engine
        task = self._load_task or self.start_loading()
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():  # superseded by a reload: wait for the new one
                return await self.ready_engine()
            raise
        except Exception:
            raise RequestFailed(f"no model: {self.model_error}") from None

    ##### Completion #####

    def locate(
        self, uri: str, position: types.Position, *, strict: bool = True
    ) -> tuple[Document, int]:
        """The document and str offset of an LSP position; InvalidParams if impossible."""
        try:
            doc = self.documents.get(uri)
        except UnknownDocumentError as exc:
            raise JsonRpcInvalidParams(str(exc.args[0])) from None
        try:
            offset = doc.index.offset(
                position.line, position.character, self.encoding, strict=strict
            )
        except PositionError as exc:
            raise JsonRpcInvalidParams(f"bad position for {uri}: {exc}") from None
        return doc, offset

    def request(self, doc: Document, text: str, offset: int, tree: Any) -> CompletionRequest:
        """A completion request at ``offset`` of ``text`` (``doc``'s current text)."""
        # Other open documents, most recently used first: a draft source.
        others = tuple((d.uri, d.text) for d in self.documents if d.uri != doc.uri)[::-1]
        return CompletionRequest(
            doc.uri,
            text,
            offset,
            self.options(),
            others,
            language=doc.language_id,
            path=file_path(doc.uri),
            tree=tree,
            unsaved=frozenset(
                p for d in self.documents if d.unsaved and (p := file_path(d.uri)) is not None
            ),
        )

    def anticipate(self, doc: Document, cursor: int) -> None:
        """After an edit that ends at ``cursor``: start the member oracle's query there.

        The completion request that follows (after the editor's debounce) then finds the
        answer cached. Only when the text before the cursor ends in a member access.
        """
        engine = self.engine
        if engine is None or not self.config.constraints.members:
            return
        if dot_before(doc.text, cursor) is None:
            return  # the cheap test first: no tree, no request for most keystrokes
        try:
            self.counters["memberPrefetches"] += engine.anticipate(
                self.request(doc, doc.text, cursor, doc.tree)
            )
        except Exception as exc:  # a hint: never fails the edit
            log.warning("member oracle prefetch failed: %s: %s", type(exc).__name__, exc)

    async def complete(
        self, uri: str, position: types.Position, alternatives: int = 0
    ) -> tuple[Document, int, CompletionResult | None]:
        """Run one completion for a document position; None if superseded."""

        def work(engine: Engine, request: CompletionRequest, token: CancelToken) -> Any:
            return engine.complete(request, token, alternatives=alternatives)

        doc, offset, result = await self.on_model(uri, position, work, "completion")
        if result is None:
            return doc, offset, None
        log.info(
            "completion %s:%d,%d %s %.0f ms (prefill %d/%d tokens %.0f ms, %d generated %.0f ms): %r",
            uri.rsplit("/", 1)[-1],
            position.line,
            position.character,
            result.mode,
            result.total_ms,
            result.encoded_tokens,
            result.prompt_tokens,
            result.prefill_ms,
            result.generated_tokens,
            result.decode_ms,
            result.text[:60],
        )
        self.schedule_refresh(uri, wanted=result.refresh_wanted)
        if uri not in self._refresh_timers:
            self.disk_cache.quiet(uri)
        return doc, offset, result

    async def on_model(
        self,
        uri: str,
        position: types.Position,
        work: Callable[[Engine, CompletionRequest, CancelToken], Any],
        what: str,
        lane: dict[str, CancelToken] | None = None,
    ) -> tuple[Document, int, Any]:
        """Run ``work`` for a document position on the model worker; None if superseded.

        The request supersedes (cancels) the one of its kind running for the document
        (``lane``: :attr:`inflight`, the default, or :attr:`panels`), and is cancelled by a later
        one, an edit, or the client (``$/cancelRequest``). Errors other than
        cancellation become ``RequestFailed`` (``what`` failed).
        """
        slots = self.inflight if lane is None else lane
        doc, offset = self.locate(uri, position)
        text = doc.text  # the snapshot this work decodes against
        engine = await self.ready_engine()
        self.stop_refreshes(what)  # the worker is shared: requests come first
        await self.disk_cache.loaded(uri)
        if self.documents.get_open(uri) is not doc or doc.text is not text:
            return doc, offset, None  # closed or edited while the model loaded
        self.stop_refreshes(what)
        self.touch(uri)
        token = CancelToken()
        previous = slots.get(uri)
        if previous is not None:
            previous.cancel("superseded")
            self.counters["superseded"] += 1
        slots[uri] = token
        self._last_request = asyncio.get_running_loop().time()
        tree = doc.tree  # read here: the event loop owns the document
        request = self.request(doc, text, offset, tree.copy() if tree is not None else None)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self.worker, partial(work, engine, request, token))
        except asyncio.CancelledError:
            token.cancel()
            self.counters["cancelled"] += 1
            raise
        except Cancelled:
            return doc, offset, None
        except OutOfMemory as exc:
            self.counters["errors"] += 1
            log.error("%s ran out of memory: %s", what, exc.__cause__)
            self.show(
                f"{exc}: the prompt caches ({exc.freed / 2**20:.0f} MB) were dropped and "
                "the next request rebuilds them; if it happens again, lower "
                "completion.contextTokens or cache.maxMemoryMB",
                types.MessageType.Error,
            )
            raise RequestFailed(f"{what} failed: out of memory") from exc
        except Exception as exc:
            self.counters["errors"] += 1
            log.exception("%s failed", what)
            raise RequestFailed(f"{what} failed: {exc}") from exc
        finally:
            self._last_request = asyncio.get_running_loop().time()
            if slots.get(uri) is token:
                del slots[uri]
        return doc, offset, result

    def issue(self, text: str, panel: bool = False) -> str:
        """A new suggestion id (reported back by the client's accept command)."""
        sid = uuid.uuid4().hex[:12]
        self.issued[sid] = len(text)
        if panel:
            self.from_panel.add(sid)
        while len(self.issued) > ISSUED_KEPT:
            old, _ = self.issued.popitem(last=False)
            self.from_panel.discard(old)
        self.counters["suggested"] += 1
        return sid

    def accept(self, report: Any) -> dict[str, Any]:
        """Count an accept reported by a client (``pie.accept``)."""
        if not isinstance(report, dict) or not isinstance(report.get("id"), str):
            raise JsonRpcInvalidParams(
                'pie.accept takes one argument {"id": str, "kind"?: "full"|"word"|"line", "chars"?: int}'
            )
        kind = report.get("kind", "full")
        chars = report.get("chars")
        if kind not in ACCEPT_KINDS:
            raise JsonRpcInvalidParams(f"pie.accept: kind must be one of {', '.join(ACCEPT_KINDS)}")
        if chars is not None and (
            isinstance(chars, bool) or not isinstance(chars, int) or chars < 0
        ):
            raise JsonRpcInvalidParams("pie.accept: chars must be a non-negative integer")
        known = report["id"] in self.issued
        if chars is None:
            chars = self.issued.get(report["id"], 0) if kind == "full" else 0
        self.counters["accepted" if kind == "full" else "partiallyAccepted"] += 1
        self.counters["panelAccepted"] += known and report["id"] in self.from_panel
        self.counters["acceptedChars"] += chars
        return {"counted": True, "known": known}

    def watch_parent(self, pid: int) -> None:
        """Exit when the editor process ``pid`` is gone (:mod:`lsp_server.parent`).

        A ``pid`` not running already (an editor in another process namespace, such as
        outside the container the server runs in) is not watched.
        """
        was_parent = pid == os.getppid()
        if not parent.alive(pid, was_parent):
            log.info("processId %d is not a process here: not watched", pid)
            return

        async def watch() -> None:
            while parent.alive(pid, was_parent):
                await asyncio.sleep(parent.POLL_S)
            log.warning("the editor (process %d) is gone: exiting", pid)
            logging.shutdown()
            # Not sys.exit: the thread reading stdin stays blocked while a wrapper holds
            # the pipe open, and the interpreter would wait for it at exit.
            os._exit(0 if self.protocol._shutdown else 1)

        # Held: the loop keeps only a weak reference to a task.
        self._parent_watch = asyncio.get_running_loop().create_task(watch())

    def _start_io_async(
        self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
    ) -> None:
        """Serve stdio with :func:`~lsp_server.framing.serve_frames`.

        It is pygls' loop, made to find the next frame after a broken one.
        """
        self._stop_event = threading.Event()
        reader = StdinAsyncReader(stdin or sys.stdin.buffer, self.thread_pool)
        self.protocol.set_writer(StdoutWriter(stdout or sys.stdout.buffer))
        try:
            asyncio.run(
                serve_frames(self._stop_event, reader, self.protocol, self.protocol._send_data)
            )
        except BrokenPipeError:
            log.error("the client closed the connection; shutting down")
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            self.shutdown()

    def stats(self) -> dict[str, Any]:
        """The ``pie/stats`` payload."""
        engine = self.engine
        if engine is not None:
            model: dict[str, Any] = {"status": "ready", **engine.describe()}
            totals: dict[str, Any] = asdict(engine.totals)
        else:
            status = "error" if self.model_error else "loading"
            model = {"status": status, "id": self.config.model, "device": None, "dtype": None}
            if self.model_error:
                model["error"] = self.model_error
            totals = asdict(Totals())
        for key in ("prefillMs", "decodeMs", "cacheUpdateMs"):
            totals[key] = round(totals[key], 1)
        totals.update(self.counters)
        totals["documentsTracked"] = len(self.tracked_documents())
        totals["cacheBytes"] = engine.caches.nbytes() if engine else 0
        totals["evictions"] = engine.caches.evictions if engine else 0
        totals["draftDocuments"] = len(engine.workspace) if engine else 0
        totals["verifyCost"] = engine.verify_cost() if engine else {}
        totals["calibrationSeconds"] = self.calibration_seconds
        totals["oracleRestarts"] = engine.oracle.restarts if engine else 0
        totals["oraclePid"] = engine.oracle.pid if engine else None
        totals.update(self.disk_cache.stats())
        totals.update(self.watching.stats())
        strategy: str = self.config.cache.strategy
        if engine is not None:
            strategy = engine.effective_strategy(strategy)  # type: ignore[arg-type]
        docs = [
            {
                "uri": d.uri,
                "version": d.version,
                "languageId": d.language_id,
                "sha256": hashlib.sha256(d.text.encode("utf-8", "surrogatepass")).hexdigest(),
                "tokens": engine.cached_tokens(d.uri) if engine else 0,
                "staleTokens": engine.stale_tokens(d.uri) if engine else 0,
                "strategy": strategy,
            }
            for d in self.documents
        ]
        return {
            "server": {
                "version": __version__,
                "positionEncoding": self.encoding,
                "uptimeSeconds": round(time.time() - self.started, 1),
            },
            "model": model,
            "documents": docs,
            "totals": totals,
        }


def file_path(uri: str) -> str | None:
    """The file system path of a ``file:`` URI (None for other schemes)."""
    if not uri.startswith("file:"):
        return None
    return uris.to_fs_path(uri)


def create_server(config: Config | None = None) -> PieServer:
    """Build the server with every handler registered."""
    server = PieServer(config)
    for register in (_lifecycle, _document_sync, _completions, _workspace, panel.register):
        register(server)
    return server


def _lifecycle(server: PieServer) -> None:
    """Register initialize, initialized and shutdown."""

    @server.feature(types.INITIALIZE)
    def initialize(ls: PieServer, params: types.InitializeParams) -> None:
        config, problems = parse_config(params.initialization_options, ls.base_config)
        ls.config = config
        ls.pending_problems = problems
        if params.process_id is not None:
            ls.watch_parent(params.process_id)

    @server.feature(types.INITIALIZED)
    def initialized(ls: PieServer, params: types.InitializedParams) -> None:
        for problem in ls.pending_problems:
            ls.show(f"configuration: {problem}")
        ls.pending_problems = []
        ls.start_loading()
        watch = ls.config.workspace
        ls.watching.start(ls.workspace_roots(), watch.watch, watch.maxFiles)

    @server.feature(types.SHUTDOWN)
    async def shutdown(ls: PieServer, params: Any) -> None:
        for token in [*ls.inflight.values(), *ls.panels.values(), *ls._refreshing.values()]:
            token.cancel("shutdown")
        ls.watching.stop()
        await ls.disk_cache.shutdown([d.uri for d in ls.documents])
        if ls.engine is not None:
            ls.engine.close()


def _document_sync(server: PieServer) -> None:
    """Register didOpen, didChange and didClose."""

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: PieServer, params: types.DidOpenTextDocumentParams) -> None:
        td = params.text_document
        ls.documents.open(td.uri, td.text, td.version, td.language_id)
        if ls.engine is not None:
            ls.engine.warm_oracle(td.text, file_path(td.uri), td.language_id)
            ls.disk_cache.opened(td.uri, td.text)
        ls.protocol.notify(DOCUMENT_SYNCED, {"uri": td.uri, "version": td.version})

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: PieServer, params: types.DidChangeTextDocumentParams) -> None:
        uri = params.text_document.uri
        try:
            doc = ls.documents.get(uri)
        except UnknownDocumentError:
            ls.show(f"didChange for a document that is not open: {uri}")
            return
        cursor = None
        for change in params.content_changes:
            if isinstance(change, types.TextDocumentContentChangePartial):
                r = change.range
                cursor = doc.apply_change(
                    (r.start.line, r.start.character),
                    (r.end.line, r.end.character),
                    change.text,
                    ls.encoding,
                ).new_end  # the end of the inserted text: where the user's cursor is
            else:
                doc.replace_all(change.text)
                cursor = None
        doc.version = params.text_document.version
        doc.unsaved = True
        ls.counters["edits"] += len(params.content_changes)
        ls.touch(uri)
        ls.stop_requests(uri, "document changed")
        if cursor is not None and cursor <= len(doc.text):
            ls.anticipate(doc, cursor)
        ls.protocol.notify(DOCUMENT_SYNCED, {"uri": uri, "version": doc.version})

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: PieServer, params: types.DidSaveTextDocumentParams) -> None:
        doc = ls.documents.get_open(params.text_document.uri)
        if doc is not None:
            doc.unsaved = False

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: PieServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.close(params.text_document.uri)


def _completions(server: PieServer) -> None:
    """Register inlineCompletion, completion and the accept command their items carry."""

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(
        ls: PieServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        ctx = params.context
        invoked = ctx is not None and ctx.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        if not invoked:
            # While typing inside a word, a suggestion would only get in the way.
            doc, offset = ls.locate(params.text_document.uri, params.position)
            if offset < len(doc.text) and (doc.text[offset].isalnum() or doc.text[offset] == "_"):
                ls.counters["skippedMidWord"] += 1
                return types.InlineCompletionList(items=[])
        more = ls.config.completion.maxItems - 1 if invoked else 0
        _, _, result = await ls.complete(params.text_document.uri, params.position, more)
        if result is None or not result.text:
            return types.InlineCompletionList(items=[])
        here = types.Range(start=params.position, end=params.position)
        items = []
        for text in [result.text, *result.alternatives]:
            sid = ls.issue(text)
            items.append(
                types.InlineCompletionItem(
                    insert_text=text,
                    range=here,
                    command=types.Command(
                        title="pie-lsp: suggestion accepted",
                        command=ACCEPT_COMMAND,
                        arguments=[{"id": sid}],
                    ),
                )
            )
        return types.InlineCompletionList(items=items)

    @server.command(ACCEPT_COMMAND)
    def accept(ls: PieServer, *args: Any) -> dict[str, Any]:
        if len(args) != 1:
            raise JsonRpcInvalidParams("pie.accept takes exactly one argument")
        return ls.accept(args[0])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions())
    async def completion(ls: PieServer, params: types.CompletionParams) -> types.CompletionList:
        doc, offset, result = await ls.complete(params.text_document.uri, params.position)
        if result is None or not result.text:
            return types.CompletionList(is_incomplete=True, items=[])
        # Clients filter items by the word before the cursor: replace that word too.
        line_start = doc.text.rfind("\n", 0, offset) + 1
        match = _WORD_TAIL.search(doc.text[line_start:offset])
        word = match.group(0) if match else ""
        start = types.Position(*doc.index.position(offset - len(word), ls.encoding))
        new_text = word + result.text
        first_line = new_text.strip().split("\n", 1)[0]
        item = types.CompletionItem(
            label=first_line[:80] or new_text.strip()[:80],
            kind=types.CompletionItemKind.Text,
            detail="pie-lsp",
            filter_text=new_text,
            insert_text_format=types.InsertTextFormat.PlainText,
            text_edit=types.TextEdit(
                range=types.Range(start=start, end=params.position), new_text=new_text
            ),
            sort_text="0",
        )
        return types.CompletionList(is_incomplete=True, items=[item])


def _workspace(server: PieServer) -> None:
    """Register didChangeConfiguration, didChangeWatchedFiles and ``pie/stats``."""

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: PieServer, params: types.DidChangeConfigurationParams) -> None:
        settings = settings_from_did_change(params.settings)
        if settings is None:
            return
        ls.apply_config(settings)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: PieServer, params: types.DidChangeWatchedFilesParams) -> None:
        on_watched_files(ls, params)

    @server.feature(STATS)
    async def stats(ls: PieServer, params: Any) -> dict[str, Any]:
        # async: its first step then runs after the document notifications read before
        # it (PieProtocol.handle_message); a plain function ran at once, ahead of them.
        return ls.stats()
