"""Document edit replay, TextEdit coordinates and the incremental syntax tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from completion.syntax import exact_tree, make_parser
from lsp_server.documents import Document, DocumentStore, UnknownDocumentError
from tooling.edit_oracle import nodes

ENCODINGS = ("utf-8", "utf-16", "utf-32")
CODECS = {"utf-8": ("utf-8", 1), "utf-16": ("utf-16-le", 2), "utf-32": ("utf-32-le", 4)}


##### Independent reference converter #####


def ref_lines(text: str) -> list[tuple[int, int]]:
    """(start, content_end) str offsets of every LSP line."""
    lines = []
    start = 0
    i = 0
    while i < len(text):
        if text.startswith("\r\n", i):
            lines.append((start, i))
            i += 2
            start = i
        elif text[i] in "\r\n":
            lines.append((start, i))
            i += 1
            start = i
        else:
            i += 1
    lines.append((start, len(text)))
    return lines


def ref_units(s: str, encoding: str) -> int:
    codec, width = CODECS[encoding]
    return len(s.encode(codec)) // width


def ref_position(text: str, offset: int, encoding: str) -> tuple[int, int]:
    for line, (start, end) in enumerate(ref_lines(text)):
        if start <= offset <= end:
            return line, ref_units(text[start:offset], encoding)
    raise AssertionError(f"offset {offset} is inside a line break")


def ref_offset(text: str, line: int, character: int, encoding: str) -> int:
    """LSP position to str offset, clamping like the LSP spec asks for edits."""
    lines = ref_lines(text)
    if line >= len(lines):
        return len(text)
    start, end = lines[line]
    for offset in range(start, end + 1):
        if ref_units(text[start:offset], encoding) >= character:
            return offset
    return end


def ref_bytes(text: str, offset: int) -> int:
    return len(text[:offset].encode("utf-8"))


def ref_point(text: str, offset: int) -> tuple[int, int]:
    head = text[:offset]
    row = head.count("\n")
    col = len(head.split("\n")[-1].encode("utf-8"))
    return row, col


def inside_crlf(text: str, offset: int) -> bool:
    return 0 < offset < len(text) and text[offset - 1] == "\r" and text[offset] == "\n"


##### tree comparison #####


def assert_same_tree(doc: Document) -> None:
    fresh = make_parser("python").parse(doc.text.encode("utf-8"))
    assert nodes(doc.tree) == nodes(fresh), repr(doc.text)


PY_SOURCE = (
    "# -*- coding: utf-8 -*- 形状 😀\r\n"
    "import os\r\n"
    "\n"
    "def 形状(x, y='😀'):\n"
    '    """Docstring with CJK 漢字 and emoji 🙂."""\r\n'
    "    total = x + y  # 注释 😀\n"
    "    if total:\r\n"
    "        return '形' * 3\n"
    "    return None\n"
    "\n"
    "class Shape:\n"
    "    name = '😀😀'\r\n"
    "    def area(self):\n"
    "        return len(self.name)\n"
)

SNIPPETS = [
    "x",
    " ",
    "1",
    "😀",
    "形状",
    "'😀'",
    "\n",
    "\r\n",
    "\r",
    "    ",
    "(",
    ")",
    ":",
    " = ",
    "def g():\n    pass\n",
    "# 注释 🙂\r\n",
    "if x:\r\n        y = '形'\n",
    '"""',
    "é",
]


##### Random edit replay against str slicing #####


@st.composite
def lsp_range(draw, text: str, encoding: str):
    """A (start, end) LSP range in ``encoding`` plus the str offsets it must resolve to.

    Mostly short ranges (typing, small deletions) so that the syntax tree after the edit
    still has reusable nodes; sometimes positions that need clamping.
    """
    lines = ref_lines(text)

    def at(offset: int):
        if inside_crlf(text, offset):
            offset -= 1
        return ref_position(text, offset, encoding), offset

    def clamped():
        if draw(st.booleans()):
            line = len(lines) + draw(st.integers(0, 3))
            return (line, draw(st.integers(0, 5))), len(text)
        line = draw(st.integers(0, len(lines) - 1))
        start, end = lines[line]
        extra = draw(st.integers(1, 4))
        return (line, ref_units(text[start:end], encoding) + extra), end

    kind = draw(st.sampled_from(["short", "short", "short", "any", "clamped"]))
    first = at(draw(st.integers(0, len(text))))
    if kind == "short":
        second = at(min(len(text), first[1] + draw(st.integers(0, 4))))
    elif kind == "any":
        second = at(draw(st.integers(0, len(text))))
    else:
        second = clamped()
    if draw(st.booleans()):
        first, second = second, first
    (p1, o1), (p2, o2) = first, second
    return p1, p2, o1, o2


TEXT_ALPHABET = st.sampled_from(["a", "b", " ", "é", "形", "😀", "\n", "\r\n", "\r", "\t"])
TEXTS = st.lists(TEXT_ALPHABET, max_size=30).map("".join)


def check_edit(edit, old: str, new: str, a: int, b: int, inserted: str) -> None:
    assert (edit.start, edit.old_end, edit.new_end) == (a, b, a + len(inserted))
    assert edit.inserted == inserted
    assert edit.start_byte == ref_bytes(old, a)
    assert edit.old_end_byte == ref_bytes(old, b)
    assert edit.new_end_byte == ref_bytes(new, a + len(inserted))
    assert edit.start_point == ref_point(old, a)
    assert edit.old_end_point == ref_point(old, b)
    assert edit.new_end_point == ref_point(new, a + len(inserted))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(TEXTS, st.data())
def test_random_edits_match_str_slicing(initial, data):
    doc = Document.open("file:///t.txt", initial, 1, "plaintext")
    expected = initial
    for _ in range(data.draw(st.integers(1, 8))):
        encoding = data.draw(st.sampled_from(ENCODINGS))
        start, end, o1, o2 = data.draw(lsp_range(expected, encoding))
        assert ref_offset(expected, *start, encoding) == o1
        assert ref_offset(expected, *end, encoding) == o2
        inserted = data.draw(TEXTS)
        a, b = min(o1, o2), max(o1, o2)
        old = expected
        expected = old[:a] + inserted + old[b:]
        edit = doc.apply_change(start, end, inserted, encoding)
        assert doc.text == expected
        check_edit(edit, old, expected, a, b, inserted)


def reference_replay(tree, parser, old: str, new: str, a: int, b: int, inserted: str):
    """Edit and reparse an independent tree with coordinates computed here."""
    end = a + len(inserted)
    tree.edit(
        ref_bytes(old, a),
        ref_bytes(old, b),
        ref_bytes(new, end),
        ref_point(old, a),
        ref_point(old, b),
        ref_point(new, end),
    )
    return parser.parse(new.encode("utf-8"), tree)


# Quote characters can open or close strings far from the edit; after such edits
# tree-sitter's incremental reparse of an erroneous tree is not always identical to a
# fresh parse, whoever computes the edit (an upstream limitation, see
# test_incremental_tree_matches_reference_replay). Without them it always is.
QUOTE_FREE_SNIPPETS = [s for s in SNIPPETS if "'" not in s and '"' not in s]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_incremental_tree_matches_fresh_parse(data):
    doc = Document.open("file:///t.py", PY_SOURCE, 1, "python")
    assert_same_tree(doc)
    expected = PY_SOURCE
    for _ in range(data.draw(st.integers(1, 10))):
        encoding = data.draw(st.sampled_from(ENCODINGS))
        start, end, o1, o2 = data.draw(lsp_range(expected, encoding))
        inserted = "".join(data.draw(st.lists(st.sampled_from(QUOTE_FREE_SNIPPETS), max_size=3)))
        a, b = min(o1, o2), max(o1, o2)
        old = expected
        expected = old[:a] + inserted + old[b:]
        edit = doc.apply_change(start, end, inserted, encoding)
        assert doc.text == expected
        check_edit(edit, old, expected, a, b, inserted)
        assert_same_tree(doc)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_incremental_tree_matches_fresh_parse_with_quotes(data):
    """All snippets, quotes included: the tree completions use equals a fresh parse.

    That is the document's incremental tree where the text has no errors; with errors,
    tree-sitter's incremental error recovery can end differently
    (tree-sitter/tree-sitter#4001), and the engine parses the text again
    (:func:`completion.syntax.exact_tree`).
    """
    doc = Document.open("file:///t.py", PY_SOURCE, 1, "python")
    expected = PY_SOURCE
    for _ in range(data.draw(st.integers(1, 10))):
        encoding = data.draw(st.sampled_from(ENCODINGS))
        start, end, o1, o2 = data.draw(lsp_range(expected, encoding))
        inserted = "".join(data.draw(st.lists(st.sampled_from(SNIPPETS), max_size=3)))
        a, b = min(o1, o2), max(o1, o2)
        old = expected
        expected = old[:a] + inserted + old[b:]
        edit = doc.apply_change(start, end, inserted, encoding)
        check_edit(edit, old, expected, a, b, inserted)
        fresh = make_parser("python").parse(expected.encode("utf-8"))
        assert nodes(exact_tree(doc.tree, doc.text, "python")) == nodes(fresh)
        if not fresh.root_node.has_error:
            assert nodes(doc.tree) == nodes(fresh), repr(doc.text)


def test_quote_edits_where_incremental_parsing_differs_from_a_fresh_parse():
    """After these quote edits tree-sitter's incremental tree (the document's) differs
    from a fresh parse (tree-sitter 0.26); the tree completions use does not."""
    src = "def f():\n    a = 1\n    b = 2\n\nclass C:\n    x = 1\n"
    parser = make_parser("python")
    tree = parser.parse(src.encode("utf-8"))
    text = src
    for offset, inserted in ((src.index("b = 2"), '"""'), (src.index("lass C") + 3, '"""')):
        new = text[:offset] + inserted + text[offset:]
        tree = reference_replay(tree, parser, text, new, offset, offset, inserted)
        text = new
    assert text == 'def f():\n    a = 1\n    """b = 2\n\nc"""lass C:\n    x = 1\n'
    doc = Document.open("file:///t.py", src, 1, "python")
    assert doc.tree is not None  # read after open and after each edit, like the replay
    doc.apply_change((2, 4), (2, 4), '"""', "utf-16")
    assert doc.tree is not None
    doc.apply_change((4, 1), (4, 1), '"""', "utf-16")
    assert doc.text == text
    assert nodes(doc.tree) == nodes(tree)  # exactly what the incremental API gives
    fresh = parser.parse(text.encode("utf-8"))
    assert nodes(exact_tree(doc.tree, doc.text, "python")) == nodes(fresh)


@pytest.mark.parametrize(
    ("before", "start", "inserted"),
    [
        ("\x00\x00🇫é\r\nimport os\n ", (0, 0), "ạ̈[]<|file_sep|>\r"),
        (
            "\"éạ̈x🇫🇷ạ̈s =<f<|file_sep|><|\r\n好，世界'\n<fim_mi<fim_middle> f(a, b):\nb):\n",
            (0, 1),
            "é",
        ),
    ],
)
def test_error_recoveries_the_edit_oracle_found(before, start, inserted) -> None:
    """Texts the edit oracle (tooling/edit_oracle.py) found where they differ."""
    doc = Document.open("file:///t.py", before, 1, "python")
    assert doc.tree is not None
    doc.apply_change(start, start, inserted, "utf-16")
    fresh = make_parser("python").parse(doc.text.encode("utf-8"))
    assert nodes(exact_tree(doc.tree, doc.text, "python")) == nodes(fresh)


def test_typing_a_line_keeps_tree_in_step():
    doc = Document.open("file:///t.py", PY_SOURCE, 1, "python")
    base = PY_SOURCE.index("    return None")
    typed = "形 = '😀'\r\n"
    for i, ch in enumerate(typed):
        # One character at a time, at UTF-16 positions ("\r" then "\n" merge into CRLF).
        pos = ref_position(doc.text, base + i, "utf-16")
        doc.apply_change(pos, pos, ch, "utf-16")
        assert_same_tree(doc)
    assert doc.text == PY_SOURCE[:base] + typed + PY_SOURCE[base:]


def test_delete_whole_document_and_retype():
    doc = Document.open("file:///t.py", PY_SOURCE, 1, "python")
    lines = ref_lines(PY_SOURCE)
    edit = doc.apply_change((0, 0), (len(lines), 0), "", "utf-16")
    assert doc.text == ""
    assert edit.old_end == len(PY_SOURCE)
    assert edit.old_end_point == ref_point(PY_SOURCE, len(PY_SOURCE))
    assert_same_tree(doc)
    doc.apply_change((0, 0), (0, 0), PY_SOURCE, "utf-8")
    assert doc.text == PY_SOURCE
    assert_same_tree(doc)


##### Lazy tree #####

DATA = Path(__file__).resolve().parents[1] / "data"


class CountingParser:
    """Wraps a tree-sitter parser; records every parse (True: incremental, from a tree)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls: list[bool] = []

    def parse(self, source: bytes, old_tree=None):
        self.calls.append(old_tree is not None)
        if old_tree is None:
            return self.inner.parse(source)
        return self.inner.parse(source, old_tree)


@pytest.fixture
def counting(monkeypatch) -> list[CountingParser]:
    """Documents opened from now on get a :class:`CountingParser` (listed here)."""
    made: list[CountingParser] = []

    def make(language_id: str):
        inner = make_parser(language_id)
        if inner is None:
            return None
        made.append(CountingParser(inner))
        return made[-1]

    monkeypatch.setattr("lsp_server.documents.make_parser", make)
    return made


def type_line(doc: Document, offset: int, typed: str) -> None:
    """Type ``typed`` at str ``offset`` one character at a time (UTF-16 positions)."""
    for i, ch in enumerate(typed):
        pos = ref_position(doc.text, offset + i, "utf-16")
        doc.apply_change(pos, pos, ch, "utf-16")


@pytest.mark.parametrize("name", ["sample_unicode.py", "sample_crlf.py"])
def test_edits_do_not_parse_until_the_tree_is_read(counting, name: str) -> None:
    src = (DATA / name).read_bytes().decode("utf-8") + PY_SOURCE  # emoji, CJK, CRLF
    store = DocumentStore()
    doc = store.open("file:///t.py", src, 1, "python")
    typed = "形 = '😀'  # 注释\r\n"
    type_line(doc, src.rindex("    return None"), typed)
    doc.replace_all(doc.text + "x = 1\r\n")
    (parser,) = counting
    assert parser.calls == []  # open, a typed line and a full replace: no parse
    assert_same_tree(doc)
    assert parser.calls == [False]  # first read: one parse from scratch
    assert_same_tree(doc)
    assert parser.calls == [False]  # no edit since: the same tree
    type_line(doc, 0, typed)
    doc.apply_change((0, 0), (1, 0), "", "utf-16")
    assert parser.calls == [False]  # edits only mark the tree
    assert_same_tree(doc)
    assert parser.calls == [False, True]  # one incremental reparse for all of them


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_several_edits_between_reads_match_fresh_parse(data):
    """Edits batched between two reads of the tree: one incremental reparse, same tree."""
    doc = Document.open("file:///t.py", PY_SOURCE, 1, "python")
    assert_same_tree(doc)
    for _ in range(data.draw(st.integers(1, 4))):
        for _ in range(data.draw(st.integers(1, 5))):
            encoding = data.draw(st.sampled_from(ENCODINGS))
            start, end, _, _ = data.draw(lsp_range(doc.text, encoding))
            snippets = st.lists(st.sampled_from(QUOTE_FREE_SNIPPETS), max_size=3)
            doc.apply_change(start, end, "".join(data.draw(snippets)), encoding)
        assert_same_tree(doc)


def test_no_grammar_no_parse(counting) -> None:
    doc = Document.open("file:///t.txt", "形 😀\r\nplain", 1, "plaintext")
    doc.apply_change((0, 0), (0, 0), "x", "utf-16")
    assert doc.parser is None and doc.tree is None and counting == []


def test_reversed_range_is_normalised():
    doc = Document.open("file:///t.txt", "abc\ndef", 1, "plaintext")
    edit = doc.apply_change((1, 2), (0, 1), "X", "utf-16")
    assert doc.text == "aXf"
    assert (edit.start, edit.old_end) == (1, 6)


##### replace_all #####


def test_replace_all():
    doc = Document.open("file:///t.py", PY_SOURCE, 1, "python")
    new = "x = '😀'\r\ny = 形状\n"
    edit = doc.replace_all(new)
    assert doc.text == new
    check_edit(edit, PY_SOURCE, new, 0, len(PY_SOURCE), new)
    assert_same_tree(doc)
    edit = doc.replace_all("")
    assert doc.text == ""
    check_edit(edit, new, "", 0, len(new), "")
    assert_same_tree(doc)


def test_index_follows_text():
    doc = Document.open("file:///t.txt", "a\nb", 1, "plaintext")
    assert doc.index.starts == (0, 2)
    doc.apply_change((1, 1), (1, 1), "\r\nc", "utf-16")
    assert doc.text == "a\nb\r\nc"
    assert doc.index.starts == (0, 2, 5)
    doc.replace_all("zz")
    assert doc.index.starts == (0,)


##### Store #####


def test_store_open_get_close():
    store = DocumentStore()
    doc = store.open("file:///a.py", "x = 1\n", 3, "python")
    assert store.get("file:///a.py") is doc
    assert doc.version == 3
    assert doc.language_id == "python"
    assert doc.tree is not None
    assert len(store) == 1
    assert list(store) == [doc]
    reopened = store.open("file:///a.py", "y = 2\n", 4, "python")
    assert store.get("file:///a.py") is reopened
    assert len(store) == 1
    store.close("file:///a.py")
    store.close("file:///a.py")  # closing twice is harmless
    assert len(store) == 0


def test_store_unknown_uri():
    store = DocumentStore()
    with pytest.raises(UnknownDocumentError):
        store.get("file:///missing.py")
    with pytest.raises(KeyError):  # UnknownDocumentError is a KeyError
        store.get("file:///missing.py")


def test_store_iterates_least_recently_used_first() -> None:
    store = DocumentStore()
    for name in ("a", "b", "c"):
        store.open(f"file:///{name}.py", "x = 1\n", 1, "python")
    store.mark_used("file:///a.py")
    store.mark_used("file:///gone.py")  # not open: ignored
    assert [d.uri for d in store] == ["file:///b.py", "file:///c.py", "file:///a.py"]
