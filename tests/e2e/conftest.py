"""Shared fixtures: the real server over stdio, driven by pytest-lsp."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import attrs
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

DATA = Path(__file__).resolve().parent.parent / "data"
SERVER = [sys.executable, "-m", "lsp_server", "-v"]
CLIENTS = ["neovim@v0.11.0", "visual-studio-code"]


@attrs.define
class ServerConfig(ClientServerConfig):
    """The real server over stdio, started with the environment as it is at the test's
    start (pytest-lsp replaces the child's environment with ``server_env``): so each
    test's own prompt-cache store (``PIE_LSP_KV_DIR``, tests/conftest.py) reaches it."""

    async def start(self, devtools: str | None = None) -> Any:
        """Start the server with the current environment."""
        self.server_env = dict(os.environ)
        return await super().start(devtools)


def accept_registrations(client: LanguageClient) -> list[types.Registration]:
    """Answer ``client/registerCapability`` as an editor does (pytest-lsp's client does
    not); returns the list the registrations are collected in."""
    registered: list[types.Registration] = []

    @client.feature(types.CLIENT_REGISTER_CAPABILITY)
    def register(params: types.RegistrationParams) -> None:
        registered.extend(params.registrations)

    return registered


def server_config() -> ServerConfig:
    """pytest-lsp's config for the real server."""
    return ServerConfig(server_command=SERVER)


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
