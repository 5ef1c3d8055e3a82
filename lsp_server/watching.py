"""Workspace watching: which files changed on disk, from the editor or from watchdog.

Where the client can (``workspace.didChangeWatchedFiles.dynamicRegistration``), the
server registers a watcher for source files and the editor reports changes; otherwise
(and for clients that would send nothing) ``watchdog`` observes the workspace folders.
Either way each change reaches :meth:`Watching.on_change` on the event loop:

- a file deleted: its saved cache is dropped and it is forgotten;
- a file created or changed that is not open: it is marked
  (:meth:`~completion.workspace_files.WorkspaceFiles.changed`): its saved cache is kept
  and repaired when it is next opened; an open document follows the editor's edits
  instead, so its events are ignored.

Meanwhile the folders are walked lazily (:data:`WALK_SLICE` directory entries at a
time on the disk thread, :data:`WALK_PAUSE_S` apart) within ``workspace.maxFiles``.
Ignored paths (:mod:`completion.workspace_files`) are never read or walked into, and
events for them are dropped unread. watchdog watches each folder and, recursively, each
of its subdirectories that is not ignored (:meth:`WorkspaceFiles.watch_points`): the
usual bulk of a tree, ``.git``, a virtual environment, ``node_modules``, at the top,
gets no watch. A watch that cannot start (the system's limit, a folder that is gone)
is logged once and the server goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.capabilities import get_capability

from completion.workspace_files import SOURCE_SUFFIXES, WorkspaceCounts, WorkspaceFiles

if TYPE_CHECKING:
    from .server import PieServer

log = logging.getLogger(__name__)

WALK_SLICE = 500
"""Directory entries per slice of the workspace walk."""
WALK_PAUSE_S = 0.05
"""The pause between slices."""
MAX_WATCHES = 64
"""Most directories watchdog watches (each root, and its subdirectories recursively)."""
GLOB = "**/*.{" + ",".join(sorted(s.lstrip(".") for s in SOURCE_SUFFIXES)) + "}"
"""What the editor is asked to watch."""


class Watching:
    """The workspace folders' files and their changes, for one server."""

    def __init__(self, server: PieServer) -> None:
        self.server = server
        self.files: WorkspaceFiles | None = None
        self.mode = "off"
        """``client`` (the editor reports), ``watchdog``, or ``off``."""
        self._observer: Any = None
        self._walk: asyncio.Task[None] | None = None

    def start(self, roots: list[str], enabled: bool, max_files: int) -> None:
        """Start watching ``roots`` after ``initialized`` (registration, walk: in the background)."""
        if enabled and roots:
            self._walk = asyncio.ensure_future(self._start(roots, max_files))

    async def _start(self, roots: list[str], max_files: int) -> None:
        self.files = WorkspaceFiles([Path(r).resolve() for r in roots], max_files=max_files)
        caps = self.server.client_capabilities
        if get_capability(caps, "workspace.did_change_watched_files.dynamic_registration", False):
            self.mode = "client" if await self._register() else "off"
        if self.mode == "off":
            self.mode = "watchdog" if self._observe(self.files) else "off"
        log.info("watching %s: %s", ", ".join(roots), self.mode)
        await self._walk_lazily(self.files)

    async def _register(self) -> bool:
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern=GLOB)]
        )
        registration = types.Registration(
            id=f"pie-watch-{uuid.uuid4().hex[:8]}",
            method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
            register_options=options,
        )
        try:
            await asyncio.wait_for(
                self.server.client_register_capability_async(
                    types.RegistrationParams(registrations=[registration])
                ),
                10,
            )
        except Exception as exc:  # the client refused: watch ourselves
            log.warning("the client did not register file watching (%s): using watchdog", exc)
            return False
        return True

    def _observe(self, files: WorkspaceFiles) -> bool:
        """Start a watchdog observer on the folders; False if it could not start."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        loop = asyncio.get_running_loop()
        on_change = self.on_change

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                kind = _KINDS.get(event.event_type)
                if event.is_directory or kind is None:
                    return
                if kind == "moved":
                    loop.call_soon_threadsafe(on_change, _str(event.src_path), "deleted")
                    loop.call_soon_threadsafe(on_change, _str(event.dest_path), "changed")
                else:
                    loop.call_soon_threadsafe(on_change, _str(event.src_path), kind)

        observer = Observer()
        try:
            for path, recursive in files.watch_points(MAX_WATCHES):
                observer.schedule(Handler(), str(path), recursive=recursive)
            observer.daemon = True
            observer.start()
        except Exception as exc:  # e.g. inotify's watch limit on a huge tree
            log.warning("cannot watch the workspace (%s): saved caches are checked at open", exc)
            return False
        self._observer = observer
        return True

    async def _walk_lazily(self, files: WorkspaceFiles) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not files.walked:
                await loop.run_in_executor(self.server.disk_cache.disk, files.walk_some, WALK_SLICE)
                await asyncio.sleep(WALK_PAUSE_S)
            log.info("workspace walked: %d source files", len(files.files))
        except Exception:
            log.exception("walking the workspace failed")

    def on_change(self, path: str, kind: str) -> None:
        """A file changed on disk: ``kind`` is ``changed`` (or created) or ``deleted``."""
        files = self.files
        if files is None or not path:
            return
        p = Path(path)
        uri = p.as_uri() if p.is_absolute() else ""
        if kind == "deleted":
            files.deleted(p)
            if uri:
                self.server.disk_cache.forget(uri)
            return
        if uri and self.server.documents.get_open(uri) is not None:
            return  # the editor's edits keep it current
        files.changed(p)

    def stop(self) -> None:
        """Stop the observer and the walk."""
        if self._walk is not None:
            self._walk.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer = None

    def stats(self) -> dict[str, Any]:
        """``pie/stats`` counters."""
        counts = self.files.counts if self.files is not None else WorkspaceCounts()
        return {**vars(counts), "workspaceWatch": self.mode}


_KINDS = {"created": "changed", "modified": "changed", "deleted": "deleted", "moved": "moved"}


def _str(path: str | bytes) -> str:
    return path.decode() if isinstance(path, bytes) else path


def on_watched_files(server: PieServer, params: types.DidChangeWatchedFilesParams) -> None:
    """``workspace/didChangeWatchedFiles``: each change to :meth:`Watching.on_change`."""
    from .server import file_path

    for change in params.changes:
        path = file_path(change.uri)
        if path is not None:
            kind = "deleted" if change.type == types.FileChangeType.Deleted else "changed"
            server.watching.on_change(path, kind)
