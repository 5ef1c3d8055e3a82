"""Stop rules: mode detection, cutting while decoding, and final clean-up."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from completion.stops import StopRules, strip_healed


def rules_at(marked: str, multiline="auto") -> StopRules:
    """Rules for ``marked`` with ``|`` marking the cursor."""
    cursor = marked.index("|")
    return StopRules.at(marked.replace("|", "", 1), cursor, multiline)


##### Mode detection #####


def test_inside_a_line_is_line_mode():
    rules = rules_at("x = foo(|)\ny = 2\n")
    assert rules.mode == "line"
    assert rules.rest_of_line == ")"
    assert rules.base_indent == 0
    assert rules.next_line == "y = 2"
    assert rules.suffix == ")\ny = 2\n"


def test_end_of_line_with_text_is_line_mode():
    rules = rules_at("def f():|\n\n    return 1\n")
    assert rules.mode == "line"
    assert rules.rest_of_line == ""
    assert rules.next_line == "return 1"


def test_whitespace_only_line_is_block_mode():
    rules = rules_at("def f():\n    |\n    return x\n")
    assert rules.mode == "block"
    assert rules.base_indent == 4
    assert rules.next_line == "return x"
    rules = rules_at("import os\n|\n")
    assert rules.mode == "block"
    assert rules.base_indent == 0
    assert rules.next_line == ""


def test_blank_line_with_trailing_whitespace_after_cursor_is_block_mode():
    rules = rules_at("if x:\n  |   \n")
    assert rules.mode == "block"
    assert rules.base_indent == 2


def test_crlf_rest_of_line():
    rules = rules_at("a = (|)\r\nb\r\n")
    assert rules.mode == "line"
    assert rules.rest_of_line == ")"
    assert rules.next_line == "b"
    rules = rules_at("def f():\r\n    |\r\n    pass\r\n")
    assert rules.mode == "block"
    assert rules.rest_of_line == ""
    assert rules.next_line == "pass"


def test_end_of_document():
    rules = rules_at("x = 1|")
    assert rules.mode == "line"
    assert rules.rest_of_line == ""
    assert rules.next_line == ""
    assert rules.suffix == ""
    rules = rules_at("x = 1\n|")
    assert rules.mode == "block"


@pytest.mark.parametrize(
    ("marked", "auto"),
    [("x = foo(|)\n", "line"), ("def f():\n    |\n", "block"), ("|", "block")],
)
def test_multiline_override(marked, auto):
    assert rules_at(marked).mode == auto
    assert rules_at(marked, "always").mode == "block"
    assert rules_at(marked, "never").mode == "line"


##### cut: line mode #####


def test_line_mode_stops_at_first_newline():
    rules = rules_at("x = foo(|)\n")
    assert rules.cut("a") == ("a", False)
    assert rules.cut("a, b") == ("a, b", False)
    assert rules.cut("a, b\nc") == ("a, b", True)
    assert rules.cut("a, b\r\nc") == ("a, b", True)
    assert rules.cut("\nfoo") == ("", True)  # text after the cursor: no line break allowed


@pytest.mark.parametrize("marked", ["def f():|\n", "    |\n", "x = 1|"])
def test_never_mode_holds_no_line_break(marked):
    auto, never = rules_at(marked, "auto"), rules_at(marked, "never")
    assert never.cut("\n    return 1") == ("", True)
    assert never.finish(never.cut("\ndef _munge(t):")[0]) == ""
    assert never.cut("return 1\nx") == ("return 1", True)
    if auto.mode == "line":  # auto lets an empty rest of line move to the next line
        assert auto.cut("\n    return 1\n") == ("\n    return 1", True)


def test_line_mode_stops_when_reaching_rest_of_line():
    rules = rules_at("print(x, |)\n")
    assert rules.cut("y") == ("y", False)
    assert rules.cut("y)") == ("y", True)
    assert rules.cut("y)  ") == ("y", True)
    rules = rules_at("call(|, z)\n")
    assert rules.cut("a") == ("a", False)
    assert rules.cut("a, z)") == ("a", True)


def test_line_mode_may_move_to_next_line_when_nothing_follows():
    rules = rules_at("def f():|\n")
    assert rules.cut("\n") == ("\n", False)
    assert rules.cut("\n    ") == ("\n    ", False)
    assert rules.cut("\n    ret") == ("\n    ret", False)
    assert rules.cut("\n    return 1") == ("\n    return 1", False)
    assert rules.cut("\n    return 1\n    y") == ("\n    return 1", True)
    assert rules.cut("\r\n    return 1\r\n") == ("\r\n    return 1", True)
    assert rules.cut(" x\ny") == (" x", True)  # no leading break: ordinary line


def test_a_header_goes_on_through_its_body_line_with_header_body():
    text = "def f(x):|\n    return x\n"
    cursor = text.index("|")
    rules = StopRules.at(text.replace("|", ""), cursor, "auto", header_body=True)
    assert rules.cut("\n    if x:") == ("\n    if x:", False)
    assert rules.cut("\n    if x:\n        ret") == ("\n    if x:\n        ret", False)
    done = "\n    if x:\r\n        return 1"
    assert rules.cut(done + "\r\n    y") == (done, True)
    assert rules.cut("\n    if x:\n\n") == ("\n    if x:", True)  # blank: alone
    assert rules.cut("\n    # note:\n    y") == ("\n    # note:", True)
    nested = "\n    if x:\n        for y in x:\n            z"
    assert rules.cut(nested + "\n    w") == (nested, True)
    mid = StopRules.at("f(a, b)\n", 2, "auto", header_body=True)
    assert mid.cut("key:\n    y\n") == ("key:", True)
    never = StopRules.at("if x:\n", 5, "never", header_body=True)
    assert never.cut("\n    y\n") == ("", True)


def test_line_mode_trailing_whitespace_counts_as_nothing_following():
    rules = rules_at("x = 1|   \ny\n")
    assert rules.mode == "line"
    assert rules.cut("\n    z = 2\n") == ("\n    z = 2", True)


##### cut: block mode #####


def test_block_stops_before_dedent():
    rules = rules_at("def f():\n    |\n")
    text = "x = 1\n    if x:\n        y = 2\n    return y\nprint(f())\n"
    assert rules.cut(text) == ("x = 1\n    if x:\n        y = 2\n    return y", True)


def test_block_ignores_unfinished_last_line():
    rules = rules_at("def f():\n    |\n")
    assert rules.cut("x = 1\n    y = 2\npri") == ("x = 1\n    y = 2\npri", False)
    assert rules.cut("x = 1\n    y = 2\npri\n")[1]


def test_block_first_line_never_stops():
    rules = rules_at("def f():\n    |\n    return x\n")
    assert rules.cut("return x\n") == ("return x\n", False)


def test_block_top_level_stops_after_blank_line():
    rules = rules_at("import os\n|\n")
    text = "def f():\n    pass\n\ndef g():\n    pass\n"
    kept, stop = rules.cut(text)
    assert stop
    assert kept == "def f():\n    pass\n"
    assert rules.finish(kept) == "def f():\n    pass"


def test_block_top_level_continues_without_blank_line():
    rules = rules_at("|\n")
    text = "x = 1\ny = 2\nz = 3\n"
    assert rules.cut(text) == (text, False)


def test_block_indented_blank_lines_do_not_end_block():
    rules = rules_at("def f():\n    |\n")
    text = "a = 1\n\n    return a\n"
    assert rules.cut(text) == (text, False)


def test_block_stops_before_next_line_repeat():
    rules = rules_at("def f():\n    |\n    return total\n")
    text = "total = 1\n    total += 2\n    return total\n"
    assert rules.cut(text) == ("total = 1\n    total += 2", True)


def test_block_repeat_check_uses_stripped_lines():
    rules = rules_at("def f():\n    |\r\n\r\n    return total\r\n")
    assert rules.next_line == "return total"
    assert rules.cut("total = 1\r\n    return total   \r\n") == ("total = 1\r", True)
    assert rules.finish("total = 1\r") == "total = 1"


##### finish #####


def test_finish_trims_overlap_with_rest_of_line():
    rules = rules_at("f(|)\n")
    assert rules.finish('"a")') == '"a"'
    assert rules.finish('"a"') == '"a"'
    rules = rules_at("x = [1, |]]\n")
    assert rules.finish("2]]") == "2"
    assert rules.finish("2]") == "2"


def test_finish_drops_pure_repetition():
    rules = rules_at("print(|value)\n")
    assert rules.finish("value)") == ""
    assert rules.finish("value") == ""
    rules = rules_at("def f():\n    |\n    return x\n")
    assert rules.finish("return x") == ""
    assert rules.finish("return x\n") == ""
    assert rules.finish("return y") == "return y"


def test_finish_empty_and_whitespace():
    rules = rules_at("x = |\n")
    assert rules.finish("") == ""
    assert rules.finish("   ") == ""
    assert rules.finish("1  \t") == "1"


def test_finish_block_strips_trailing_whitespace():
    rules = rules_at("def f():\n    |\n")
    assert rules.finish("x = 1\n    return x\n\n   \n") == "x = 1\n    return x"


def test_finish_line_keeps_leading_break():
    rules = rules_at("def f():|\n")
    assert rules.finish("\n    return 1  ") == "\n    return 1"


##### strip_healed #####


@pytest.mark.parametrize(
    ("text", "healed", "expected"),
    [
        ("foo", "", ("foo", False)),
        (" foo", " ", ("foo", False)),
        ("    x = 1", "    ", ("x = 1", False)),
        ("", " ", ("", True)),
        ("  ", "    ", ("", True)),
        ("foo", " ", ("foo", False)),
        ("\tfoo", " ", ("foo", False)),
        ("  foo", "    ", ("foo", False)),
        ("     foo", "    ", (" foo", False)),
    ],
)
def test_strip_healed(text, healed, expected):
    assert strip_healed(text, healed) == expected


##### Known problem #####


def test_nested_call_before_closing_bracket():
    rules = rules_at("print(|)\n")
    kept, _ = rules.cut("len(x)")
    assert rules.finish(kept) == "len(x)"


##### Properties #####

TEXT_PIECES = st.sampled_from(
    ["a", "b", "x = 1", "(", ")", "]", " ", "    ", "\t", "\n", "\r\n", "return x", ":", ","]
)
TEXTS = st.lists(TEXT_PIECES, max_size=25).map("".join)
MULTILINE = st.sampled_from(["auto", "always", "never"])


@settings(max_examples=400, deadline=None)
@given(TEXTS, TEXTS, MULTILINE, st.data())
def test_finish_never_repeats_what_follows(text, generated, multiline, data):
    cursor = data.draw(st.integers(0, len(text)))
    rules = StopRules.at(text, cursor, multiline)
    kept, _ = rules.cut(generated)
    assert generated.startswith(kept)
    s = rules.finish(kept)
    if s:
        assert not text[cursor:].lstrip().startswith(s.strip())
        assert s.strip()


@settings(max_examples=300, deadline=None)
@given(TEXTS, TEXTS, TEXTS, st.data())
def test_block_stop_is_stable_when_more_text_arrives(text, generated, more, data):
    cursor = data.draw(st.integers(0, len(text)))
    rules = StopRules.at(text, cursor, "always")
    kept, stop = rules.cut(generated)
    if stop:
        assert rules.cut(generated + more) == (kept, True)
