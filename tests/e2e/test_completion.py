"""End to end: the real server, the real default model, two real editors' capabilities.

Neovim negotiates utf-8 positions and VS Code utf-16, so every test runs in both.
"""

from __future__ import annotations

import asyncio
import hashlib

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import LanguageClient, client_capabilities

from .conftest import CLIENTS, DATA, change, end_position, server_config, units, uri_for
from .conftest import open_doc as send_open

pytestmark = [pytest.mark.e2e, pytest.mark.model, pytest.mark.asyncio(loop_scope="module")]


@pytest_lsp.fixture(
    scope="module",
    params=CLIENTS,
    config=server_config(),
)
async def client(request: pytest.FixtureRequest, lsp_client: LanguageClient):
    params = types.InitializeParams(
        capabilities=client_capabilities(request.param),
        initialization_options={"completion": {"maxTokens": 24}},
    )
    result = await lsp_client.initialize_session(params)
    lsp_client.server_caps = result.capabilities  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


def encoding_of(client: LanguageClient) -> str:
    return str(client.server_caps.position_encoding or "utf-16")  # type: ignore[attr-defined]


async def open_doc(client: LanguageClient, name: str, text: str, version: int = 1) -> str:
    return send_open(client, name, text, version)


async def inline(
    client: LanguageClient,
    uri: str,
    pos: types.Position,
    kind: types.InlineCompletionTriggerKind = types.InlineCompletionTriggerKind.Invoked,
) -> types.InlineCompletionList:
    result = await client.text_document_inline_completion_async(
        types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=pos,
            context=types.InlineCompletionContext(trigger_kind=kind),
        )
    )
    assert isinstance(result, types.InlineCompletionList)
    return result


async def test_server_advertises_features(client: LanguageClient) -> None:
    caps = client.server_caps  # type: ignore[attr-defined]
    assert caps.inline_completion_provider is not None
    assert caps.completion_provider is not None
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert str(caps.position_encoding) in ("utf-8", "utf-16")


async def test_incremental_edits_then_inline_completion(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = (DATA / "sample_unicode.py").read_text(encoding="utf-8")
    uri = await open_doc(client, "edits_unicode.py", text)
    # Type a new function keystroke by keystroke after the emoji/CJK content.
    typed = '\n\ndef multiply(a: int, b: int) -> int:\n    """Return the product of a and b."""\n    return '
    version = 1
    for ch in typed:
        pos = end_position(text, enc)
        version += 1
        change(client, uri, version, pos, pos, ch)
        text += ch
    # An edit above the cursor that replaces a CJK string (range over multi-unit chars).
    line_no = 2
    line = text.split("\n")[line_no]
    a = line.index("你好")
    start = types.Position(line=line_no, character=units(line[:a], enc))
    end = types.Position(line=line_no, character=units(line[: a + 2], enc))
    version += 1
    change(client, uri, version, start, end, "您好🙂")
    lines = text.split("\n")
    lines[line_no] = line[:a] + "您好🙂" + line[a + 2 :]
    text = "\n".join(lines)

    pos = end_position(text, enc)
    result = await inline(client, uri, pos)
    assert result.items, "expected a completion after 'return '"
    item = result.items[0]
    insert = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
    assert insert.strip()
    assert "\n" not in insert  # single-line mode inside a line
    assert item.range is not None
    assert item.range.start == pos and item.range.end == pos

    # The server's copy equals ours: the same version and the same text (its hash).
    stats = _as_dict(await client.protocol.send_request_async("pie/stats", None))
    docs = {d["uri"]: d for d in stats["documents"]}
    assert docs[uri]["version"] == version
    assert docs[uri]["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert docs[uri]["tokens"] > 0  # and its prompt is cached


async def test_completion_does_not_repeat_text_after_cursor(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = 'def greet(name):\n    print("Hello, " + name)\n\n\ndef shout(name):\n    print("HELLO, " + name.upper())\n'
    uri = await open_doc(client, "no_repeat.py", text)
    # Cursor inside a line: after 'print(' on the last function's line.
    line_no = 5
    line = text.split("\n")[line_no]
    col = line.index("(") + 1
    pos = types.Position(line=line_no, character=units(line[:col], enc))
    result = await inline(client, uri, pos)
    rest = line[col:]
    for item in result.items:
        insert = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
        assert insert.strip()
        assert not rest.lstrip().startswith(insert.strip()), insert
        assert item.range is not None and item.range.start == pos


async def test_text_document_completion_returns_same_suggestion(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = "def add(a, b):\n    return "
    uri = await open_doc(client, "classic_completion.py", text)
    pos = end_position(text, enc)
    inline_result = await inline(client, uri, pos)
    result = await client.text_document_completion_async(
        types.CompletionParams(text_document=types.TextDocumentIdentifier(uri=uri), position=pos)
    )
    assert isinstance(result, types.CompletionList)
    assert result.items
    item = result.items[0]
    assert isinstance(item.text_edit, types.TextEdit)
    assert item.text_edit.range.end == pos
    expected = inline_result.items[0].insert_text
    assert item.text_edit.new_text == expected  # no word before the cursor here


async def test_crlf_document(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = (DATA / "sample_crlf.py").read_bytes().decode("utf-8")
    uri = await open_doc(client, "crlf.py", text)
    # Cursor after "    return " on the line before the final CRLF.
    lines = text.split("\r\n")
    line_no = len(lines) - 2
    pos = types.Position(line=line_no, character=units(lines[line_no], enc))
    result = await inline(client, uri, pos)
    assert result.items, "expected a completion after 'return '"  # the checks below run
    for item in result.items:
        insert = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
        assert "\r" not in insert and "\n" not in insert
        assert item.range is not None and item.range.start == pos


async def test_bad_position_unknown_document_and_server_keeps_serving(
    client: LanguageClient,
) -> None:
    uri = await open_doc(client, "bad_input.py", "x = 1\n")
    with pytest.raises(Exception) as err:
        await inline(client, uri, types.Position(line=40, character=0))
    assert "line 40" in str(err.value)
    with pytest.raises(Exception) as err:
        await inline(client, uri, types.Position(line=0, character=99))
    assert "past the end" in str(err.value)
    with pytest.raises(Exception) as err:
        await inline(client, uri_for("never_opened.py"), types.Position(line=0, character=0))
    assert "not open" in str(err.value)
    # Still serving.
    text = "def double(x):\n    return "
    uri2 = await open_doc(client, "after_errors.py", text)
    result = await inline(client, uri2, end_position(text, encoding_of(client)))
    assert result.items


async def test_cancel_request_then_next_succeeds(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = "import os\n\n\ndef list_python_files(path):\n    \n"
    uri = await open_doc(client, "cancel.py", text)
    pos = types.Position(line=4, character=4)
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=pos,
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Automatic
        ),
    )
    task = asyncio.ensure_future(
        client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me"
        )
    )
    await asyncio.sleep(0.05)  # let the request go out before the cancel
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Exception) as err:
        await asyncio.wait_for(task, 30)
    assert "cancel" in str(err.value).lower() or "RequestCancelled" in type(err.value).__name__
    assert loop.time() - t0 < 10
    text2 = "def double(x):\n    return "
    uri2 = await open_doc(client, "after_cancel.py", text2)
    result = await inline(client, uri2, end_position(text2, enc))
    assert result.items


async def test_newer_request_supersedes_older(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = "def triple(x):\n    return "
    uri = await open_doc(client, "supersede.py", text)
    params = types.InlineCompletionParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        position=end_position(text, enc),
        context=types.InlineCompletionContext(
            trigger_kind=types.InlineCompletionTriggerKind.Invoked
        ),
    )
    before = _as_dict(await client.protocol.send_request_async("pie/stats", None))["totals"]
    # Both go out now, in this order: the second arrives while the first decodes.
    first = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
    second = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params)
    older, newer = await asyncio.wait_for(asyncio.gather(first, second), 60)
    after = _as_dict(await client.protocol.send_request_async("pie/stats", None))["totals"]
    assert newer.items
    assert not older.items  # the superseded request is answered, with nothing
    assert after["superseded"] == before["superseded"] + 1
    assert after["cancelledCompletions"] == before["cancelledCompletions"] + 1  # it stopped


async def test_stats_with_and_without_params(client: LanguageClient) -> None:
    uri = await open_doc(client, "stats.py", "x = 1\n")
    with_null = await client.protocol.send_request_async("pie/stats", None)
    with_obj = await client.protocol.send_request_async("pie/stats", {})
    for stats in (with_null, with_obj):
        s = _as_dict(stats)
        assert set(s["model"]) >= {"id", "device", "dtype"}
        assert set(s["totals"]) >= {
            "completions",
            "promptTokens",
            "prefillMs",
            "generatedTokens",
            "decodeMs",
        }
        assert uri in [d["uri"] for d in s["documents"]]  # the loop below runs
        for d in s["documents"]:
            assert set(d) >= {"uri", "tokens"}


def _as_dict(obj: object) -> dict:
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "_asdict"):
        return {
            k: _as_dict(v)
            if hasattr(v, "_asdict")
            else [_as_dict(x) if hasattr(x, "_asdict") else x for x in v]
            if isinstance(v, list)
            else v
            for k, v in obj._asdict().items()
        }  # type: ignore[attr-defined]
    raise TypeError(type(obj))


async def test_model_loading_reports_work_done_progress(client: LanguageClient) -> None:
    # By now a completion has waited for the model, so the load's progress has ended.
    text = "x = 1\n"
    uri = await open_doc(client, "progress.py", text)
    await inline(client, uri, end_position(text, encoding_of(client)))
    reports = [r for rs in client.progress_reports.values() for r in rs]
    kinds = [getattr(r, "kind", None) for r in reports]
    assert "begin" in kinds and "end" in kinds, reports


def _value(stats: object, key: str) -> int:
    totals = stats["totals"] if isinstance(stats, dict) else stats.totals  # type: ignore[attr-defined]
    return int(totals[key] if isinstance(totals, dict) else getattr(totals, key))


async def test_invoked_gives_several_items_automatic_one(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = "import os\n\n\ndef list_python_files(folder):\n    return [name for name in os."
    uri = await open_doc(client, "items.py", text)
    pos = end_position(text, enc)
    invoked = await inline(client, uri, pos, types.InlineCompletionTriggerKind.Invoked)
    texts = [i.insert_text for i in invoked.items]
    assert len(texts) >= 2, texts  # the default maxItems is 3: cycling has something to show
    assert len(set(texts)) == len(texts)
    assert all(isinstance(t, str) and t.strip() for t in texts)
    automatic = await inline(client, uri, pos, types.InlineCompletionTriggerKind.Automatic)
    assert len(automatic.items) == 1
    assert automatic.items[0].insert_text == texts[0]  # greedy first, both ways
    for item in invoked.items:
        assert item.command is not None and item.command.command == "pie.accept"
        assert item.range is not None and item.range.start == pos


async def test_automatic_trigger_inside_a_word_is_skipped(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = "def area(width, height):\n    return wid"
    uri = await open_doc(client, "midword.py", text + "th * height\n")
    pos = end_position(text, enc)
    before = _value(await client.protocol.send_request_async("pie/stats", None), "skippedMidWord")
    automatic = await inline(client, uri, pos, types.InlineCompletionTriggerKind.Automatic)
    assert not automatic.items
    stats = await client.protocol.send_request_async("pie/stats", None)
    after, runs = _value(stats, "skippedMidWord"), _value(stats, "completions")
    assert after == before + 1
    # Asked for explicitly, the server answers even there: the model runs, nothing skipped.
    await inline(client, uri, pos, types.InlineCompletionTriggerKind.Invoked)
    stats = await client.protocol.send_request_async("pie/stats", None)
    assert _value(stats, "skippedMidWord") == after
    assert _value(stats, "completions") == runs + 1


async def test_accept_command_is_counted(client: LanguageClient) -> None:
    caps = client.server_caps  # type: ignore[attr-defined]
    assert "pie.accept" in caps.execute_command_provider.commands
    enc = encoding_of(client)
    text = "def greet(name):\n    return 'Hello, ' + "
    uri = await open_doc(client, "accept.py", text)
    suggested = _value(await client.protocol.send_request_async("pie/stats", None), "suggested")
    result = await inline(
        client, uri, end_position(text, enc), types.InlineCompletionTriggerKind.Automatic
    )
    assert len(result.items) == 1
    item = result.items[0]
    assert item.command is not None
    stats = await client.protocol.send_request_async("pie/stats", None)
    accepted, partial, chars = (
        _value(stats, k) for k in ("accepted", "partiallyAccepted", "acceptedChars")
    )
    assert _value(stats, "suggested") == suggested + 1  # the item shown is counted
    # The client runs the item's command after inserting it, as Neovim and VS Code do.
    answer = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=item.command.command, arguments=item.command.arguments)
    )
    assert answer == {"counted": True, "known": True}
    await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            command="pie.accept", arguments=[{"id": "0", "kind": "word", "chars": 3}]
        )
    )
    stats = await client.protocol.send_request_async("pie/stats", None)
    assert _value(stats, "accepted") == accepted + 1
    assert _value(stats, "partiallyAccepted") == partial + 1
    insert = item.insert_text if isinstance(item.insert_text, str) else item.insert_text.value
    assert _value(stats, "acceptedChars") == chars + len(insert) + 3
    # Malformed reports are errors, and the server keeps serving.
    for bad in ([], [{"kind": "full"}], [{"id": "x", "kind": "all"}], [{"id": "x", "chars": -1}]):
        with pytest.raises(Exception, match=r"pie\.accept"):
            await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="pie.accept", arguments=bad)
            )
    assert await client.protocol.send_request_async("pie/stats", None)


async def test_typing_through_a_suggestion_is_answered_from_it(client: LanguageClient) -> None:
    enc = encoding_of(client)
    text = "def greet(name):\n    return 'Hello, ' + "
    uri = await open_doc(client, "through.py", text)
    first = await inline(
        client, uri, end_position(text, enc), types.InlineCompletionTriggerKind.Automatic
    )
    assert first.items
    suggestion = first.items[0].insert_text
    assert isinstance(suggestion, str) and len(suggestion) >= 3
    pos = end_position(text, enc)
    change(client, uri, 2, pos, pos, suggestion[:2])
    text += suggestion[:2]
    before = _as_dict(await client.protocol.send_request_async("pie/stats", None))["totals"]
    again = await inline(
        client, uri, end_position(text, enc), types.InlineCompletionTriggerKind.Automatic
    )
    assert [i.insert_text for i in again.items] == [suggestion[2:]]
    after = _as_dict(await client.protocol.send_request_async("pie/stats", None))["totals"]
    assert after["reusedCompletions"] == before["reusedCompletions"] + 1
    # Answered from the suggestion: the model did not run, nothing was decoded or drafted.
    for key in ("completions", "generatedTokens", "draftTokens", "acceptedTokens", "verifySteps"):
        assert after[key] == before[key], key


async def test_code_in_another_open_document_is_drafted_from(client: LanguageClient) -> None:
    enc = encoding_of(client)
    lib = (DATA / "moving_average.py").read_text(encoding="utf-8")
    await open_doc(client, "lib.py", lib)
    text = "import math\n\n" + lib[: lib.index("    for i")]
    uri = await open_doc(client, "uses_lib.py", text)
    result = await inline(
        client, uri, end_position(text, enc), types.InlineCompletionTriggerKind.Automatic
    )
    assert result.items
    after = await client.protocol.send_request_async("pie/stats", None)

    totals = _as_dict(after)["totals"]
    # lib.py (and any other open document) was indexed for drafts; whether a draft from it
    # pays depends on the verify cost this machine measured (the engine test forces it).
    assert totals["draftDocuments"] >= 1
    assert set(totals["draftsBySource"]) == {
        "aligned",
        "history",
        "elsewhere",
        "prompt",
        "workspace",
        "forced",
    }
