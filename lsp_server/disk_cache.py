"""The server's side of saved prompt caches: when they load and save, on which thread.

Loads and saves run on a disk thread of their own; the model worker only adopts a
loaded cache (:meth:`Engine.adopt_saved`) or hands over a closed document's
(:meth:`Engine.release`), both without copying to disk. So a save never waits ahead of
a completion, and a completion of a document whose cache is loading waits for that
load only (it is far shorter than encoding the prompt).

When: a document opened (or every open one once the model is ready) loads its entry;
a document closed saves its cache; a document quiet for :data:`SAVE_IDLE_S` after a
completion or a background refresh saves a copy (debounced: any activity restarts
the clock); ``shutdown`` saves every open document's (at most :data:`SHUTDOWN_SAVE_S`
of waiting). Only ``file:`` documents are kept. Nothing here raises into a handler:
a failing disk is counted (``diskErrors``) and logged once by the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cache import DiskStore, Saved
from completion.cancel import Cancelled, CancelToken
from completion.models import cache_root
from completion.persistence import DiskCounters, Persistence, fingerprint

if TYPE_CHECKING:
    from completion.engine import Engine

    from .config import Config
    from .server import PieServer

log = logging.getLogger(__name__)

SAVE_IDLE_S = 5.0
"""How long a document must be quiet after its last completion or refresh before a copy
of its cache is saved."""
SHUTDOWN_SAVE_S = 10.0
"""The longest ``shutdown`` waits for the open documents' caches to be written."""


def store_root(config: Config) -> Path:
    """``cache.diskDir``; else ``$PIE_LSP_KV_DIR``; else ``kv/`` under the cache directory."""
    configured = config.cache.diskDir or os.environ.get("PIE_LSP_KV_DIR", "")
    return Path(configured).expanduser() if configured else cache_root() / "kv"


class DiskCache:
    """Saved prompt caches for one server: loads on open, saves on close, idle and exit."""

    def __init__(self, server: PieServer) -> None:
        self.server = server
        self.disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pie-disk")
        self.persistence: Persistence | None = None
        self._engine: Engine | None = None
        self._restoring: dict[str, tuple[CancelToken, asyncio.Task[None]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._writes: set[asyncio.Future[Any]] = set()

    ##### Configuration #####

    def configure(self, config: Config, engine: Engine | None) -> None:
        """Follow the settings and the loaded model (a new model: a new fingerprint)."""
        if engine is None:
            self.persistence, self._engine = None, None
            return
        root, cap = store_root(config), config.cache.diskMB << 20
        current = self.persistence
        if current is not None and self._engine is engine and current.store.root == root:
            current.store.cap_bytes = cap
            return
        self.persistence = Persistence(DiskStore(root, cap), fingerprint(engine.loaded))
        self._engine = engine
        log.info("saved prompt caches: %s (%d MB)", root, config.cache.diskMB)

    def _ready(self) -> tuple[Persistence, Engine] | None:
        if self.persistence is None or not self.persistence.enabled or self._engine is None:
            return None
        if self.server.engine is not self._engine:
            return None  # a reload is under way: configure() follows it
        return self.persistence, self._engine

    ##### Loading #####

    def opened(self, uri: str, text: str) -> None:
        """Load the document's saved cache (off the event loop, cancellable)."""
        ready = self._ready()
        if ready is None or not uri.startswith("file:") or uri in self._restoring:
            return
        token = CancelToken()
        task = asyncio.ensure_future(self._restore(uri, text, token, *ready))
        self._restoring[uri] = (token, task)
        task.add_done_callback(lambda _: self._restoring.pop(uri, None))

    async def _restore(
        self, uri: str, text: str, token: CancelToken, persistence: Persistence, engine: Engine
    ) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        try:
            how, saved = await loop.run_in_executor(
                self.disk, persistence.load, uri, text, token.check
            )
            if saved is None or token.cancelled:
                return
            # The worker may be refreshing another document: the adoption, and the
            # completion that waits for it, come first.
            self.server.stop_refreshes("a saved cache to adopt")
            used = await self.server.on_worker(engine.adopt_saved, saved)
        except Cancelled:
            return
        except Exception:
            log.exception("loading the saved cache of %s failed", uri)
            return
        ms = (time.perf_counter() - t0) * 1000
        persistence.counters.diskLoadMs += ms
        log.info(
            "saved cache of %s: %s, %d tokens, %s in %.0f ms",
            uri.rsplit("/", 1)[-1],
            how,
            len(saved.cached.ids),
            "adopted" if used else "not used",
            ms,
        )

    async def loaded(self, uri: str) -> None:
        """Wait for the document's load, if one is running (a completion calls this)."""
        restoring = self._restoring.get(uri)
        if restoring is not None:
            await asyncio.shield(restoring[1])

    def stop_loading(self, uri: str) -> None:
        """Cancel the document's load (it was closed)."""
        restoring = self._restoring.get(uri)
        if restoring is not None:
            restoring[0].cancel("document closed")

    ##### Saving #####

    def quiet(self, uri: str) -> None:
        """A completion or refresh ended: save a copy once the document stays quiet."""
        if self._ready() is None or not uri.startswith("file:"):
            return
        self.active(uri)
        loop = asyncio.get_running_loop()
        self._timers[uri] = loop.call_later(SAVE_IDLE_S, self._save_copy, uri)

    def active(self, uri: str) -> None:
        """Activity on the document: the idle save waits again."""
        timer = self._timers.pop(uri, None)
        if timer is not None:
            timer.cancel()

    def _save_copy(self, uri: str) -> None:
        self._timers.pop(uri, None)
        ready = self._ready()
        if ready is None or uri in self.server.inflight or uri in self.server.panels:
            return
        persistence, engine = ready
        self._write(lambda: _save(persistence, engine.saved_state(uri)))

    def closed(self, uri: str) -> asyncio.Future[Any] | None:
        """The document closed: hand its cache over on the worker and save it.

        Returns the worker's future (the engine has forgotten the document once it
        is done), or None when nothing is kept on disk (then nothing was queued).
        """
        self.stop_loading(uri)
        self.active(uri)
        ready = self._ready()
        if ready is None or not uri.startswith("file:"):
            return None
        persistence, engine = ready
        released = self.server.on_worker(engine.release, uri)

        def write(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is None and f.result() is not None:
                self._write(partial(_save, persistence, f.result()))

        released.add_done_callback(write)
        return released

    def _write(self, save: Callable[[], object]) -> None:
        future = asyncio.get_running_loop().run_in_executor(self.disk, save)
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)

    async def shutdown(self, uris: list[str]) -> None:
        """Save every open document's cache; wait for all writes (bounded)."""
        for token, _ in list(self._restoring.values()):
            token.cancel("shutdown")
        for uri in list(self._timers):
            self.active(uri)
        ready = self._ready()
        if ready is not None:
            persistence, engine = ready
            for uri in uris:
                if uri.startswith("file:"):
                    saved = await self.server.on_worker(engine.release, uri)
                    if saved is not None:
                        self._write(partial(_save, persistence, saved))
        if self._writes:
            _, pending = await asyncio.wait(list(self._writes), timeout=SHUTDOWN_SAVE_S)
            if pending:
                log.warning("shutdown: %d cache saves still running, not waited for", len(pending))

    def forget(self, uri: str) -> None:
        """The document's file was deleted: drop its saved cache (on the disk thread)."""
        ready = self._ready()
        if ready is not None:
            self._write(partial(ready[0].forget, uri))

    ##### Observability #####

    def stats(self) -> dict[str, Any]:
        """``pie/stats`` counters (zeros when nothing is kept on disk)."""
        if self.persistence is None:
            return {**vars(DiskCounters()), "diskCacheBytes": 0, "diskErrors": 0}
        return self.persistence.stats()


def _save(persistence: Persistence, saved: Saved | None) -> None:
    """Write one entry (on the disk thread); a failure is counted by the store."""
    if saved is None:
        return
    t0 = time.perf_counter()
    if persistence.save(saved):
        log.info(
            "saved the cache of %s: %d tokens in %.0f ms",
            saved.key.rsplit("/", 1)[-1],
            len(saved.cached.ids),
            (time.perf_counter() - t0) * 1000,
        )
