"""The only place where coordinates are converted.

Coordinates used in pie-lsp:

- LSP ``Position`` (line, character), with ``character`` counted in the negotiated
  position encoding: UTF-8 bytes, UTF-16 code units or UTF-32 code points.
  LSP lines end at ``\\n``, ``\\r\\n`` or ``\\r``.
- ``str`` index: a Python code-point offset into the document text.
- UTF-8 byte offset into ``text.encode("utf-8")``.
- tree-sitter ``Point`` (row, byte column): rows are split at ``\\n`` only, columns
  are UTF-8 bytes from the last ``\\n``.

Nothing here imports pygls: positions are plain ``(line, character)`` tuples.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["utf-8", "utf-16", "utf-32"]
ENCODINGS: tuple[Encoding, ...] = ("utf-8", "utf-16", "utf-32")

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class PositionError(ValueError):
    """A position that does not address a place in the document."""


def char_units(ch: str, encoding: Encoding) -> int:
    """Length of one code point in the units of ``encoding``."""
    o = ord(ch)
    if encoding == "utf-16":
        return 2 if o > 0xFFFF else 1
    if encoding == "utf-8":
        if o < 0x80:
            return 1
        if o < 0x800:
            return 2
        if o < 0x10000:
            return 3
        return 4
    return 1


def units_len(s: str, encoding: Encoding) -> int:
    """Length of ``s`` in the units of ``encoding``."""
    if encoding == "utf-32":
        return len(s)
    if encoding == "utf-8":
        return len(s.encode("utf-8", "surrogatepass"))
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def line_starts(text: str) -> list[int]:
    """Str offsets at which each LSP line starts (line 0 starts at 0)."""
    return [0] + [m.end() for m in _LINE_BREAK.finditer(text)]


@dataclass(frozen=True)
class LineIndex:
    """Line table of one text snapshot; build once per version, query many times."""

    text: str
    starts: tuple[int, ...]

    @classmethod
    def of(cls, text: str) -> LineIndex:
        """Index ``text``."""
        return cls(text, tuple(line_starts(text)))

    def line_content_end(self, line: int) -> int:
        """Str offset of the end of ``line`` without its line break."""
        if line + 1 < len(self.starts):
            end = self.starts[line + 1]
            if self.text[end - 2 : end] == "\r\n":
                return end - 2
            return end - 1
        return len(self.text)

    def offset(self, line: int, character: int, encoding: Encoding, *, strict: bool) -> int:
        """Convert an LSP position to a str offset.

        With ``strict`` a line past the end, a character past the end of its line or a
        character that splits a code point raise :class:`PositionError`. Without it they
        are clamped as the LSP specification asks for document edits.
        """
        if line < 0 or character < 0:
            raise PositionError(f"negative position ({line}, {character})")
        if line >= len(self.starts):
            if strict:
                raise PositionError(
                    f"line {line} is past the end of the document ({len(self.starts)} lines)"
                )
            return len(self.text)
        start = self.starts[line]
        end = self.line_content_end(line)
        if encoding == "utf-32":
            if start + character > end:
                if strict:
                    raise PositionError(
                        f"character {character} is past the end of line {line} "
                        f"({end - start} code points)"
                    )
                return end
            return start + character
        units = 0
        i = start
        while i < end and units < character:
            units += char_units(self.text[i], encoding)
            i += 1
        if units < character:
            if strict:
                raise PositionError(
                    f"character {character} is past the end of line {line} "
                    f"({units} {encoding} units)"
                )
            return end
        if units > character:
            if strict:
                raise PositionError(
                    f"character {character} on line {line} splits a code point ({encoding})"
                )
            return i - 1
        return i

    def position(self, offset: int, encoding: Encoding) -> tuple[int, int]:
        """Convert a str offset to an LSP position ``(line, character)``."""
        if not 0 <= offset <= len(self.text):
            raise PositionError(f"offset {offset} outside text of length {len(self.text)}")
        line = bisect_right(self.starts, offset) - 1
        # An offset between "\r" and "\n" belongs to the line that the pair ends.
        start = self.starts[line]
        return line, units_len(self.text[start:offset], encoding)


def byte_offset(text: str, offset: int) -> int:
    """UTF-8 byte offset of str offset ``offset``."""
    return len(text[:offset].encode("utf-8", "surrogatepass"))


def point_at(text: str, offset: int) -> tuple[int, int]:
    """tree-sitter point (row, byte column) of str offset ``offset``."""
    head = text[:offset]
    row = head.count("\n")
    last = head.rfind("\n")
    return row, len(head[last + 1 :].encode("utf-8", "surrogatepass"))


def advance_point(point: tuple[int, int], inserted: str) -> tuple[int, int]:
    """Point reached after inserting ``inserted`` at ``point``."""
    rows = inserted.count("\n")
    if rows == 0:
        return point[0], point[1] + len(inserted.encode("utf-8", "surrogatepass"))
    tail = inserted[inserted.rfind("\n") + 1 :]
    return point[0] + rows, len(tail.encode("utf-8", "surrogatepass"))
