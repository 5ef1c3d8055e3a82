"""The panel's board: duplicates, syntax flags, streaming order, ranking."""

from __future__ import annotations

import logging

import pytest
from pygls.exceptions import JsonRpcInvalidParams

from completion.panel import Board, PanelItem, normalised, ranked
from completion.syntax_check import SyntaxChecker
from lsp_server.panel import parse_params

TEXT = "def area(w, h):\n    return \n\nx = 1\n"
CURSOR = TEXT.index("return ") + len("return ")


def board(shown: list[PanelItem]) -> Board:
    return Board(SyntaxChecker("python", TEXT, CURSOR), shown.append)


def test_duplicates_up_to_whitespace_and_empty_drafts_are_not_shown() -> None:
    shown: list[PanelItem] = []
    b = board(shown)
    b.offer("w * h", -0.5)
    b.offer("w  *  h ", -0.1)
    b.offer("   ", -0.2)
    b.offer("w + h", -0.9)
    assert [it.text for it in shown] == ["w * h", "w + h"]
    assert b.result(True, 1.0).skipped == ["w  *  h ", "   "]
    assert normalised(" a \t b\n") == "a b"


def test_the_greedy_item_is_the_inline_completion_first_with_the_greedy_rows_score() -> None:
    shown: list[PanelItem] = []
    b = board(shown)
    b.offer("h * w", -0.2)
    b.greedy_row("w * h", -0.4)
    b.offer("w *  h", -0.3)  # the greedy row's text, up to whitespace
    b.show_best("w * h")
    result = b.result(True, 5.0)
    assert [(it.text, it.greedy) for it in result.items] == [("w * h", True), ("h * w", False)]
    assert result.items[0].score == -0.4 and result.drafts == 3
    assert [it.text for it in shown] == ["h * w", "w * h"]  # as they came


def test_a_draft_the_inline_completion_turned_out_to_repeat_is_dropped() -> None:
    b = board([])
    b.greedy_row("w * h * 1", -0.4)
    b.offer("w * h", -0.3)
    b.show_best("w * h")
    result = b.result(True, 1.0)
    assert [it.text for it in result.items] == ["w * h"] and result.withdrawn == ["w * h"]


def test_syntax_invalid_drafts_are_flagged_and_rank_last() -> None:
    b = board([])
    b.offer("w * (h", -0.1)  # leaves a bracket open: adds an error
    b.offer("w * h", -0.8)
    b.offer("h * w", -0.5)
    items = b.result(True, 1.0).items
    assert [(it.text, it.syntax_valid) for it in items] == [
        ("h * w", True),
        ("w * h", True),
        ("w * (h", False),
    ]


def test_ranking_puts_greedy_first_then_unchecked_with_valid_by_score() -> None:
    items = [
        PanelItem("a", -2.0, None),
        PanelItem("b", -0.5, False),
        PanelItem("c", -1.0, True),
        PanelItem("g", -3.0, True, greedy=True),
    ]
    assert [it.text for it in ranked(items)] == ["g", "c", "a", "b"]


def test_a_language_without_grammar_leaves_drafts_unchecked() -> None:
    b = Board(SyntaxChecker("plaintext", "hello ", 6), lambda item: None)
    b.offer("world", -0.1)
    assert b.result(False, 1.0).items[0].syntax_valid is None


def test_panel_params_are_checked_and_the_count_clamped(caplog) -> None:
    base = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 2, "character": 5}}
    params = parse_params(base, 5)
    assert (params.uri, params.position.line, params.wanted, params.token) == (
        "file:///a.py",
        2,
        5,
        None,
    )
    with caplog.at_level(logging.INFO, logger="lsp_server.panel"):
        assert parse_params({**base, "count": 0}, 5).wanted == 1
        assert parse_params({**base, "count": 1000}, 5).wanted == 10
    assert "clamped to 1" in caplog.text and "clamped to 10" in caplog.text
    assert parse_params({**base, "partialResultToken": "t"}, 5).token == "t"
    for bad in (
        None,
        {"position": base["position"]},
        {**base, "position": {"line": -1, "character": 0}},
        {**base, "count": "3"},
        {**base, "count": True},
        {**base, "partialResultToken": 1.5},
    ):
        with pytest.raises(JsonRpcInvalidParams):
            parse_params(bad, 5)
