"""Python's own parser as a second judge of a suggestion, after tree-sitter.

tree-sitter-python is tolerant where CPython is not: it accepts a compound statement
header with no body (``class A(B):`` followed by a line at the same indentation), an
unexpected indent, and a bracket left open whose error it reports lines further down,
outside the region the tree-sitter check looks at. CPython's parser reports the first
error of the whole file, with its line, so whether a suggestion added an error is
decided by comparing the first error before and after it (see :func:`added_error`).

One parse is a ``compile`` to an AST: about 2 ms per 1,000 lines on a laptop core;
files over :data:`MAX_CHARS` are not judged (the tree-sitter check still is).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Sequence
from typing import NamedTuple

MAX_CHARS = 200_000
"""Longer documents are not judged (a parse of one costs over ~10 ms)."""


class FirstError(NamedTuple):
    """Where CPython's parser stopped: a 0-based row and its message."""

    row: int
    message: str


def first_error(source: str) -> FirstError | None:
    """The first syntax error of ``source`` (None: it parses, or it cannot be judged)."""
    try:
        compile(source, "<suggestion>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    except SyntaxError as exc:
        return FirstError(max(0, (exc.lineno or 1) - 1), exc.msg)
    except Exception:  # null bytes, nesting too deep: no verdict
        return None
    return None


def next_code_row(source: str, row: int) -> int:
    """The first row after ``row`` holding code (not blank, not only a comment).

    The row past the last when there is none.
    """
    return next_code_line(source.split("\n"), row)


def next_code_line(lines: Sequence[str], row: int) -> int:
    """:func:`next_code_row` of a text already split into ``lines``."""
    for r in range(row + 1, len(lines)):
        stripped = lines[r].strip()
        if stripped and not stripped.startswith("#"):
            return r
    return len(lines)


def dedent(text: str, indent: str, first: bool = True) -> str:
    """``text`` with ``indent`` taken off each line that starts with it.

    ``first``: the first line too (else it is left as it is: it goes on a line begun
    before ``text``). Rows stay rows: only the lines' starts change.
    """
    if not indent:
        return text
    lines = text.split("\n")
    skip = 0 if first else 1
    return "\n".join(
        line[len(indent) :] if i >= skip and line.startswith(indent) else line
        for i, line in enumerate(lines)
    )


def fits(suggestion: str, indent: str) -> bool:
    """Whether ``suggestion`` stays inside a window indented by ``indent``.

    Every later line of it with code goes deeper than ``indent``: a line at the
    window's own depth could join what follows the window (an ``except`` for a ``try``
    it writes, the lines inside a bracket it opens). Any suggestion fits no indentation.
    """
    if not indent:
        return True
    deeper = (indent + " ", indent + "\t")
    return all(not line.strip() or line.startswith(deeper) for line in suggestion.split("\n")[1:])


class Judge:
    """The document around one cursor, as CPython's parser sees it.

    The document may be a window of it: an indented compound statement, with its indentation
    ``indent`` taken off so that it parses on its own, and off every later line of a
    suggestion too (one that :func:`fits` the window).
    """

    def __init__(self, head: str, tail: str, indent: str = "") -> None:
        """A judge for the cursor between ``head`` and ``tail`` (see :meth:`of`)."""
        self.indent = indent
        self.head, self.tail = dedent(head, indent), dedent(tail, indent, first=False)

    @classmethod
    def of(cls, head: str, tail: str, indent: str = "") -> Judge | None:
        """A judge for the cursor between ``head`` and ``tail`` (None: too long to judge).

        ``indent``: the window's indentation, which every line of ``head`` starts with.
        """
        return cls(head, tail, indent) if len(head) + len(tail) <= MAX_CHARS else None

    @functools.cached_property
    def before(self) -> FirstError | None:
        """The first error with no suggestion inserted (parsed when first asked)."""
        return first_error(self.head + self.tail)

    @functools.cached_property
    def cursor_row(self) -> int:
        """The cursor's 0-based row (``\\n`` splits rows, as CPython counts them)."""
        return self.head.count("\n")

    def errors_before(self) -> int:
        """1 when the first error before any suggestion is near the cursor, else 0.

        Near: on the cursor's row or the next row of code (a half typed line and the
        line it breaks).
        """
        if self.before is None:
            return 0
        near = next_code_row(self.head + self.tail, self.cursor_row)
        return int(self.cursor_row <= self.before.row <= near)

    def added_error(self, suggestion: str) -> int:
        """1 when ``suggestion`` leaves an error near it that CPython reports first, else 0.

        With the suggestion inserted the file parses: 0. The file parsed without it: 1.
        Else the first error after is the one before (moved by the suggestion's line
        breaks): the count of :meth:`errors_before`; an error ahead of the one before,
        or behind it but no further than the row of code after the suggestion (a header
        left without a body, an indent the next line does not fit): 1; further: 0.
        The suggestion must :func:`fit <fits>` the window.
        """
        suggestion = dedent(suggestion, self.indent, first=False)
        source = self.head + suggestion + self.tail
        after = first_error(source)
        if after is None:
            return 0
        if self.before is None:
            return 1
        rows = suggestion.count("\n")
        moved = self.before.row + (rows if self.before.row > self.cursor_row else 0)
        if after.row == moved and after.message == self.before.message:
            return self.errors_before()
        if after.row < moved:
            return 1
        return int(after.row <= next_code_row(source, self.cursor_row + rows))
