"""A small LSP client that drives the real server over stdio (demo and benchmarks).

It starts ``python -m lsp_server`` as a subprocess, exactly as an editor would, and
offers the few calls the demo and the benchmarks need.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.lsp.client import LanguageClient


@dataclass(frozen=True)
class PendingRequest:
    """A request sent and not awaited yet."""

    id: str
    future: asyncio.Future[Any]
    sent: float
    """``time.perf_counter()`` when it was sent."""

    @staticmethod
    def first_text(result: Any) -> str:
        """The first item's text of an inline-completion result ("" if none)."""
        items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
        text = items[0].insert_text if items else ""
        return text if isinstance(text, str) else text.value


class PieClient:
    """One server process and a client connected to it."""

    def __init__(
        self,
        on_progress: Callable[[str, int | None], None] | None = None,
        on_message: Callable[[str], None] | None = None,
        server_args: tuple[str, ...] = (),
        kv_dir: Path | None = None,
    ) -> None:
        self.client = LanguageClient("pie-lsp-driver", "0.1")
        self.server_args = server_args
        """Extra ``pie-lsp serve`` arguments (e.g. ``-v --log-file PATH``)."""
        self.kv_dir = kv_dir
        """Where the server saves prompt caches (``PIE_LSP_KV_DIR``). None: a fresh
        directory for this server alone, removed when it stops, so that a measurement
        never starts from what an earlier run saved."""
        self._scratch: str | None = None
        self.encoding = "utf-16"
        self._on_progress = on_progress
        self._on_message = on_message
        self._versions: dict[str, int] = {}
        self._ids = itertools.count(1)

        @self.client.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
        def _create(params: types.WorkDoneProgressCreateParams) -> None:
            return None

        @self.client.feature(types.PROGRESS)
        def _progress(params: types.ProgressParams) -> None:
            value = params.value
            message = getattr(value, "message", None) or (
                value.get("message") if isinstance(value, dict) else None
            )
            pct = getattr(value, "percentage", None) or (
                value.get("percentage") if isinstance(value, dict) else None
            )
            if self._on_progress and message:
                self._on_progress(str(message), pct)

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def _show(params: types.ShowMessageParams) -> None:
            if self._on_message:
                self._on_message(params.message)

        @self.client.feature("$/pie/documentSynced")
        def _synced(params: Any) -> None:
            return None

        @self.client.feature(types.WINDOW_LOG_MESSAGE)
        def _log(params: types.LogMessageParams) -> None:
            return None

    async def start(
        self, options: dict[str, Any] | None = None, encodings: tuple[str, ...] = ("utf-16",)
    ) -> None:
        """Start the server and initialize it with ``options`` as initializationOptions."""
        kv_dir = self.kv_dir
        if kv_dir is None:
            self._scratch = tempfile.mkdtemp(prefix="pie-kv-")
            kv_dir = Path(self._scratch)
        env = {**os.environ, "PIE_LSP_KV_DIR": str(kv_dir)}
        await self.client.start_io(sys.executable, "-m", "lsp_server", *self.server_args, env=env)
        caps = types.ClientCapabilities(
            general=types.GeneralClientCapabilities(position_encodings=list(encodings)),
            window=types.WindowClientCapabilities(work_done_progress=True),
            text_document=types.TextDocumentClientCapabilities(
                inline_completion=types.InlineCompletionClientCapabilities(),
                synchronization=types.TextDocumentSyncClientCapabilities(),
            ),
        )
        result = await self.client.initialize_async(
            types.InitializeParams(capabilities=caps, initialization_options=options or {})
        )
        self.encoding = str(result.capabilities.position_encoding or "utf-16")
        self.client.initialized(types.InitializedParams())

    async def stop(self) -> None:
        """Shut the server down."""
        try:
            await asyncio.wait_for(self.client.shutdown_async(None), 10)
            self.client.exit(None)
        finally:
            await self.client.stop()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None

    def open(self, path: Path | str, text: str, language_id: str = "python") -> str:
        """Open a document; returns its URI."""
        uri = Path(path).resolve().as_uri() if not str(path).startswith("file:") else str(path)
        self._versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id=language_id, version=1, text=text
                )
            )
        )
        return uri

    def close(self, uri: str) -> None:
        """Close a document (``didClose``)."""
        self._versions.pop(uri, None)
        self.client.text_document_did_close(
            types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
        )

    def change(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        """Send one incremental edit (positions in the negotiated encoding)."""
        self._versions[uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=uri, version=self._versions[uri]
                ),
                content_changes=[
                    types.TextDocumentContentChangePartial(
                        range=types.Range(start=types.Position(*start), end=types.Position(*end)),
                        text=text,
                    )
                ],
            )
        )

    async def inline(self, uri: str, line: int, character: int) -> tuple[str, float]:
        """Ask for an inline completion; returns (text, seconds)."""
        pending = self.request_inline(uri, line, character)
        result = await pending.future
        return PendingRequest.first_text(result), time.perf_counter() - pending.sent

    def request_inline(self, uri: str, line: int, character: int) -> PendingRequest:
        """Send an inline-completion request without waiting (see :meth:`cancel`)."""
        msg_id = f"inline-{next(self._ids)}"
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(line=line, character=character),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
        )
        future = self.client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id
        )
        return PendingRequest(msg_id, asyncio.ensure_future(future), time.perf_counter())

    def cancel(self, request: PendingRequest) -> None:
        """``$/cancelRequest`` for ``request``, as an editor sends when the user types on."""
        self.client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request.id))
        # The answer (an error or a late result) is not wanted: retrieve it quietly.
        request.future.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def stats(self) -> dict[str, Any]:
        """``pie/stats``."""
        result = await self.client.protocol.send_request_async("pie/stats", None)
        return _plain(result)


def _plain(obj: Any) -> Any:
    """Pygls hands back unknown results as namedtuple-like objects; make them dicts."""
    if hasattr(obj, "_asdict"):
        return {k: _plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
