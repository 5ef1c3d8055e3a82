"""bench panel's pure parts: positions, hits, the report."""

from __future__ import annotations

from tooling.bench_panel import Row, first_line, make_cases, report


def test_positions_cut_a_real_line_after_its_first_word() -> None:
    cases = make_cases(0, 6, 6000)
    assert len(cases) == 6
    for case in cases:
        head, tail = case.text[: case.cursor], case.text[case.cursor :]
        assert head.endswith(" ") and tail.startswith("\n")  # the line's rest is removed
        assert len(case.expected) >= 6 and case.expected not in head.rsplit("\n", 1)[-1]


def test_a_hit_is_the_real_line_as_a_drafts_first_line() -> None:
    assert first_line("value):\n        return x") == "value):"
    assert first_line("  a  +  b ") == "a + b"


def row(ratio: float, drafts: list[str], greedy_hit: bool, any_hit: bool) -> Row:
    return Row(
        "f.py",
        "x",
        100.0,
        100.0 * ratio,
        ratio,
        drafts[0],
        drafts,
        [True] * len(drafts),
        greedy_hit,
        any_hit,
        True,
    )


def test_the_report_counts_hits_and_ratios() -> None:
    rows = [
        row(1.5, ["a", "b"], False, True),
        row(2.5, ["c"], True, True),
        row(2.0, ["d", "e", "f"], False, False),
    ]
    rep = report(rows, {"model": "m"}, 5)
    assert rep["ratio"]["median"] == 2.0 and rep["distinct"]["median"] == 2.0
    assert (rep["greedyHits"], rep["anyHits"], rep["drafts"], rep["syntaxInvalid"]) == (1, 2, 6, 0)
    assert "firstToken" not in rep  # no --compare
