"""bench restart's cases and edits (tooling/bench_restart.py): the pure parts."""

from __future__ import annotations

import random
import re
from typing import Any

from tooling.bench_restart import EDITS, edited, make_cases


class Words:
    """A stand-in tokenizer: one token per run of non-space characters."""

    def __call__(self, text: str, **_: Any) -> dict[str, Any]:
        spans = [m.span() for m in re.finditer(r"\S+", text)]
        return {"input_ids": list(range(len(spans))), "offset_mapping": spans}


def test_each_case_has_a_full_window_before_a_cut_code_line() -> None:
    cases = make_cases(Words(), 2000, 4, seed=1)
    assert len(cases) == 4
    for case in cases:
        lines = case.text.split("\n")
        cut = lines[case.line]
        assert len(cut) == case.col and cut.endswith(" ") and cut.strip()
        before = "\n".join(lines[: case.line]) + "\n" + cut
        assert len(before.split()) >= 2000  # the prompt's window is full
        window = "\n".join(lines[case.window_start : case.line]) + "\n" + cut
        assert 1900 <= len(window.split()) <= 2100


def test_one_line_edits_land_in_the_window_above_the_tail() -> None:
    (case,) = make_cases(Words(), 2000, 1, seed=2)
    old = case.text.split("\n")
    for kind in EDITS:
        text, line = edited(case, kind, random.Random(3))
        new = text.split("\n")
        assert new[line] == old[case.line]  # the cursor line moved with the edit
        assert len(new) - len(old) == {"insert": 1, "delete": -1, "change": 0}[kind]
        first = next(i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b)
        assert case.window_start < first < case.line - 40
        if kind == "change":
            assert sum(a != b for a, b in zip(old, new, strict=True)) == 1
