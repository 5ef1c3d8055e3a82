"""Faults, each injected, over stdio: a message and a working server after each.

The editor's process dying, its pipe closing, a truncated model file, the model worker
raising mid-decode (injected with tests/e2e/inject/sitecustomize.py, no hook in the
product). The disk cache's faults (unwritable, full, corrupted) are in
test_persistence.py and tests/unit/test_disk_store.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tooling.tiny_model import make_tiny_model
from tooling.wire import Wire

pytestmark = [pytest.mark.e2e]

INJECT = str(Path(__file__).resolve().parent / "inject")
TEXT = "def total(values):\n    result = 0\n    for v in values:\n        result += "


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


def start(model: str, pid: int | None = None, **env: str) -> Wire:
    wire = Wire([sys.executable, "-m", "lsp_server"], env={**os.environ, **env})
    wire.request(
        "init",
        "initialize",
        {
            "processId": pid if pid is not None else os.getpid(),
            "rootUri": None,
            "capabilities": {},
            "initializationOptions": {"model": model, "completion": {"maxTokens": 4}},
        },
    )
    assert wire.wait_for("init", 60), "no answer to initialize"
    wire.notify("initialized", {})
    return wire


def open_doc(wire: Wire, uri: str, text: str) -> None:
    item = {"uri": uri, "languageId": "python", "version": 1, "text": text}
    wire.notify("textDocument/didOpen", {"textDocument": item})


def complete(wire: Wire, msg_id: str, uri: str, text: str) -> dict[str, Any]:
    lines = text.split("\n")
    params = {
        "textDocument": {"uri": uri},
        "position": {"line": len(lines) - 1, "character": len(lines[-1])},
        "context": {"triggerKind": 1},
    }
    wire.request(msg_id, "textDocument/inlineCompletion", params)
    (response,) = wire.wait_for(msg_id, 120)
    return response


def wait_shown(wire: Wire, needle: str, timeout: float = 60) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = [m for m in wire.shown if needle in m]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no message with {needle!r}: {wire.shown}")


def _items(response: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(i["insertText"], i["range"]) for i in response["result"]["items"]]


def stop(wire: Wire) -> int | None:
    wire.request("bye", "shutdown", None)
    wire.wait_for("bye", 30)
    wire.notify("exit", None)
    return wire.close(30)


def test_the_server_exits_when_the_editor_process_dies(tiny: Path) -> None:
    editor = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    wire = start(str(tiny), pid=editor.pid)
    try:
        assert wire.stats("s") is not None
        editor.kill()
        editor.wait()
        assert wire.proc.wait(15) == 1  # no shutdown came first
    finally:
        if wire.proc.poll() is None:
            wire.proc.kill()


def test_the_server_exits_when_its_input_closes(tiny: Path) -> None:
    wire = start(str(tiny))
    assert wire.stats("s") is not None
    assert wire.close(15) is not None  # exited on its own, not killed


def test_a_truncated_model_file_is_reported_and_documents_keep_syncing(
    tiny: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny, broken)
    weights = broken / "model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    wire = start(str(broken))
    try:
        assert "could not load" in wait_shown(wire, "failed to load")
        uri = (tmp_path / "doc.py").as_uri()
        open_doc(wire, uri, TEXT)
        change = {
            "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
            "text": "# 注释\n",
        }
        wire.notify(
            "textDocument/didChange",
            {"textDocument": {"uri": uri, "version": 2}, "contentChanges": [change]},
        )
        stats = wire.stats("s1")
        assert stats is not None and stats["model"]["status"] == "error"
        (doc,) = stats["documents"]
        assert doc["sha256"] == hashlib.sha256(("# 注释\n" + TEXT).encode()).hexdigest()
        assert "error" in complete(wire, "c1", uri, "# 注释\n" + TEXT)
        # A working model named in a configuration change: served again.
        wire.notify("workspace/didChangeConfiguration", {"settings": {"model": str(tiny)}})
        end = time.monotonic() + 60
        while (s := wire.stats(f"s{time.monotonic()}")) and s["model"]["status"] != "ready":
            assert time.monotonic() < end, s["model"]
            time.sleep(0.2)
        assert "result" in complete(wire, "c2", uri, "# 注释\n" + TEXT)
        assert stop(wire) == 0
    finally:
        if wire.proc.poll() is None:
            wire.proc.kill()


def test_the_worker_raising_mid_decode_fails_one_request_only(tiny: Path, tmp_path: Path) -> None:
    uri = (tmp_path / "doc.py").as_uri()
    faulty = start(str(tiny), PYTHONPATH=INJECT, PIE_TEST_FAULT="decode-once")
    clean = start(str(tiny))
    try:
        for wire in (faulty, clean):
            open_doc(wire, uri, TEXT)
        first = complete(faulty, "c1", uri, TEXT)
        assert "injected fault" in first["error"]["message"]
        second = complete(faulty, "c2", uri, TEXT)
        expected = complete(clean, "c3", uri, TEXT)
        # Nothing kept from the failure: the same suggestion as a server that had none.
        assert _items(second) == _items(expected) != []
        assert stop(faulty) == 0
    finally:
        for wire in (faulty, clean):
            if wire.proc.poll() is None:
                wire.proc.kill()


def test_out_of_memory_drops_the_caches_says_so_and_the_next_request_is_served(
    tiny: Path, tmp_path: Path
) -> None:
    uri = (tmp_path / "doc.py").as_uri()
    wire = start(str(tiny), PYTHONPATH=INJECT, PIE_TEST_FAULT="oom-once")
    try:
        open_doc(wire, uri, TEXT)
        first = complete(wire, "c1", uri, TEXT)
        assert "out of memory" in first["error"]["message"]
        assert "were dropped" in wait_shown(wire, "out of memory")
        stats = wire.stats("s")
        assert stats is not None and stats["totals"]["cacheBytes"] == 0
        assert "result" in complete(wire, "c2", uri, TEXT)
        assert stop(wire) == 0
    finally:
        if wire.proc.poll() is None:
            wire.proc.kill()
