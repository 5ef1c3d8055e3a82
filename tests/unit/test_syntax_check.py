"""Syntax check of suggestions: kept, closed, trimmed, dropped; bytes and points right."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tree_sitter import Tree

from completion.syntax import get_language, make_parser
from completion.syntax_check import (
    MAX_CANDIDATES,
    PYTHON_LEXICON,
    Insertion,
    SyntaxChecker,
    advance_point,
    candidates,
    default_cuts,
    error_nodes,
    insertion,
    unclosed_closers,
)

DATA = Path(__file__).parents[1] / "data"

needs_js = pytest.mark.skipif(get_language("javascript") is None, reason="no JavaScript grammar")

FUNC = "def f(a, b):\n    result = |\n    return result\n"


def checker(doc: str, language_id: str = "python", tree: Tree | None = None) -> SyntaxChecker:
    """A checker for ``doc`` with the cursor at its ``|`` (removed)."""
    cursor = doc.index("|")
    return SyntaxChecker(language_id, doc.replace("|", "", 1), cursor, tree)


def parse(text: str, language_id: str = "python") -> Tree:
    parser = make_parser(language_id)
    assert parser is not None
    return parser.parse(text.encode("utf-8", "surrogatepass"))


def nodes(tree: Tree) -> Iterator[tuple[object, ...]]:
    """Every node with its kind, byte range and points, in document order."""
    cursor = tree.walk()
    visited = False
    while True:
        if not visited:
            node = cursor.node
            assert node is not None
            yield (node.type, node.is_missing, node.byte_range, node.start_point, node.end_point)
            if cursor.goto_first_child():
                continue
        if cursor.goto_next_sibling():
            visited = False
        elif cursor.goto_parent():
            visited = True
        else:
            return


# --- check: the rules ---------------------------------------------------------------


@pytest.mark.parametrize("suggestion", ["compute(a, b) + 1", "[x for x in a if x]", "'#('"])
def test_good_completion_is_kept(suggestion: str) -> None:
    verdict = checker(FUNC).check(suggestion, line_mode=True)
    assert (verdict.text, verdict.action) == (suggestion, "kept")
    assert (verdict.errors_before, verdict.errors_after) == (0, 0)
    assert verdict.ms >= 0


def test_good_block_is_kept() -> None:
    block = "for x in a:\n        b += x\n    result = b"
    verdict = checker("def f(a, b):\n    |\n    return result\n").check(block, line_mode=False)
    assert (verdict.text, verdict.action) == (block, "kept")


@pytest.mark.parametrize(
    ("suggestion", "closed"),
    [
        ("compute(a, b", "compute(a, b)"),
        ("[f(x) for x in a", "[f(x) for x in a]"),
        ('print("hello', 'print("hello")'),
        ('{"k": g("(["', '{"k": g("([")}'),
    ],
)
def test_unclosed_suggestion_is_closed_in_line_mode(suggestion: str, closed: str) -> None:
    verdict = checker(FUNC).check(suggestion, line_mode=True)
    assert (verdict.text, verdict.action, verdict.errors_after) == (closed, "closed", 0)


def test_block_mode_trims_instead_of_closing() -> None:
    verdict = checker(FUNC).check("compute(a, b)\n    c = (a", line_mode=False)
    assert (verdict.text, verdict.action) == ("compute(a, b)", "trimmed")


def test_invalid_token_is_trimmed() -> None:
    verdict = checker(FUNC).check("compute(a, b)) + 1", line_mode=True)
    assert (verdict.text, verdict.action) == ("compute(a, b)", "trimmed")
    assert (verdict.errors_before, verdict.errors_after) == (0, 0)


def test_trim_counts_the_rest_of_the_line() -> None:
    verdict = checker("x = |b\n").check("a ", line_mode=True)  # "x = a b" is broken
    assert (verdict.text, verdict.action) == ("a", "trimmed")


def test_an_error_starting_in_the_rest_of_the_line_counts() -> None:
    # "x = a not y": the MISSING "in" sits after the insertion, in the rest of the line.
    assert checker("x = |not y\n").check("a ", line_mode=True).action == "dropped"


def test_errors_outside_the_region_do_not_count() -> None:
    doc = "x = = 1\ndef f(a, b):\n    result = |\n    return = = result\n"
    verdict = checker(doc).check("compute(a, b)", line_mode=True)
    assert (verdict.action, verdict.errors_before, verdict.errors_after) == ("kept", 0, 0)


def test_trim_uses_the_callers_boundaries() -> None:
    suggestion = "compute(a, b)) + 1"
    verdict = checker(FUNC).check(suggestion, line_mode=True, boundaries=[7, 8, 15])
    assert (verdict.text, verdict.action) == ("compute(a, b)", "trimmed")
    assert "com" in candidates("compute(a", [3], True)  # a token end inside a word


def test_trim_checks_at_most_max_candidates() -> None:
    # A cut after "a" and after every "]" but the last: "a" is the last candidate.
    too_far = "a" + " ]" * (MAX_CANDIDATES + 1)
    assert checker(FUNC).check(too_far, line_mode=True).action == "dropped"
    within = "a" + " ]" * MAX_CANDIDATES
    assert checker(FUNC).check(within, line_mode=True).text == "a"


def test_nothing_clean_in_a_clean_region_is_dropped() -> None:
    verdict = checker(FUNC).check(")) ]", line_mode=True)
    assert (verdict.text, verdict.action, verdict.errors_before) == ("", "dropped", 0)


def test_completion_of_a_half_typed_line() -> None:
    half = checker("def f(a, b):\n    if a ==|\n        return b\n")
    verdict = half.check(" b:", line_mode=True)
    assert (verdict.text, verdict.action) == (" b:", "kept")
    assert (verdict.errors_before, verdict.errors_after) == (1, 0)
    assert half.check(" b:)", line_mode=True).text == " b:"
    assert half.check(")", line_mode=True).action == "dropped"  # a second error node
    # The rule counts nodes: tree-sitter folds " b) :" into the half line's one ERROR
    # node, so it adds no error to the region and is accepted.
    verdict = half.check(" b) :", line_mode=True)
    assert (verdict.action, verdict.errors_before, verdict.errors_after) == ("kept", 1, 1)


def test_already_broken_line_accepts_what_adds_no_error() -> None:
    broken = checker("def f(a, b):\n    x = = |\n    return b\n")
    kept = broken.check("2", line_mode=True)
    assert (kept.text, kept.action, kept.errors_before, kept.errors_after) == ("2", "kept", 1, 1)
    trimmed = broken.check("2)]", line_mode=True)
    assert (trimmed.text, trimmed.action, trimmed.errors_after) == ("2", "trimmed", 1)


def test_block_mode_trims_at_line_ends() -> None:
    block = "for x in a:\n        b += x\n    c = = b\n"
    verdict = checker("def f(a, b):\n    |\n    return b\n").check(block, line_mode=False)
    assert (verdict.text, verdict.action) == ("for x in a:\n        b += x", "trimmed")


def test_empty_suggestion_and_empty_document() -> None:
    assert checker(FUNC).check("", line_mode=True).action == "kept"
    verdict = SyntaxChecker("python", "", 0).check("x = (", line_mode=True)
    assert (verdict.text, verdict.action) == ("x = ()", "closed")


# --- check: bytes, points, other languages --------------------------------------------

UNICODE_DOCS = [
    "# 形状 😀\ns = '漢字😀e\u0301'\ndef f(x='😀'):\n    y = |  # 😀 末尾\n    return 漢字\n",
    "# 形状 😀\r\ns = '漢字😀'\r\ndef f(x='😀'):\r\n    y = |  # 😀\r\n    return 漢字\r\n",
    "s = '" + "漢" * 40 + "'\n" * 1 + "t = '😀😀😀'\n" * 8 + "def f():\n    y = |\n    return 1\n",
]


@pytest.mark.parametrize("doc", UNICODE_DOCS)
def test_multibyte_and_crlf_documents(doc: str) -> None:
    check = checker(doc)
    assert check.check("g('漢', \"😀\")", line_mode=True).action == "kept"
    assert check.check("g('漢', \"😀\"))", line_mode=True).text == "g('漢', \"😀\")"
    assert check.check("g('漢', 😀", line_mode=True).action in ("trimmed", "dropped")
    assert check.check("g('漢'", line_mode=True).text == "g('漢')"


@pytest.mark.parametrize("doc", UNICODE_DOCS)
@pytest.mark.parametrize(
    "suggestion", ["", "😀(", "漢字\n    z = 'e\u0301'\n", "1\r\n    w = 2", "3\r", "(\ud800"]
)
def test_incremental_tree_equals_a_fresh_parse(doc: str, suggestion: str) -> None:
    check = checker(doc, tree=parse(doc.replace("|", "", 1)))
    tree = check.tree_with(suggestion)
    assert tree is not None
    after = doc.replace("|", suggestion, 1)
    assert list(nodes(tree)) == list(nodes(parse(after)))


@needs_js
def test_javascript() -> None:
    check = checker("function f(a) {\n  const x = |\n  return x;\n}\n", "javascript")
    assert check.available
    assert check.check("g(a, `b`);", line_mode=True).action == "kept"
    assert check.check("g(a, [1, 2]", line_mode=True).text == "g(a, [1, 2])"
    assert check.check("g(`(${a}`, 1", line_mode=True).text == "g(`(${a}`, 1)"
    assert check.check("g(a, 'b'));", line_mode=True).text == "g(a, 'b')"
    assert check.line_ok("g(a);\n")
    assert not check.line_ok("g(a);\n  const = ;\n")


def test_unknown_language_is_unchecked() -> None:
    check = checker("x = |", "plaintext")
    assert not check.available
    verdict = check.check("(((", line_mode=True)
    assert (verdict.text, verdict.action, verdict.errors_before, verdict.errors_after) == (
        "(((",
        "unchecked",
        0,
        0,
    )
    assert check.line_ok("(((\n")
    assert check.tree_with("x") is None


def test_the_callers_tree_is_not_mutated() -> None:
    doc = UNICODE_DOCS[0].replace("|", "", 1)
    tree = parse(doc)
    before = list(nodes(tree))
    check = SyntaxChecker("python", doc, UNICODE_DOCS[0].index("|"), tree)
    check.check("compute(😀)) + 1\n    z = 2", line_mode=False)
    check.check("g('漢'", line_mode=True)
    check.line_ok("for x in y:\n")
    assert list(nodes(tree)) == before
    assert list(nodes(reparsed(doc, tree))) == before


# Where a base tree edited behind the checker's back gives a wrong incremental tree.
SHIFTY = "x = |\ny = [1, 2, 3]\nz = {'a': (1, 2)}\nw = f(x)(y)[0]\n"


def test_every_check_starts_from_the_unedited_base() -> None:
    check = checker(SHIFTY)
    for suggestion in ("g(a)", "1", "g(a)"):
        tree = check.tree_with(suggestion)
        assert tree is not None
        assert list(nodes(tree)) == list(nodes(parse(SHIFTY.replace("|", suggestion))))


def test_a_later_edit_of_the_callers_tree_does_not_reach_the_checker() -> None:
    doc, cursor = SHIFTY.replace("|", "", 1), SHIFTY.index("|")
    tree = parse(doc)
    check = SyntaxChecker("python", doc, cursor, tree)
    insertion(cursor, (0, cursor), "g(a)").apply(tree)  # the document's next keystrokes
    after = SHIFTY.replace("|", "1", 1)
    new = check.tree_with("1")
    assert new is not None
    assert list(nodes(new)) == list(nodes(parse(after)))


def reparsed(doc: str, tree: Tree) -> Tree:
    """Reparse ``doc`` from ``tree``: wrong if the tree holds an edit nobody made."""
    parser = make_parser("python")
    assert parser is not None
    return parser.parse(doc.encode(), tree)


WEIRD_TEXTS = ["", "x", "😀", "a\r\nb\rc\n", "e\u0301(\n", "s = '\ud800'\n", "\r\n\r\n"]
WEIRD_SUGGESTIONS = ["", "\r\n", "\r", "😀 = (", "x\r\ny\n", "\u0301", "\ud800", "'''", ")]}"]


@pytest.mark.parametrize("text", WEIRD_TEXTS)
def test_never_raises(text: str) -> None:
    for cursor in (-1, 0, len(text) // 2, len(text), len(text) + 1):
        check = SyntaxChecker("python", text, cursor)
        for suggestion in WEIRD_SUGGESTIONS:
            for line_mode in (True, False):
                verdict = check.check(suggestion, line_mode=line_mode, boundaries=[-1, 0, 1, 99])
                assert verdict.action in ("kept", "closed", "trimmed", "dropped")
            check.line_ok(suggestion + "\n")


# --- line_ok --------------------------------------------------------------------------

BODY = "def f(items):\n    |\n    return 1\n"


@pytest.mark.parametrize(
    ("partial", "ok"),
    [
        ("for x in items:\n", True),
        ("while True:\n", True),
        ("x = 1\n", True),
        ("x = = 2\n", False),
        ("foo(]\n", False),
        ("x = 1\n    y = = 2\n", False),
        ("x = = 1\n    y = 2\n", True),  # only the last finished line counts
        ("for x in items:\n        x += 1\n", True),
        ("x = (", True),  # no finished line yet
        ("def g(:\n", True),  # a MISSING node only: MISSING nodes do not count
        ("x = ('漢漢漢漢漢漢' 2)\n", False),  # the ERROR is at the "2", near the line's end
        ("x = ('漢漢漢漢漢漢' 2)\n    y = 1\n", True),
    ],
)
def test_line_ok(partial: str, ok: bool) -> None:
    assert checker(BODY).line_ok(partial) is ok


def test_line_ok_ignores_errors_starting_elsewhere() -> None:
    broken_below = "def f(items):\n    |\n    return = = 1\n"
    assert checker(broken_below).line_ok("x = 1\n")
    # The ERROR starts at "[1," on the line above and runs into the finished line.
    broken_above = "def f(items):\n    x = [1,\n    |\n    return 1\n"
    assert checker(broken_above).line_ok("y = 2\n")


def test_line_ok_judges_the_whole_cursor_line() -> None:
    assert not checker("def f():\n    x = = |\n    return 1\n").line_ok("2\n")


@pytest.mark.parametrize("doc", UNICODE_DOCS)
def test_line_ok_with_multibyte_text(doc: str) -> None:
    check = checker(doc.replace("y = |", "|"))
    assert check.line_ok("y = '漢😀'\n    z = 'e\u0301'\n")
    assert not check.line_ok("y = '漢😀'\n    z = = 'e\u0301'\n")


# --- helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suggestion", "closers"),
    [
        ("f(a, [b", "])"),
        ("f(a, '(['", ")"),
        ("b)", ""),  # closes a bracket opened before the cursor
        ("f(a]", ""),  # mismatched: closing cannot help
        ("f(a,  # (", ""),  # ends inside a comment
        ("f(a], [b", ""),
        ('f("a', '")'),
        ('f("a\\"', '")'),
        ('x = """doc', '"""'),
        ("f(a) + g(b)", ""),
    ],
)
def test_unclosed_closers(suggestion: str, closers: str) -> None:
    assert unclosed_closers(suggestion, PYTHON_LEXICON) == closers


def test_default_cuts() -> None:
    line = "foo(ab, 漢e\u0301)"
    assert [line[:c] for c in default_cuts(line, True)] == [
        "foo",
        "foo(",
        "foo(ab",
        "foo(ab,",
        "foo(ab, 漢e\u0301",
    ]
    assert default_cuts("a\nb\r\nc\n", False) == [1, 3, 6]


def test_candidates_longest_first_stripped_non_blank() -> None:
    assert candidates("  a  b  c", [1, 3, 4, 6, 8, 9, 20], True) == ["  a  b", "  a"]
    assert candidates("x\n  y\n", [2, 6], False) == ["x\n  y", "x"]  # block: line ends
    # Line mode: token ends first, then word and punctuation ends inside tokens ("])").
    assert candidates("a[b])", [1, 3], True) == ["a[b]", "a[b", "a[", "a"]


def test_a_clean_prefix_inside_the_last_token_is_found() -> None:
    # Qwen writes "])" as one token: the clean prefix ends inside it.
    doc = "def f(items, n):\n    value = |\n    return value\n"
    suggestion = "items[n.start : n.end])"
    ends = [5, 6, 7, 8, 13, 15, 17, 18, 21]
    verdict = checker(doc).check(suggestion, line_mode=True, boundaries=ends)
    assert (verdict.text, verdict.action) == ("items[n.start : n.end]", "trimmed")


def test_advance_point_counts_bytes_and_rows_at_newlines_only() -> None:
    assert advance_point((2, 3), "漢😀") == (2, 10)
    assert advance_point((2, 3), "a\r\nb😀\rc") == (3, 7)


def test_error_nodes_range_is_inclusive_for_zero_width_nodes() -> None:
    root = parse("def f(\n:\n  pass\n").root_node  # MISSING ")" at byte 6
    found = {(lo, hi): [n.type for n in error_nodes(root, lo, hi)] for lo, hi in RANGES}
    assert found == {(6, 6): [")"], (0, 6): [")"], (0, 5): [], (7, 20): [], (5, 5): []}


RANGES = [(6, 6), (0, 6), (0, 5), (7, 20), (5, 5)]


def test_error_nodes_range_excludes_a_node_ending_at_lo() -> None:
    root = parse("x = = 2\ny = 3\n").root_node  # ERROR "=" at [4, 5)
    found = {(lo, hi): len(list(error_nodes(root, lo, hi))) for lo, hi in ERROR_RANGES}
    assert found == {(5, 5): 0, (5, 9): 0, (0, 3): 0, (0, 4): 1, (4, 4): 1}


ERROR_RANGES = [(5, 5), (5, 9), (0, 3), (0, 4), (4, 4)]


def test_insertion_edit_in_bytes_and_points() -> None:
    assert insertion(7, (1, 3), "😀漢\r\ne\u0301x") == Insertion(
        7, 7 + 4 + 3 + 2 + 4, (1, 3), (2, 4)
    )
    assert insertion(7, (1, 3), "") == Insertion(7, 7, (1, 3), (1, 3))
    assert advance_point((0, 0), "# 😀\r\n漢 = |"[:-1]) == (1, 6)


def test_a_line_that_leaves_a_bracket_open_is_judged_once_it_closes() -> None:
    check = checker("def f():\n    |\n    return 1\n", "python")
    assert check.line_ok("x = foo(a,\n")  # not judged yet: the call goes on
    assert check.line_ok("x = foo(a,\n        b)\n")
    assert not check.line_ok("x = foo(a,\n        b)) +\n")
    opened = checker("def f():\n    x = foo(|\n    return 1\n", "python")
    assert opened.line_ok("a,\n")  # the bracket was opened before the cursor


def test_a_bracket_the_line_opened_before_the_cursor_is_closed_in_line_mode() -> None:
    check = checker("def f(a, b):\n    return max(len(a|\n", "python")
    verdict = check.check("), len(b)", line_mode=True)
    assert (verdict.text, verdict.action) == ("), len(b))", "closed")
    assert check.check("), len(b)", line_mode=False).action != "closed"


def test_a_broken_line_keeps_no_bracket_the_suggestion_opened_in_line_mode() -> None:
    check = checker("def f(node):\n    if node.type in |\n        return 1\n", "python")
    verdict = check.check("[", line_mode=True)
    assert verdict.action == "dropped"  # "in [" is no better and leaves "[" open
    verdict = check.check('("a", "b"', line_mode=True, boundaries=[4])
    assert not verdict.text.count("(") > verdict.text.count(")")


# --- CPython's parser as the second judge (Python) ----------------------------------
def test_a_header_without_a_body_is_not_kept() -> None:
    # tree-sitter accepts "class A(B):" followed by a line at its own indentation.
    doc = "s = '漢字 🙂'|\nprint(s)\n"
    verdict = checker(doc).check("\n\nclass KeyValueStore(BaseStore):", line_mode=True)
    assert verdict.action == "dropped"
    # tree-sitter alone finds nothing wrong: the drop is CPython's parser's.
    tree = checker(doc).tree_with("\n\nclass KeyValueStore(BaseStore):")
    assert tree is not None and not tree.root_node.has_error


def test_a_header_whose_body_follows_is_kept() -> None:
    doc = "def f(x):|\n        return 1\n"
    verdict = checker(doc).check("\n    if x:", line_mode=True)
    assert (verdict.text, verdict.action) == ("\n    if x:", "kept")


def test_an_unexpected_indent_is_not_kept() -> None:
    doc = "class A:\r\n    def __init__(self, result):\n        self.x = 1|\n        return\n"
    # Moved left to its block: kept as the line the model meant.
    moved = checker(doc).check("\n            self.result = result", line_mode=True)
    assert (moved.text, moved.action) == ("\n        self.result = result", "trimmed")
    # Under a header the deeper line is the body: not moved.
    header = "def f(x):\n    if x:|\n    return x\n"
    assert checker(header).check("\n        x += 1", line_mode=True).action == "kept"
    # The same line at the body's indentation parses.
    kept = checker(doc).check("\n        self.result = result", line_mode=True)
    assert kept.action == "kept"
    # Below a header: moved to the body that follows (Qwen's extra four spaces).
    init = "class E:\n    def __init__(self, result):|\n        super().__init__()\n"
    under = checker(init).check("\n            self.result = result", line_mode=True)
    assert (under.text, under.action) == ("\n        self.result = result", "trimmed")


def test_a_line_the_next_line_cannot_follow_is_not_kept() -> None:
    # The removed line opened a block: a docstring in its place leaves the body orphaned.
    doc = "def f(p):|\n        return p\n"
    assert checker(doc).check('\n    """Doc."""', line_mode=True).text == ""


def test_line_mode_never_leaves_a_bracket_it_opened_open() -> None:
    # tree-sitter reports the open "(" rows further down, outside the region it checks.
    doc = (
        'class Template:\n    """A compiled template."""\n\n    def __i|\n        self._fn = fn\n\n'
        "    def render(self, context: dict[str, Any] | None = None) -> str:\n"
        "        return self._fn(context)\n"
    )
    verdict = checker(doc).check("nit__(", line_mode=True)
    assert not unclosed_closers(verdict.text, PYTHON_LEXICON), verdict


def test_the_parser_judge_attributes_only_errors_near_the_suggestion() -> None:
    from completion.python_parse import Judge

    far_error = "x = 1\ny = \n" + "z = 2\n" * 5 + "def broken(:\n    pass\n"
    cursor = far_error.index("y = ") + 4
    judge = Judge.of(far_error[:cursor], far_error[cursor:])
    assert judge is not None
    assert judge.errors_before() == 1  # the half line: its row
    assert judge.added_error("3") == 0  # fixed; the first error now is the old far one
    assert judge.added_error("3\nif y:") == 1  # a header with no body, right here
    assert judge.added_error("(") == 1  # "(" never closed: reported at its row
    assert Judge.of("x" * 200_000, "y") is None  # too long to judge


def test_what_tree_sitter_accepts_on_one_line_cpython_may_not() -> None:
    # "textwrap. re" is textwrap.re; "limit" after it is no Python.
    doc = "import textwrap\n\n\ndef fmt(s):\n    return textwrap.|\n"
    verdict = checker(doc).check(" re limit", line_mode=True, boundaries=[3])
    assert (verdict.text, verdict.action) == (" re", "trimmed")


def test_the_parser_judges_the_top_level_statements_around_the_cursor() -> None:
    doc = (
        "import os\n\n\ndef a():\n    x = |1\n\n\n# c\ndef b():\n    return 2\n\n\n"
        "def broken(:\n    pass\n"
    )
    check = checker(doc)
    assert check._window_rows() == (3, 9)  # from def a to the end of def b
    # The error in broken() is outside the window: what parses around it is kept.
    assert check.check("2 + ", line_mode=True).action == "kept"  # x = 2 + 1
    assert check.check("2 if", line_mode=True).text == "2"  # x = 2 if1


def test_a_bracket_the_lines_below_close_is_kept() -> None:
    doc = "PRICES = |\n    'a': 1,\n    '漢字': 2,\n}\n"
    assert checker(doc).check("{", line_mode=True).action == "kept"
    params = "class A:\n    def __i|\n        self,\n        fn,\n    ) -> None:\n        pass\n"
    assert checker(params).check("nit__(", line_mode=True).text == "nit__("


def test_a_first_line_indented_past_the_cursor_s_indentation_is_trimmed() -> None:
    # The cursor after the body's indentation; the model writes four spaces more.
    doc = "def walk(n):\n    |\n    return n\n"
    suggestion = "    for child in n.children:\n        walk(child)"
    verdict = checker(doc).check(suggestion, line_mode=False)
    assert (verdict.text, verdict.action) == (
        "for child in n.children:\n        walk(child)",
        "trimmed",
    )
    # At column 0 the indentation is the suggestion's own: kept.
    flat = checker("def walk(n):\n|\n    return n\n")
    assert flat.check("    print(n)", line_mode=False).action == "kept"


def test_comments_alone_are_not_kept_where_the_code_is_broken() -> None:
    # The body of the if is missing: a comment fixes nothing, a statement does.
    doc = "def f(t):\n    while t:\n        if t.p:\n            |\n        t = t.p\n"
    comment = checker(doc).check("#            if t.parent is None:", line_mode=False)
    assert (comment.text, comment.action) == ("", "dropped")
    assert checker(doc).check("break", line_mode=False).action == "kept"
    # With code in it, a suggestion that leaves the error as it was is kept.
    still = checker("x = (1,\n|\ny = 2\n").check("# one\n2,", line_mode=False)
    assert (still.text, still.action) == ("# one\n2,", "kept")


def _window_suggestions(truth: str) -> list[str]:
    """Variants of the real text at a position: itself, broken ones, a header, lines."""
    return [truth, truth + "(", truth[:-1], truth + ":", truth + " x y", truth + "\n"]


@pytest.mark.parametrize("crlf", [False, True])
@pytest.mark.parametrize("source", ["nested_blocks.py", "textwrap"])
def test_the_parser_judge_on_a_window_agrees_with_the_judge_on_the_whole_file(
    source: str, crlf: bool
) -> None:
    import random
    import textwrap

    from completion.python_parse import Judge

    path = Path(textwrap.__file__) if source == "textwrap" else DATA / source
    full = path.read_text(encoding="utf-8")
    full = full.replace("\n", "\r\n") if crlf else full
    rng = random.Random(7)
    narrowed = compared = 0
    for _ in range(300):
        cursor = rng.randrange(len(full))
        lines = rng.choice([1, 3])  # the rest of the cursor's line, or three lines
        end = cursor
        for _ in range(lines):
            found = full.find("\n", end + 1)
            end = found if found >= 0 else len(full)
        text = full[:cursor] + full[end:]
        check = SyntaxChecker("python", text, cursor)
        if check._windows[0].indent == "":
            continue  # the top-level window: not narrowed
        narrowed += 1
        whole = Judge.of(text[:cursor], text[cursor:])
        assert whole is not None
        for suggestion in _window_suggestions(full[cursor:end]):
            judge = check._judge_for(suggestion)
            assert judge is not None
            compared += 1
            assert judge.added_error(suggestion) == whole.added_error(suggestion), (
                text[:cursor][-80:],
                suggestion,
            )
    assert narrowed >= 40 and compared >= 240


def test_a_window_is_the_innermost_statement_the_suggestion_stays_inside() -> None:
    doc = (DATA / "nested_blocks.py").read_text(encoding="utf-8")
    cursor = doc.index("out.append(book.upper())") + len("out.append(")
    check = SyntaxChecker("python", doc, cursor)
    rows = doc.split("\n")
    first = rows.index('            if book.startswith("漢"):')
    last = rows.index("                continue")
    assert check._windows[0] == (first, last, " " * 12)  # the if, with its elif and else
    assert check._windows[1].indent == " " * 8  # the for
    # A line at the if's own depth would join the elif below: judged in the for's window.
    judge = check._judge_for("x)\n            else:\n")
    assert judge is not None and judge.indent == " " * 8
