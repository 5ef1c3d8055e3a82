"""Bad configuration and a model that fails to load: clear errors, and the server keeps serving."""

from __future__ import annotations

import asyncio

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities

from .conftest import end_position, server_config, uri_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_lsp.fixture(
    scope="module",
    config=server_config(),
)
async def client(lsp_client: LanguageClient):
    params = types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"),
        initialization_options={
            "model": "/nonexistent/dir/model.gguf",
            "completion": {"maxTokens": "lots", "multiline": "sometimes", "temperature": 0},
            "cache": "fast",
            "bogus": 1,
        },
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


async def wait_for_message(client: LanguageClient, needle: str, timeout: float = 60) -> str:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        for m in client.messages:
            if needle in m.message:
                return m.message
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"no showMessage containing {needle!r}: {[m.message for m in client.messages]}"
    )


async def test_invalid_options_are_reported_and_defaults_used(client: LanguageClient) -> None:
    await wait_for_message(client, "completion.maxTokens must be an integer")
    await wait_for_message(client, "completion.multiline must be one of")
    await wait_for_message(client, "cache must be an object")
    await wait_for_message(client, "unknown setting 'bogus'")


async def test_model_load_failure_is_reported_and_requests_fail_cleanly(
    client: LanguageClient,
) -> None:
    message = await wait_for_message(client, "failed to load")
    assert "not found" in message
    text = "def f(x):\n    return "
    uri = uri_for("model_failure.py")
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=text
            )
        )
    )
    with pytest.raises(Exception) as err:
        await client.text_document_inline_completion_async(
            types.InlineCompletionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                position=end_position(text, "utf-16"),
                context=types.InlineCompletionContext(
                    trigger_kind=types.InlineCompletionTriggerKind.Invoked
                ),
            )
        )
    assert "no model" in str(err.value)
    stats = await client.protocol.send_request_async("pie/stats", None)
    model = stats["model"] if isinstance(stats, dict) else stats.model._asdict()
    assert model["status"] == "error"


async def test_bad_configuration_change_then_recovery(client: LanguageClient) -> None:
    # A malformed change is reported; a good one loads the default model and serves.
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"pie": {"completion": {"temperature": -3}}})
    )
    await wait_for_message(client, "completion.temperature must be between 0 and 2")
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams(settings={"pie": {"model": "default"}})
    )
    text = "def add(a, b):\n    return "
    uri = uri_for("recovered.py")
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(
                uri=uri, language_id="python", version=1, text=text
            )
        )
    )
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=end_position(text, "utf-16"),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked
            ),
        )
    )
    assert isinstance(result, types.InlineCompletionList)
    assert result.items and result.items[0].insert_text
