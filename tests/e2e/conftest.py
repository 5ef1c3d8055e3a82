"""Shared fixtures: the real server over stdio, driven by pytest-lsp."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lsprotocol import types
from pytest_lsp import LanguageClient

DATA = Path(__file__).resolve().parent.parent / "data"
SERVER = [sys.executable, "-m", "lsp_server", "-v"]
CLIENTS = ["neovim@v0.11.0", "visual-studio-code"]


def server_env(**extra: str) -> dict[str, str]:
    """The child's environment: pytest-lsp replaces it, so start from ours."""
    env = dict(os.environ)
    env.update(extra)
    return env


def units(text: str, encoding: str) -> int:
    """Length of ``text`` in the position units of ``encoding``."""
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    if encoding == "utf-16":
        return len(text.encode("utf-16-le")) // 2
    return len(text)


def end_position(text: str, encoding: str) -> types.Position:
    """LSP position of the end of ``text`` (lines split at \\n, \\r\\n, \\r)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return types.Position(line=len(lines) - 1, character=units(lines[-1], encoding))


def uri_for(name: str) -> str:
    """A file URI under tests/data (the file need not exist)."""
    return (DATA / name).as_uri()


def open_doc(client: LanguageClient, name: str, text: str, version: int = 1) -> str:
    """Send ``didOpen`` for a Python document under tests/data; its URI."""
    uri = uri_for(name)
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=version, text=text
            )
        )
    )
    return uri


def change(
    client: LanguageClient,
    uri: str,
    version: int,
    start: types.Position,
    end: types.Position,
    text: str,
) -> None:
    """Send one ranged ``didChange``: ``text`` replaces ``start``..``end``."""
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[
                types.TextDocumentContentChangePartial(
                    range=types.Range(start=start, end=end), text=text
                )
            ],
        )
    )
