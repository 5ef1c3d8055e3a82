"""End to end: the server follows the workspace folders' files on disk (issue 20).

Two clients: one that registers the server's file watcher (and reports changes with
``workspace/didChangeWatchedFiles``), one that cannot (the server watches with
watchdog). Neither reads the ignored bulk of the tree.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from tooling.client import _plain

from .conftest import accept_registrations, server_config

pytestmark = [pytest.mark.e2e]


def workspace(root: Path) -> None:
    for name in ("src/app.py", "src/util.py", "tests/test_app.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("def f():\n    return 1\n")
    modules = root / "node_modules" / "big"
    modules.mkdir(parents=True)
    for i in range(300):
        (modules / f"m{i}.py").write_text("x = 1\n")
    (root / ".gitignore").write_text("generated/\n")
    (root / "generated").mkdir()
    (root / "generated" / "out.py").write_text("y = 2\n")
    (root / "src" / "__pycache__").mkdir()


async def start(root: Path, dynamic: bool) -> tuple[LanguageClient, list[types.Registration]]:
    client = await server_config().start()
    registered = accept_registrations(client)

    caps = types.ClientCapabilities(
        workspace=types.WorkspaceClientCapabilities(
            did_change_watched_files=types.DidChangeWatchedFilesClientCapabilities(
                dynamic_registration=dynamic
            )
        )
    )
    folder = types.WorkspaceFolder(uri=root.as_uri(), name=root.name)
    await client.initialize_session(
        types.InitializeParams(
            capabilities=caps, root_uri=root.as_uri(), workspace_folders=[folder]
        )
    )
    return client, registered


async def until(client: LanguageClient, check: Callable[[dict], bool], what: str) -> dict:
    end = time.monotonic() + 30
    while True:
        totals = _plain(await client.protocol.send_request_async("pie/stats", None))["totals"]
        if check(totals):
            return totals
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}: {totals}")
        await asyncio.sleep(0.1)


async def test_watchdog_marks_a_changed_file_and_skips_the_ignored_tree(tmp_path: Path) -> None:
    workspace(tmp_path)
    client, registered = await start(tmp_path, dynamic=False)
    try:
        totals = await until(client, lambda t: t["workspaceFiles"] == 3, "the walk")
        assert totals["workspaceWatch"] == "watchdog" and not registered
        await asyncio.sleep(0.5)  # the observer is up once the walk began
        (tmp_path / "src" / "app.py").write_text("def f():\n    return 2\n")
        (tmp_path / "node_modules" / "big" / "m1.py").write_text("x = 3\n")
        (tmp_path / "generated" / "out.py").write_text("y = 3\n")
        (tmp_path / "src" / "__pycache__" / "app.py").write_text("z = 3\n")
        totals = await until(client, lambda t: t["workspaceChanged"] >= 1, "the change")
        (tmp_path / "src" / "util.py").unlink()
        totals = await until(client, lambda t: t["workspaceDeleted"] == 1, "the deletion")
        assert totals["workspaceFiles"] == 2
        # node_modules/ and generated/ (.gitignore) are not watched at all; src/ is, and
        # the event for its __pycache__ is dropped unread.
        assert totals["workspaceChanged"] == 1 and totals["workspaceIgnored"] >= 1
    finally:
        await client.shutdown_session()


async def test_a_client_that_watches_reports_the_changes(tmp_path: Path) -> None:
    workspace(tmp_path)
    client, registered = await start(tmp_path, dynamic=True)
    try:
        totals = await until(client, lambda t: t["workspaceFiles"] == 3, "the walk")
        assert totals["workspaceWatch"] == "client"
        (reg,) = registered
        assert reg.method == types.WORKSPACE_DID_CHANGE_WATCHED_FILES
        changes = [
            types.FileEvent(
                uri=(tmp_path / "src" / "app.py").as_uri(), type=types.FileChangeType.Changed
            ),
            types.FileEvent(
                uri=(tmp_path / "generated" / "out.py").as_uri(), type=types.FileChangeType.Changed
            ),
            types.FileEvent(
                uri=(tmp_path / "src" / "util.py").as_uri(), type=types.FileChangeType.Deleted
            ),
            types.FileEvent(uri="untitled:Untitled-1", type=types.FileChangeType.Changed),
        ]
        client.workspace_did_change_watched_files(
            types.DidChangeWatchedFilesParams(changes=changes)
        )
        totals = await until(client, lambda t: t["workspaceDeleted"] == 1, "the events")
        assert (totals["workspaceChanged"], totals["workspaceIgnored"]) == (1, 1)
        assert totals["workspaceFiles"] == 2
    finally:
        await client.shutdown_session()
