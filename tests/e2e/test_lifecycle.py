"""End to end: a new file's first keystrokes, cancellation from every direction, and
closing documents, against the real server and the real default model over stdio.

Cancellation is judged by the server's counters, not by wall time: a cancelled
completion is counted in ``cancelledCompletions``, and ``forwardsAfterCancel`` says how
many model forwards any cancelled work ran after its cancel arrived.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pytest_lsp import LanguageClient, client_capabilities

from tooling.client import _plain

from .conftest import change, open_doc, server_config

pytestmark = [pytest.mark.e2e, pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

LONG = {
    "completion": {"maxTokens": 512, "multiline": "always"},
    # The long decode must run: the syntax check would stop this model's first bad line.
    "constraints": {"syntax": False, "members": False},
}
SHORT = {"completion": {"maxTokens": 8, "multiline": "auto", "contextTokens": 256}}
BODY = "def fibonacci(n):\n    " + '"""Return the n-th Fibonacci number."""\n    '


@pytest_lsp.fixture(
    scope="module",
    config=server_config(),
)
async def client(lsp_client: LanguageClient):
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options=LONG,
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


async def stats(client: LanguageClient) -> dict[str, Any]:
    return _plain(await client.protocol.send_request_async("pie/stats", None))


def configure(client: LanguageClient, settings: dict[str, Any]) -> None:
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"pie": settings})
    )


def insert(client: LanguageClient, uri: str, version: int, line: int, col: int, text: str) -> None:
    at = types.Position(line=line, character=col)
    change(client, uri, version, at, at, text)


def inline_params(uri: str, line: int, col: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=types.Position(line=line, character=col),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Invoked
        ),
    )


def ask(client: LanguageClient, uri: str, line: int, col: int) -> tuple[str, asyncio.Future[Any]]:
    """Send an inline completion request; returns its id and its future."""
    msg_id = uuid.uuid4().hex
    # pygls' plain send writes at once (pytest-lsp's async one only when its task runs,
    # after the notifications a test sends next).
    future = client.protocol.send_request(
        types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, line, col), msg_id=msg_id
    )
    return msg_id, asyncio.wrap_future(future)


async def decoding(client: LanguageClient, before: int) -> None:
    """Wait until the worker has run a few forwards past ``before`` (a request is decoding)."""
    for _ in range(600):
        if (await stats(client))["totals"]["forwards"] >= before + 4:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the long completion never started decoding")


async def answered(future: asyncio.Future[Any]) -> Any:
    """The request's answer: a result, or the error it was answered with (never silence)."""
    try:
        return await asyncio.wait_for(future, 120)
    except JsonRpcException as exc:
        return exc


async def cancelled_once(client: LanguageClient, before: dict[str, Any]) -> dict[str, Any]:
    """Stats once the cancelled completion has been counted."""
    for _ in range(600):
        now = await stats(client)
        if now["totals"]["cancelledCompletions"] > before["totals"]["cancelledCompletions"]:
            return now
        await asyncio.sleep(0.05)
    raise AssertionError("the completion was never cancelled")


async def next_request_succeeds(client: LanguageClient, uri: str, line: int, col: int) -> None:
    configure(client, SHORT)
    _, future = ask(client, uri, line, col)
    result = await answered(future)
    configure(client, LONG)
    assert isinstance(result, types.InlineCompletionList), result


async def test_a_new_file_completes_from_its_first_keystroke(client: LanguageClient) -> None:
    configure(client, SHORT)
    uri = open_doc(client, "untitled_new.py", "")
    typed = ""
    version = 1
    # The last line is over the 256-token budget: nothing fits before the cursor.
    for step in ("", "im", "port o", "\n" + "x" * 5000):
        version += 1
        if step:
            lines = typed.split("\n")
            insert(client, uri, version, len(lines) - 1, len(lines[-1]), step)
            typed += step
        lines = typed.split("\n")
        _, future = ask(client, uri, len(lines) - 1, len(lines[-1]))
        result = await answered(future)
        assert isinstance(result, types.InlineCompletionList), (step[:12], result)
    totals = (await stats(client))["totals"]
    assert totals["errors"] == 0
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    configure(client, LONG)


async def test_cancel_request_stops_the_completion(client: LanguageClient) -> None:
    uri = open_doc(client, "cancel_request.py", BODY)
    before = await stats(client)
    msg_id, future = ask(client, uri, 2, 4)
    await decoding(client, before["totals"]["forwards"])
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=msg_id))
    after = await cancelled_once(client, before)
    assert after["totals"]["forwardsAfterCancel"] <= 1
    await answered(future)
    await next_request_succeeds(client, uri, 2, 4)


async def test_an_edit_stops_the_completion(client: LanguageClient) -> None:
    uri = open_doc(client, "cancel_edit.py", BODY)
    before = await stats(client)
    _, future = ask(client, uri, 2, 4)
    await decoding(client, before["totals"]["forwards"])
    insert(client, uri, 2, 0, 0, "# edited\n")
    after = await cancelled_once(client, before)
    assert after["totals"]["forwardsAfterCancel"] <= 1
    result = await answered(future)
    assert isinstance(result, types.InlineCompletionList) and not result.items
    await next_request_succeeds(client, uri, 3, 4)


async def test_a_newer_request_supersedes_the_completion(client: LanguageClient) -> None:
    uri = open_doc(client, "cancel_newer.py", BODY)
    before = await stats(client)
    _, first = ask(client, uri, 2, 4)
    await decoding(client, before["totals"]["forwards"])
    configure(client, SHORT)
    _, second = ask(client, uri, 2, 4)
    after = await cancelled_once(client, before)
    assert after["totals"]["forwardsAfterCancel"] <= 1
    assert after["totals"]["superseded"] == before["totals"]["superseded"] + 1
    superseded = await answered(first)
    assert isinstance(superseded, types.InlineCompletionList) and not superseded.items
    assert isinstance(await answered(second), types.InlineCompletionList)
    configure(client, LONG)


async def test_closing_stops_the_completion_and_forgets_every_document(
    client: LanguageClient,
) -> None:
    uri = open_doc(client, "cancel_close.py", BODY)
    await next_request_succeeds(client, uri, 2, 4)  # suggestions, history, cache to forget
    before = await stats(client)
    _, future = ask(client, uri, 2, 4)
    await decoding(client, before["totals"]["forwards"])
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    after = await cancelled_once(client, before)
    assert after["totals"]["forwardsAfterCancel"] <= 1
    await answered(future)
    for doc in after["documents"]:
        client.text_document_did_close(
            types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=doc["uri"])
            )
        )
    for _ in range(200):  # the engine forgets on its worker, after the work queued before
        now = await stats(client)
        if now["totals"]["documentsTracked"] == 0:
            break
        await asyncio.sleep(0.05)
    assert now["documents"] == []
    assert now["totals"]["documentsTracked"] == 0, now["totals"]
    # The worker is free: a document opened now completes.
    uri = open_doc(client, "after_close.py", BODY)
    await next_request_succeeds(client, uri, 2, 4)
