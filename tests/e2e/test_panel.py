"""End to end: the suggestions panel over stdio, real default model, both encodings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities

from .conftest import CLIENTS, open_doc, server_config, units

pytestmark = [pytest.mark.e2e, pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]

# A line with an emoji and CJK before the cursor: utf-8 and utf-16 columns differ.
TEXT = (
    "import os\n\n\ndef list_python_files(root: str) -> list[str]:\n"
    '    """Every .py file under root (📁 根目录), sorted."""\n    found = []\n'
    "    for dirpath, _dirs, files in os.walk(root):\n        for name in files:\n"
    '            label = "🐍名"; if \n    return sorted(found)\n'
)
LINE = 8
CURSOR_TEXT = '            label = "🐍名"; if '


@pytest_lsp.fixture(
    scope="module",
    params=CLIENTS,
    config=server_config(),
)
async def client(request: pytest.FixtureRequest, lsp_client: LanguageClient):
    partials: list[tuple[Any, dict[str, Any]]] = []
    lsp_client.partials = partials  # type: ignore[attr-defined]

    default = lsp_client.protocol.fm.features[types.PROGRESS]

    def progress(params: types.ProgressParams) -> None:
        # Partial results here; work-done progress (the model's load) as pytest-lsp does.
        if isinstance(params.value, dict) and "items" in params.value:
            partials.append((params.token, params.value))
        else:
            default(params)

    # pytest-lsp's own handler takes only work-done progress.
    lsp_client.protocol.fm.features[types.PROGRESS] = progress

    result = await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities(request.param),
            initialization_options={"completion": {"maxTokens": 24}},
        )
    )
    lsp_client.encoding = str(result.capabilities.position_encoding or "utf-16")  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


def cursor(client: LanguageClient) -> dict[str, int]:
    return {"line": LINE, "character": units(CURSOR_TEXT, client.encoding)}  # type: ignore[attr-defined]


async def panel(
    client: LanguageClient, params: dict[str, Any], method: str = "pie/panelCompletion"
) -> Any:
    return await asyncio.wait_for(client.protocol.send_request_async(method, params), 120)


def as_dict(obj: Any) -> Any:
    if hasattr(obj, "_asdict"):
        return {k: as_dict(v) for k, v in obj._asdict().items()}
    if isinstance(obj, list):
        return [as_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: as_dict(v) for k, v in obj.items()}
    return obj


def normalised(text: str) -> str:
    return " ".join(text.split())


async def test_panel_streams_distinct_drafts_the_first_the_inline_completion(
    client: LanguageClient,
) -> None:
    uri = open_doc(client, "panel.py", TEXT)
    pos = cursor(client)
    inline = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=types.Position(**pos),
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Automatic
            ),
        )
    )
    assert inline is not None and inline.items
    partials = client.partials  # type: ignore[attr-defined]
    partials.clear()
    token = "panel-1"
    params = {"textDocument": {"uri": uri}, "position": pos, "partialResultToken": token}
    result = as_dict(await panel(client, params))
    items = result["items"]
    assert 2 <= len(items) <= 5
    assert items[0]["insertText"] == inline.items[0].insert_text
    assert len({normalised(it["insertText"]) for it in items}) == len(items)
    for it in items:
        assert it["range"] == {"start": pos, "end": pos}
        assert isinstance(it["score"], float) and it["syntaxValid"] in (True, False, None)
        assert it["command"]["command"] == "pie.accept"
    # Partial results came first, under our token, holding every final item.
    assert partials and all(tok == token for tok, _ in partials)
    streamed = {it["insertText"] for _, value in partials for it in value["items"]}
    assert {it["insertText"] for it in items} <= streamed


async def test_panel_without_a_token_sends_no_partial_results_and_counts(
    client: LanguageClient,
) -> None:
    uri = open_doc(client, "panel_plain.py", TEXT)
    before = as_dict(await client.protocol.send_request_async("pie/stats", None))["totals"]
    client.partials.clear()  # type: ignore[attr-defined]
    result = as_dict(
        await panel(client, {"textDocument": {"uri": uri}, "position": cursor(client), "count": 3})
    )
    assert 1 <= len(result["items"]) <= 3 and not client.partials  # type: ignore[attr-defined]
    chosen = result["items"][-1]
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="pie.accept", arguments=chosen["command"]["arguments"])
    )
    after = as_dict(await client.protocol.send_request_async("pie/stats", None))["totals"]
    assert after["panelRequests"] == before["panelRequests"] + 1
    assert after["panelDrafts"] >= before["panelDrafts"] + len(result["items"])
    assert after["panelMs"] > before["panelMs"]
    assert after["panelAccepted"] == before["panelAccepted"] + 1


async def test_copilots_panel_dialect_is_answered(client: LanguageClient) -> None:
    uri = open_doc(client, "panel_copilot.py", TEXT)
    params = {"textDocument": {"uri": uri}, "position": cursor(client)}
    result = as_dict(await panel(client, params, "textDocument/copilotPanelCompletion"))
    assert result["items"] and result["items"][0]["insertText"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {
                "textDocument": {"uri": "file:///nowhere.py"},
                "position": {"line": 0, "character": 0},
            },
            "not open",
        ),
        ({"position": {"line": 0, "character": 0}}, "textDocument"),
        ({"textDocument": {"uri": "U"}, "position": {"line": -1, "character": 0}}, "position"),
        ({"textDocument": {"uri": "U"}, "position": {"line": 99, "character": 0}}, "bad position"),
        (
            {"textDocument": {"uri": "U"}, "position": {"line": 0, "character": 0}, "count": "x"},
            "count",
        ),
    ],
)
async def test_bad_panel_requests_get_errors_and_the_server_keeps_serving(
    client: LanguageClient, params: dict[str, Any], message: str
) -> None:
    uri = open_doc(client, "panel_bad.py", TEXT)
    if params.get("textDocument", {}).get("uri") == "U":
        params = {**params, "textDocument": {"uri": uri}}
    with pytest.raises(Exception) as err:
        await panel(client, params)
    assert message in str(err.value)
    assert as_dict(await client.protocol.send_request_async("pie/stats", None))["model"]


@pytest.mark.parametrize(("count", "most"), [(0, 1), (1000, 10)])
async def test_a_count_out_of_range_is_clamped(
    client: LanguageClient, count: int, most: int
) -> None:
    uri = open_doc(client, "panel_clamp.py", TEXT)
    params = {"textDocument": {"uri": uri}, "position": cursor(client), "count": count}
    items = as_dict(await panel(client, params))["items"]
    assert 1 <= len(items) <= most


async def test_a_cancelled_panel_stops_and_the_next_answers(client: LanguageClient) -> None:
    uri = open_doc(client, "panel_cancel.py", TEXT)
    params = {"textDocument": {"uri": uri}, "position": cursor(client), "count": 8}
    task = asyncio.ensure_future(
        client.protocol.send_request_async("pie/panelCompletion", params, msg_id="panel-cancel")
    )
    await asyncio.sleep(0.05)
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="panel-cancel"))
    with pytest.raises(Exception) as err:
        await asyncio.wait_for(task, 60)
    assert "cancel" in str(err.value).lower() or "RequestCancelled" in type(err.value).__name__
    assert as_dict(await panel(client, {**params, "count": 2}))["items"]
