"""Syntax check of a completion suggestion: never leave the file less parseable.

A :class:`SyntaxChecker` is built once per completion for one document snapshot
(``text``, the cursor's str offset, optionally the document's tree). Each
:meth:`SyntaxChecker.check` inserts a suggestion at the cursor, reparses incrementally
from a copy of the base tree (the base is never edited) and counts the tree-sitter
``ERROR`` and ``MISSING`` nodes that overlap the *region*: the rows from the cursor's
row to the last row of the inserted text, i.e. the cursor's line plus what the
suggestion adds to it. A suggestion with no such node is kept; a line-mode suggestion
that only forgot to close what it opened is closed; otherwise it is trimmed to its
longest clean prefix, or dropped.

The criterion is local on purpose: comparing the whole tree before and after ("no new
error node") misses breakage where the cursor's line is half typed, because tree-sitter
reuses the half line's error node for the broken completion. Where the region was
already broken before the suggestion, a suggestion that does not add errors to it is
accepted (see :meth:`SyntaxChecker.check`).

Coordinates: str offsets are code points; tree-sitter works in UTF-8 bytes and points
``(row, byte column)`` with rows split at ``\\n`` only (a ``\\r`` is an ordinary byte).

One check is one incremental parse plus a walk that only descends into subtrees that
have an error and overlap the region (about a millisecond on a 2,000-line file); a
suggestion that is closed or trimmed costs up to 1 + :data:`MAX_CANDIDATES` more parses.
"""

from __future__ import annotations

import functools
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from tree_sitter import Node, Parser, Tree

from completion.python_parse import Judge, fits, next_code_line
from completion.syntax import grammar_name, make_parser

MAX_CANDIDATES = 16
"""Trimming checks at most this many prefixes, longest first."""

COMPOUND = frozenset(
    {
        "class_definition",
        "decorated_definition",
        "for_statement",
        "function_definition",
        "if_statement",
        "match_statement",
        "try_statement",
        "while_statement",
        "with_statement",
    }
)
"""Python statements a judge's window may be narrowed to (see ``SyntaxChecker._inner_windows``).

CPython's parser takes any of them alone once dedented: ``return``, ``await`` and
``break`` outside a function or loop are the compiler's errors, not the parser's."""

CLOSERS = {"(": ")", "[": "]", "{": "}"}
OPENERS = {v: k for k, v in CLOSERS.items()}


class Errors(NamedTuple):
    """What is wrong in the region with a text inserted, by each judge."""

    tree: int
    """tree-sitter ERROR/MISSING nodes overlapping the region."""
    parser: int = 0
    """Python: 1 when CPython's parser reports an error the text added near it."""

    @property
    def clean(self) -> bool:
        """No judge finds anything."""
        return self.tree == 0 and self.parser == 0

    def no_worse_than(self, other: Errors) -> bool:
        """No judge finds more than in ``other``."""
        return self.tree <= other.tree and self.parser <= other.parser


@dataclass(frozen=True)
class SyntaxVerdict:
    """What to show for one suggestion, and why."""

    text: str
    """The suggestion to show: unchanged, trimmed, closed, or ``""``."""
    action: str
    """``"kept"``: ``text`` is the suggestion, unchanged; ``"closed"``: the suggestion
    plus the closing quote/brackets it left open; ``"trimmed"``: a prefix of it;
    ``"dropped"``: nothing survived (``text == ""``); ``"unchecked"``: no grammar."""
    errors_before: int
    """ERROR/MISSING nodes overlapping the cursor's line with no suggestion."""
    errors_after: int
    """ERROR/MISSING nodes overlapping the region with ``text`` inserted (tree-sitter's:
    CPython's verdict for Python, :mod:`completion.python_parse`, decides but is not
    counted here)."""
    ms: float
    """Wall time the check took, in milliseconds."""


class Window(NamedTuple):
    """Rows of the document CPython's parser judges (inclusive), and their indentation."""

    first: int
    last: int
    indent: str


@dataclass(frozen=True)
class Lexicon:
    """What a bracket scanner must skip in one language: strings and comments."""

    quotes: str
    line_comment: str
    block_comment: tuple[str, str] | None
    triple_quotes: bool = False


PYTHON_LEXICON = Lexicon("'\"", "#", None, triple_quotes=True)
C_LIKE_LEXICON = Lexicon("'\"`", "//", ("/*", "*/"))
LEXICONS: dict[str, Lexicon] = {
    "python": PYTHON_LEXICON,
    "rust": Lexicon('"', "//", ("/*", "*/")),  # ' starts a lifetime as often as a char
}
"""Grammar name -> lexicon; any other grammar is C-like (JavaScript, TypeScript, Go)."""


def utf8_len(s: str) -> int:
    """Length of ``s`` in UTF-8 bytes (lone surrogates count as 3, as they are encoded)."""
    return len(s.encode("utf-8", "surrogatepass"))


def advance_point(point: tuple[int, int], inserted: str) -> tuple[int, int]:
    """tree-sitter point reached after inserting ``inserted`` at ``point``."""
    rows = inserted.count("\n")
    if rows == 0:
        return point[0], point[1] + utf8_len(inserted)
    return point[0] + rows, utf8_len(inserted[inserted.rfind("\n") + 1 :])


class Insertion(NamedTuple):
    """A ``Tree.edit`` that inserts text (nothing is removed: old end = start)."""

    start_byte: int
    new_end_byte: int
    start_point: tuple[int, int]
    new_end_point: tuple[int, int]

    def apply(self, tree: Tree) -> None:
        """Edit ``tree`` (in place) for this insertion."""
        tree.edit(
            start_byte=self.start_byte,
            old_end_byte=self.start_byte,
            new_end_byte=self.new_end_byte,
            start_point=self.start_point,
            old_end_point=self.start_point,
            new_end_point=self.new_end_point,
        )


def insertion(start_byte: int, start_point: tuple[int, int], inserted: str) -> Insertion:
    """The edit for inserting ``inserted`` at ``start_byte`` / ``start_point``."""
    end_point = advance_point(start_point, inserted)
    return Insertion(start_byte, start_byte + utf8_len(inserted), start_point, end_point)


def error_nodes(root: Node, lo: int, hi: int) -> Iterator[Node]:
    """ERROR and MISSING nodes under ``root`` that overlap the byte range ``[lo, hi]``.

    A node ``[start, end)`` overlaps when ``start <= hi`` and ``end > lo``; a zero-width
    (MISSING) node when ``lo <= start <= hi``. Only subtrees that have an error and
    overlap the range are visited, and only the children that can overlap it are listed.
    """
    stack = [root] if _may_hold(root, lo, hi) else []
    while stack:
        node = stack.pop()
        if (node.is_error or node.is_missing) and _overlaps(node, lo, hi):
            yield node
        if not node.has_error:
            continue
        cursor = node.walk()
        # The first child that "contains or starts after" lo - 1 is the first that can
        # overlap: it ends at lo or later (a zero-width child at lo included).
        found = cursor.goto_first_child_for_byte(lo - 1) if lo > 0 else cursor.goto_first_child()
        if found is None or found is False:
            continue
        while True:
            child = cursor.node
            if child is None or child.start_byte > hi:
                break
            if child.has_error and _may_hold(child, lo, hi):
                stack.append(child)
            if not cursor.goto_next_sibling():
                break


def _overlaps(node: Node, lo: int, hi: int) -> bool:
    """Whether ``node`` overlaps ``[lo, hi]`` (see :func:`error_nodes`)."""
    start, end = node.start_byte, node.end_byte
    return start <= hi and (end > lo or start >= lo)


def _may_hold(node: Node, lo: int, hi: int) -> bool:
    """Whether a descendant of ``node`` can overlap ``[lo, hi]``.

    Inclusive at ``lo``: a node ending there may end with a zero-width child there.
    """
    return node.start_byte <= hi and node.end_byte >= lo


def unclosed_closers(suggestion: str, lexicon: Lexicon) -> str:
    """The closing quote and brackets that ``suggestion`` left open, innermost first.

    ``'f("a'`` -> ``'")'``. ``""`` when there is nothing to close or closing cannot help:
    a closer that does not match its opener, or a suggestion that ends inside a comment.
    Brackets inside strings and comments do not count; closers of brackets opened before
    the suggestion (``b)`` after ``f(a, ``) are ignored.
    """
    stack: list[str] = []
    i, n = 0, len(suggestion)
    while i < n:
        skipped = _skip_comment(suggestion, i, lexicon)
        if skipped is not None:
            if skipped < 0:
                return ""
            i = skipped
            continue
        ch = suggestion[i]
        if ch in lexicon.quotes:
            delim = _quote_delimiter(suggestion, i, lexicon)
            end = _string_end(suggestion, i + len(delim), delim)
            if end < 0:
                return delim + "".join(CLOSERS[b] for b in reversed(stack))
            i = end
            continue
        if ch in CLOSERS:
            stack.append(ch)
        elif ch in OPENERS and stack:
            if stack[-1] != OPENERS[ch]:
                return ""
            stack.pop()
        i += 1
    return "".join(CLOSERS[b] for b in reversed(stack))


def _skip_comment(s: str, i: int, lexicon: Lexicon) -> int | None:
    """Offset after the comment starting at ``i``.

    None when no comment starts there, -1 when it runs to the end of ``s`` (a line comment
    ends at its ``\\n``).
    """
    if lexicon.line_comment and s.startswith(lexicon.line_comment, i):
        end = s.find("\n", i)
        return -1 if end < 0 else end + 1
    if lexicon.block_comment and s.startswith(lexicon.block_comment[0], i):
        opener, closer = lexicon.block_comment
        end = s.find(closer, i + len(opener))
        return -1 if end < 0 else end + len(closer)
    return None


def _quote_delimiter(s: str, i: int, lexicon: Lexicon) -> str:
    """The string delimiter starting at ``i`` (a quote, or a triple quote)."""
    triple = s[i] * 3
    if lexicon.triple_quotes and s.startswith(triple, i):
        return triple
    return s[i]


def _string_end(s: str, i: int, delim: str) -> int:
    """Offset after the string body starting at ``i`` and closed by ``delim``.

    -1 when the string is still open at the end of ``s``. A ``'`` or ``"`` string ends
    (unterminated) at a newline; a backslash escapes the next character.
    """
    n = len(s)
    while i < n:
        if s[i] == "\\":
            i += 2
            continue
        if s.startswith(delim, i):
            return i + len(delim)
        if s[i] == "\n" and delim in ("'", '"'):
            return i + 1
        i += 1
    return -1


def indent_width(line: str) -> int:
    """The spaces and tabs that open ``line``."""
    return len(line) - len(line.lstrip(" \t"))


def _char_class(ch: str) -> int:
    """0 whitespace, 1 word character (letters, digits, marks, ``_``), 2 punctuation."""
    if ch.isspace():
        return 0
    if ch == "_" or unicodedata.category(ch)[0] in "LNM":
        return 1
    return 2


def default_cuts(suggestion: str, line_mode: bool) -> list[int]:
    """Cut points (str offsets, ascending, ``0 < cut < len``) when the caller gives none.

    Line mode: after every word (a run of word characters) and after every punctuation
    character. Block mode: every line end (before its ``\\n``, or ``\\r\\n``).
    """
    n = len(suggestion)
    if not line_mode:
        cuts = [i for i, ch in enumerate(suggestion) if ch == "\n"]
        return [c - 1 if suggestion[c - 1 : c] == "\r" else c for c in cuts if c > 0]
    cuts = []
    for i in range(1, n):
        before, after = _char_class(suggestion[i - 1]), _char_class(suggestion[i])
        if before != 0 and (before != after or before == 2):
            cuts.append(i)
    return cuts


def candidates(suggestion: str, boundaries: Sequence[int], line_mode: bool) -> list[str]:
    """Non-blank proper prefixes of ``suggestion`` to try, longest first, no duplicates.

    Block mode: the prefixes ending at line ends. Line mode: those ending at
    ``boundaries`` (str offsets into the suggestion: the model's token ends) and those
    ending at word and punctuation ends (:func:`default_cuts`: a token such as ``])``
    has a clean prefix inside it), without their trailing whitespace. At most
    :data:`MAX_CANDIDATES` (the longest) from each kind of cut.
    """
    if not line_mode:
        passes = [default_cuts(suggestion, False)]
    else:
        passes = (
            [list(boundaries), default_cuts(suggestion, True)]
            if boundaries
            else [default_cuts(suggestion, True)]
        )
    out: list[str] = []
    for cuts in passes:
        found: list[str] = []
        for cut in sorted({c for c in cuts if 0 < c < len(suggestion)}, reverse=True):
            prefix = suggestion[:cut].rstrip() if line_mode else suggestion[:cut]
            if prefix.strip() and prefix != suggestion and prefix not in out + found:
                found.append(prefix)
            if len(found) == MAX_CANDIDATES:
                break
        out += found
    return sorted(out, key=len, reverse=True)


class SyntaxChecker:
    """Checks suggestions for one document snapshot and cursor; see the module doc."""

    def __init__(self, language_id: str, text: str, cursor: int, tree: Tree | None = None) -> None:
        """Prepare checks of suggestions at ``cursor`` in ``text``.

        ``text`` is the document, ``cursor`` a str (code point) offset, clamped into the
        text. The accepted document is ``text[:cursor] + suggestion + text[cursor:]``.
        ``tree`` is the document's current tree for ``text``; it is copied, never edited
        (None: ``text`` is parsed here). A language without a grammar -> ``available``
        is False and every check answers ``"unchecked"``.
        """
        cursor = max(0, min(cursor, len(text)))
        head = text[:cursor]
        self._text, self._cursor = text, cursor
        self._line_head = head[head.rfind("\n") + 1 :]
        """The cursor's line before the cursor."""
        self._pre = head.encode("utf-8", "surrogatepass")
        self._post = text[cursor:].encode("utf-8", "surrogatepass")
        self._lexicon = LEXICONS.get(grammar_name(language_id) or "", C_LIKE_LEXICON)
        self._point = advance_point((0, 0), head)
        self._lo = len(self._pre) - self._point[1]
        """Byte offset of the start of the cursor's line."""
        nl = self._post.find(b"\n")
        self._tail = nl if nl >= 0 else len(self._post)
        """Bytes from the cursor to the end of its line (before any ``\\n``)."""
        self._parser: Parser | None = make_parser(language_id)
        self._python = grammar_name(language_id) == "python"
        self._base: Tree | None = None
        self._ts_before = 0
        """ERROR/MISSING nodes overlapping the cursor's line before any suggestion."""
        self._judges: dict[Window, Judge | None] = {}
        """CPython's judges made so far, per window (:meth:`_judge_for`)."""
        if self._parser is not None:
            self._base = (
                tree.copy() if tree is not None else self._parser.parse(self._pre + self._post)
            )
            self._ts_before = self._count(self._base, "")

    @property
    def available(self) -> bool:
        """Whether the language has a grammar (else every check is ``"unchecked"``)."""
        return self._parser is not None

    def check(
        self, suggestion: str, *, line_mode: bool, boundaries: Sequence[int] = ()
    ) -> SyntaxVerdict:
        """The suggestion to show; never raises.

        Errors are the ERROR/MISSING nodes overlapping the region. The rules, in order:

        1. no errors -> ``"kept"``;
        2. line mode, and the suggestion left a quote or brackets open: the suggestion
           plus the closers, if that has no errors -> ``"closed"``; likewise with the
           closers of what the cursor's line opened before the cursor and the suggestion
           did not close;
        3. the longest non-blank prefix with no errors, cut at ``boundaries`` (str offsets
           into the suggestion; default: word and punctuation ends in line mode, line ends
           in block mode), trying at most :data:`MAX_CANDIDATES` -> ``"trimmed"``;
        4. if the cursor's line had errors before the suggestion: the suggestion if it has
           no more errors than before (``"kept"``), else the longest tried prefix with no
           more (``"trimmed"``); either must not be comments alone, and in line mode
           must not leave open a bracket or quote it opened;
        5. ``"dropped"`` with text ``""``.
        """
        start = time.perf_counter()
        text, action, errors = self._decide(suggestion, line_mode, boundaries)
        ms = (time.perf_counter() - start) * 1000.0
        return SyntaxVerdict(text, action, self._ts_before, errors, ms)

    def adds_errors(self, suggestion: str) -> bool | None:
        """Whether inserting ``suggestion`` adds errors near the cursor (None: no grammar).

        Errors as :meth:`check` counts them: tree-sitter's ERROR/MISSING nodes over the
        region, and CPython's verdict for Python.
        """
        if self._parser is None:
            return None
        return not self._errors(suggestion).no_worse_than(self._errors_before)

    def line_ok(self, partial: str) -> bool:
        """Whether the last finished line of ``partial`` parses, for block-mode decoding.

        ``partial`` is the suggestion so far, inserted with the rest of the document.
        False iff an ERROR node starts inside its last finished line (that line's bytes
        in the document, its ``\\n`` included). MISSING nodes and errors starting
        elsewhere do not count, so a header like ``for x in y:`` whose body is not
        written yet is fine. True without a grammar or without a finished line. One
        incremental parse.

        A line that leaves a bracket open (opened in the suggestion, or before the
        cursor on its line: ``x = [``, ``foo(a,``) is not judged (True) until the
        bracket closes: tree-sitter puts an ERROR in it for the bracket it cannot close
        yet. Then only the line that closed it is judged.
        """
        end = partial.rfind("\n")
        if self._parser is None or end < 0:
            return True
        if unclosed_closers(self._line_head + partial, self._lexicon):
            return True
        prev = partial.rfind("\n", 0, end)
        line_start = self._lo if prev < 0 else len(self._pre) + utf8_len(partial[: prev + 1])
        line_end = len(self._pre) + utf8_len(partial[:end])
        root = self._parse(partial).root_node
        return not any(
            node.is_error and line_start <= node.start_byte <= line_end
            for node in error_nodes(root, line_start, line_end)
        )

    def tree_with(self, suggestion: str) -> Tree | None:
        """The tree of the document with ``suggestion`` inserted (None without a grammar).

        Parsed incrementally from a copy of the base tree; the same as a fresh parse of
        ``text[:cursor] + suggestion + text[cursor:]``.
        """
        return self._parse(suggestion) if self._parser is not None else None

    def _decide(
        self, suggestion: str, line_mode: bool, boundaries: Sequence[int]
    ) -> tuple[str, str, int]:
        """(text, action, errors of text): the rules of :meth:`check`."""
        if self._parser is None:
            return suggestion, "unchecked", 0
        errors = self._errors(suggestion)
        if errors.clean:
            return suggestion, "kept", 0
        dedented = self._dedented(suggestion)
        if dedented is not None and self._errors(dedented).clean:
            return dedented, "trimmed", 0
        indent = self._excess_indent(suggestion)
        if indent:
            shifted = [b - indent for b in boundaries if b > indent]
            text, action, left = self._decide(suggestion[indent:], line_mode, shifted)
            if action != "dropped":
                return text, "trimmed" if action == "kept" else action, left
        closers = unclosed_closers(suggestion, self._lexicon) if line_mode else ""
        if closers and self._errors(suggestion + closers).clean:
            return suggestion + closers, "closed", 0
        if line_mode:  # brackets the line opened before the cursor, left open by it too
            line_closers = unclosed_closers(self._line_head + suggestion, self._lexicon)
            if line_closers not in ("", closers) and self._errors(suggestion + line_closers).clean:
                return suggestion + line_closers, "closed", 0
        tried: list[tuple[str, Errors]] = []
        for prefix in candidates(suggestion, boundaries, line_mode):
            prefix_errors = self._errors(prefix)
            if prefix_errors.clean:
                return prefix, "trimmed", 0
            tried.append((prefix, prefix_errors))
        return self._fallback(suggestion, errors, tried, line_mode)

    def _dedented(self, suggestion: str) -> str | None:
        """``suggestion``'s new lines moved left to the indentation its block has.

        For a suggestion that starts a new line and indents it deeper than the block
        there: below a line that opens no block, the cursor's line's indentation
        (``self.result = result`` four spaces past its block: an unexpected indent);
        below a header, the indentation of the body that follows in the document. None
        when that is not the case or the body's indentation is unknown.
        """
        rest = suggestion.lstrip("\r\n")
        target = self._block_indent()
        if rest == suggestion or target is None:
            return None
        excess = indent_width(rest) - target
        if excess <= 0:
            return None
        lines = suggestion.split("\n")
        moved = [line[excess:] if not line[:excess].strip(" \t") else line for line in lines[1:]]
        return "\n".join([lines[0], *moved])

    def _block_indent(self) -> int | None:
        """Indentation of a line that follows the cursor's line in its block.

        The cursor's line's own indentation, unless that line opens a block (ends in
        ``:``): then the next code line's below the cursor, if indented deeper (the
        body), else None.
        """
        head = self._line_head
        if not head.rstrip().endswith(":"):
            return indent_width(head)
        start = self._text.find("\n", self._cursor)
        while start >= 0:
            end = self._text.find("\n", start + 1)
            line = self._text[start + 1 : end if end >= 0 else len(self._text)]
            code = line.strip()
            if code and not code.startswith("#"):
                width = indent_width(line)
                return width if width > indent_width(head) else None
            start = end
        return None

    def _excess_indent(self, suggestion: str) -> int:
        """How much whitespace opens ``suggestion`` although the cursor is indented already.

        The cursor after a line's indentation and a suggestion that starts with more
        (Qwen writes ``    for ...`` there): its first line would be over-indented.
        0 when the cursor's line has text or no indentation before the cursor.
        """
        head = self._line_head
        if not head or head.strip(" \t"):
            return 0
        return indent_width(suggestion)

    def _fallback(
        self, suggestion: str, errors: Errors, tried: list[tuple[str, Errors]], line_mode: bool
    ) -> tuple[str, str, int]:
        """Rules 4 and 5 of :meth:`check`: nothing clean was found.

        In line mode a text kept here never leaves open a bracket or quote it opened.
        """
        before = self._errors_before
        if not before.clean:
            if errors.no_worse_than(before) and self._worth(suggestion, line_mode):
                return suggestion, "kept", errors.tree
            for prefix, prefix_errors in tried:
                if prefix_errors.no_worse_than(before) and self._worth(prefix, line_mode):
                    return prefix, "trimmed", prefix_errors.tree
        return "", "dropped", before.tree

    def _worth(self, text: str, line_mode: bool) -> bool:
        """Whether a text that leaves the region's errors as they were may be shown.

        It is not comments alone (they fix nothing where the code is broken: SmolLM2
        writes ``#    if x:`` into an empty block), and in line mode leaves no bracket or
        quote it opened open.
        """
        lines = [line for line in (raw.strip() for raw in text.split("\n")) if line]
        comments = bool(lines) and all(
            line.startswith(self._lexicon.line_comment) for line in lines
        )
        return not comments and (not line_mode or not unclosed_closers(text, self._lexicon))

    @functools.cached_property
    def _errors_before(self) -> Errors:
        """Errors in the region with no suggestion: tree-sitter's, and CPython's if near."""
        judge = self._judge_for("")
        return Errors(self._ts_before, judge.errors_before() if judge is not None else 0)

    def _judge_for(self, suggestion: str) -> Judge | None:
        """CPython's parser on the smallest window around the cursor ``suggestion`` fits.

        The windows are :attr:`_windows`, innermost first. None for other languages and
        past the judge's size limit.
        """
        for window in self._windows:
            if fits(suggestion, window.indent):
                if window not in self._judges:
                    self._judges[window] = self._window_judge(window)
                return self._judges[window]
        return None

    @functools.cached_property
    def _lines(self) -> list[str]:
        """The document's rows (split at ``\n``, as tree-sitter and CPython count them)."""
        return self._text.split("\n")

    @functools.cached_property
    def _windows(self) -> list[Window]:
        """Windows of the document that parse alone, innermost first (Python only).

        The indented compound statements that hold the cursor's row
        (:meth:`_inner_windows`), then the cursor's top-level statements: from the
        top-level statement (one starting at column 0) that holds the cursor's row or
        comes last before it, to the end of the first code statement after that row
        that tree-sitter parsed without error at column 0 (in a broken document its
        top-level nodes are pieces). Top-level statements parse on their own, so a
        window judges like the file at a fraction of the cost.
        """
        if not self._python or self._base is None:
            return []
        return [*self._inner_windows(), Window(*self._window_rows(), "")]

    def _window_rows(self) -> tuple[int, int]:
        """First and last row (inclusive) of the top-level window, in the base tree."""
        assert self._base is not None
        row = self._point[0]
        first, last = 0, None
        for child in self._base.root_node.children:
            start = child.start_point[0]
            if start <= row:
                first = start if child.start_point[1] == 0 else first
            elif child.type != "comment":
                last = child.end_point[0]
                if not child.has_error and child.start_point[1] == 0:
                    break  # a broken statement may hold what closes the cursor's
        return first, last if last is not None else self._base.root_node.end_point[0]

    def _window_judge(self, window: Window) -> Judge | None:
        """A judge of the rows of ``window``, its indentation taken off."""
        row, lines, cut = self._point[0], self._lines, len(self._line_head)
        head = "\n".join([*lines[window.first : row], self._line_head])
        tail = "\n".join([lines[row][cut:], *lines[row + 1 : window.last + 1]])
        return Judge.of(head, tail, window.indent)

    def _inner_windows(self) -> Iterator[Window]:
        """The indented compound statements that hold the cursor's row, innermost first.

        A definition comes with its decorators. Each must be closed as the text reads:
        the next row of code after it is indented no deeper than its first row (so
        tree-sitter's recovery in a broken document did not end it early), and its
        errors, if any, lie on the cursor's row (else recovery may have stretched it).
        The cursor's line must start with its indentation, and go deeper unless it is
        the statement's first row.
        """
        assert self._base is not None
        row, lines = self._point[0], self._lines
        node: Node | None = self._base.root_node.descendant_for_point_range(
            self._point, self._point
        )
        while node is not None and node.start_point[1] > 0:
            if node.type in COMPOUND:
                outer = node.parent
                if outer is not None and outer.type == "decorated_definition":
                    node = outer
                window = self._closed(node, lines, row)
                if window is not None:
                    yield window
            node = node.parent

    def _closed(self, node: Node, lines: list[str], row: int) -> Window | None:
        """``node``'s rows as a :class:`Window` if they can be judged alone, else None."""
        first, last = node.start_point[0], node.end_point[0]
        if not first <= row <= last:
            return None
        indent = lines[first][: indent_width(lines[first])]
        if utf8_len(indent) != node.start_point[1]:
            return None  # something else before it on its row
        head = self._line_head
        if not head.startswith(indent) or (row > first and len(head) == len(indent)):
            return None
        if any(
            e.start_point[0] != row or e.end_point[0] != row
            for e in error_nodes(node, node.start_byte, node.end_byte)
        ):
            return None
        after = next_code_line(lines, last)
        if after < len(lines):
            depth = lines[after][: indent_width(lines[after])]
            if depth.startswith(indent) and len(depth) > len(indent):
                return None
        return Window(first, last, indent)

    def _errors(self, suggestion: str) -> Errors:
        """Errors in the region with ``suggestion`` inserted.

        tree-sitter's ERROR/MISSING nodes there; for Python, CPython's parser's verdict
        (:mod:`completion.python_parse`), asked only when tree-sitter finds no more errors
        than before (otherwise the suggestion is rejected either way).
        """
        if not suggestion:
            return self._errors_before
        errors = self._count(self._parse(suggestion), suggestion)
        judge = self._judge_for(suggestion) if errors <= self._ts_before else None
        return Errors(errors, judge.added_error(suggestion) if judge is not None else 0)

    def _count(self, tree: Tree, suggestion: str) -> int:
        """ERROR/MISSING nodes of ``tree`` (``suggestion`` inserted) in the region."""
        hi = len(self._pre) + utf8_len(suggestion) + self._tail
        return sum(1 for _ in error_nodes(tree.root_node, self._lo, hi))

    def _parse(self, suggestion: str) -> Tree:
        """The document with ``suggestion`` inserted at the cursor, parsed.

        Incremental: from a copy of the base tree, edited for the insertion.
        """
        assert self._parser is not None and self._base is not None
        tree = self._base.copy()
        insertion(len(self._pre), self._point, suggestion).apply(tree)
        inserted = suggestion.encode("utf-8", "surrogatepass")
        return self._parser.parse(self._pre + inserted + self._post, tree)
