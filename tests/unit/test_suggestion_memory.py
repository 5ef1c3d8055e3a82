"""Typing through a shown suggestion: the rest, only while nothing else changed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from completion.suggestion_memory import Shown, typed_through

TEXT = "# 漢字 😀\r\ndef f(x):\r\n    return \r\n"
CURSOR = TEXT.index("return ") + len("return ")
SHOWN = Shown(TEXT, CURSOR, "x * 2 + 😀", "line")


@given(st.integers(1, len(SHOWN.suggestion) - 1))
def test_typing_a_beginning_leaves_the_rest(n: int) -> None:
    typed = TEXT[:CURSOR] + SHOWN.suggestion[:n] + TEXT[CURSOR:]
    assert typed_through(SHOWN, typed, CURSOR + n) == SHOWN.suggestion[n:]


def test_nothing_typed_all_typed_or_a_whitespace_rest_is_no_reuse() -> None:
    assert typed_through(SHOWN, TEXT, CURSOR) is None
    whole = TEXT[:CURSOR] + SHOWN.suggestion + TEXT[CURSOR:]
    assert typed_through(SHOWN, whole, CURSOR + len(SHOWN.suggestion)) is None
    spaced = Shown(TEXT, CURSOR, "x   ", "line")
    assert typed_through(spaced, TEXT[:CURSOR] + "x" + TEXT[CURSOR:], CURSOR + 1) is None


def test_other_typing_or_an_edit_elsewhere_is_no_reuse() -> None:
    wrong = TEXT[:CURSOR] + "y" + TEXT[CURSOR:]
    assert typed_through(SHOWN, wrong, CURSOR + 1) is None
    elsewhere = "!" + TEXT[1:CURSOR] + "x" + TEXT[CURSOR:]  # same length, other text before
    assert typed_through(SHOWN, elsewhere, CURSOR + 1) is None
    after = TEXT[:CURSOR] + "x" + TEXT[CURSOR:-1] + "z"  # same length, other text after
    assert typed_through(SHOWN, after, CURSOR + 1) is None
