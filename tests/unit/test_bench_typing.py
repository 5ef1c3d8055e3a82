"""``pie-lsp bench typing``: the client-side bookkeeping (edits, typed-through answers)."""

from __future__ import annotations

import random
from typing import Any

from lsprotocol import types

from tooling.bench_typing import Doc, Request, Typist, _report, edit_elsewhere


class Recorder:
    """Stands in for PieClient: keeps the edits it was asked to send."""

    def __init__(self) -> None:
        self.changes: list[tuple[tuple[int, int], tuple[int, int], str]] = []

    def change(self, uri: str, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        self.changes.append((start, end, text))


def answer(text: str) -> Any:
    return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text)])


def test_edits_are_sent_in_utf16_columns_and_kept_locally() -> None:
    rec = Recorder()
    doc = Doc(rec, "file:///x.py", ["a = '😀中'  # x", "b = 1"])  # type: ignore[arg-type]
    doc.change(0, 7, 8, "Z")  # the quote after the emoji (2 UTF-16 units) and the CJK (1)
    doc.insert_line(1, "# new")
    assert rec.changes[0] == ((0, 8), (0, 9), "Z")
    assert doc.lines == ["a = '😀中Z  # x", "# new", "b = 1"]
    assert rec.changes[1] == ((1, 0), (1, 0), "# new\n")


def test_an_edit_elsewhere_lands_in_the_first_half_above_the_line() -> None:
    rec = Recorder()
    lines = [f"    line {i}" for i in range(40)]
    doc = Doc(rec, "u", list(lines))  # type: ignore[arg-type]
    edit_elsewhere(doc, 30, random.Random(1))
    (start, _, text) = rec.changes[0]
    assert 1 <= start[0] < 15 and text.startswith("    # ")
    assert len(doc.lines) == 41 and doc.lines[31] == lines[30]


def test_an_answer_after_typing_the_shown_suggestion_counts_as_typed_through() -> None:
    rec = Recorder()
    doc = Doc(rec, "u", ["x = foo"])  # type: ignore[arg-type]
    typist = Typist(rec, random.Random(0), 0.15)  # type: ignore[arg-type]
    typist._answered("pause", True, 300.0, answer("(bar)"), doc, 0, 7, "f")
    doc.change(0, 7, 7, "(")
    typist._answered("pause", False, 2.0, answer("bar)"), doc, 0, 8, "f")
    doc.change(0, 8, 8, "q")  # not what the suggestion said
    typist._answered("pause", False, 250.0, answer("ux)"), doc, 0, 9, "f")
    assert [r.typed_through for r in typist.records] == [False, True, False]
    report = _report("m", "none", typist.records, {"totals": {}}, {}, 1.0)
    assert report["pauses"]["n"] == 3 and report["notTypedThrough"]["n"] == 2
    assert report["afterEdit"]["n"] == 1 and report["whileTyping"]["n"] == 2


def test_the_report_counts_superseded_requests_apart() -> None:
    records = [
        Request("pause", False, "answered", 100.0, False, "f"),
        Request("burst", False, "superseded", 40.0, True, "f"),
        Request("burst", False, "answered", 20.0, False, "f"),
    ]
    stats = {"totals": {"gatesDeferred": 2}, "model": {"quantize": "int4"}}
    report = _report("m", "auto", records, stats, {}, 1.0)
    assert (report["quantize"], report["resolved"]) == ("auto", "int4")
    assert (report["burstRequests"], report["superseded"], report["burstAnswered"]) == (2, 1, 1)
    assert report["pauses"]["median"] == 100.0 and report["server"] == {"gatesDeferred": 2}
