"""Fixtures for every test: each one saves prompt caches in a store of its own."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_kv_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``PIE_LSP_KV_DIR`` for the servers this test starts: a test never restores what
    another saved (the persistence tests name their stores themselves)."""
    kv = tmp_path / "kv"
    monkeypatch.setenv("PIE_LSP_KV_DIR", str(kv))
    return kv
