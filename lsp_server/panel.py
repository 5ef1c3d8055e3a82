"""The suggestions panel over LSP: ``pie/panelCompletion`` and Copilot's dialect.

Params ``{"textDocument": {"uri"}, "position", "count"?: int, "partialResultToken"?}``;
result ``{"items": [{"insertText", "range", "score", "syntaxValid", "command"}]}``, best
first. With a ``partialResultToken`` each item is also sent as it is ready, as
``$/progress`` ``{"token", "value": {"items": [item]}}`` (the LSP partial-result
convention); the response then holds them all. ``textDocument/copilotPanelCompletion``
takes the same (Copilot's panel clients send no ``count``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams

from completion.panel import MAX_ITEMS, PanelItem

if TYPE_CHECKING:
    from completion.cancel import CancelToken
    from completion.engine import CompletionRequest, Engine

    from .server import PieServer

log = logging.getLogger(__name__)

PANEL = "pie/panelCompletion"
COPILOT_PANEL = "textDocument/copilotPanelCompletion"
PROGRESS = "$/progress"
UINTEGER_MAX = 2**31 - 1
"""LSP's ``uinteger``: the largest line or character a position may hold."""


class PanelParams(NamedTuple):
    """A panel request, checked."""

    uri: str
    position: types.Position
    wanted: int
    """Drafts asked for (clamped into 1-:data:`MAX_ITEMS`)."""
    token: int | str | None
    """The ``partialResultToken`` (None: no partial results)."""


def parse_params(raw: Any, default_count: int) -> PanelParams:
    """Check a panel request's params; InvalidParams with the reason if they are wrong.

    A ``count`` outside 1-:data:`MAX_ITEMS` is clamped (and logged), not refused.
    """
    raw = _plain(raw)
    if not isinstance(raw, dict):
        raise JsonRpcInvalidParams("panel params must be an object")
    doc, pos = raw.get("textDocument"), raw.get("position")
    if not isinstance(doc, dict) or not isinstance(doc.get("uri"), str):
        raise JsonRpcInvalidParams('panel params need "textDocument": {"uri": string}')
    if not isinstance(pos, dict) or not all(_natural(pos.get(k)) for k in ("line", "character")):
        raise JsonRpcInvalidParams(
            'panel params need "position": {"line": uinteger, "character": uinteger}'
        )
    count = raw.get("count", default_count)
    if isinstance(count, bool) or not isinstance(count, int):
        raise JsonRpcInvalidParams(f"panel count must be an integer, got {count!r}")
    if not 1 <= count <= MAX_ITEMS:
        clamped = min(max(count, 1), MAX_ITEMS)
        log.info("panel count %d clamped to %d", count, clamped)
        count = clamped
    token = raw.get("partialResultToken")
    if token is not None and (isinstance(token, bool) or not isinstance(token, int | str)):
        raise JsonRpcInvalidParams("partialResultToken must be an integer or a string")
    position = types.Position(line=pos["line"], character=pos["character"])
    return PanelParams(doc["uri"], position, count, token)


def _plain(value: Any) -> Any:
    """JSON as dicts and lists (pygls gives a custom request's objects as named tuples)."""
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINTEGER_MAX


def item_json(ls: PieServer, item: PanelItem, position: types.Position) -> dict[str, Any]:
    """One panel item on the wire, with a fresh id for ``pie.accept``."""
    sid = ls.issue(item.text, panel=True)
    here = {"line": position.line, "character": position.character}
    return {
        "insertText": item.text,
        "range": {"start": here, "end": here},
        "score": round(item.score, 4),
        "syntaxValid": item.syntax_valid,
        "command": {
            "title": "pie-lsp: suggestion accepted",
            "command": "pie.accept",
            "arguments": [{"id": sid}],
        },
    }


async def answer(ls: PieServer, raw: Any) -> dict[str, Any]:
    """Run a panel request; its items, best first (none if superseded or cancelled)."""
    params = parse_params(raw, ls.config.completion.panelItems)
    loop = asyncio.get_running_loop()
    sent: dict[int, dict[str, Any]] = {}

    def streamed(item: PanelItem) -> None:  # on the model worker
        loop.call_soon_threadsafe(stream, item)

    def stream(item: PanelItem) -> None:  # on the event loop
        sent[id(item)] = item_json(ls, item, params.position)
        if params.token is not None:
            value = {"items": [sent[id(item)]]}
            ls.protocol.notify(PROGRESS, types.ProgressParams(token=params.token, value=value))

    def work(engine: Engine, request: CompletionRequest, token: CancelToken) -> Any:
        return engine.panel(request, params.wanted, token, streamed)

    ls.counters["panelRequests"] += 1
    _, _, result = await ls.on_model(params.uri, params.position, work, "panel", ls.panels)
    await asyncio.sleep(0)  # let items streamed at the end be sent before the response
    if result is None:
        return {"items": []}
    ls.counters["panelDrafts"] += result.drafts
    ls.counters["panelMs"] = round(ls.counters["panelMs"] + result.ms, 1)
    items = [sent.get(id(item)) or item_json(ls, item, params.position) for item in result.items]
    log.info(
        "panel %s:%d,%d %d items of %d drafts%s in %.0f ms",
        params.uri.rsplit("/", 1)[-1],
        params.position.line,
        params.position.character,
        len(items),
        result.drafts,
        "" if result.batched else " (one after another)",
        result.ms,
    )
    return {"items": items}


def register(server: PieServer) -> None:
    """Register ``pie/panelCompletion`` and ``textDocument/copilotPanelCompletion``."""

    @server.feature(PANEL)
    async def panel(ls: PieServer, params: Any) -> dict[str, Any]:
        return await answer(ls, params)

    @server.feature(COPILOT_PANEL)
    async def copilot_panel(ls: PieServer, params: Any) -> dict[str, Any]:
        return await answer(ls, params)
