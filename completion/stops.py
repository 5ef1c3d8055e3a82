"""Stop rules and post-processing of generated text.

Modes:

- ``line``: the cursor is inside a line with text (or ``multiline`` is "never"). The
  completion ends at the end of the line. When nothing but whitespace follows the
  cursor on its line, the completion may first move to the next line (``def f():|``
  gets the body's first line), except under "never": then it never holds a line break.
  With ``header_body`` (the syntax check, for Python) a line that opens a block goes on
  through its body's first line.
- ``block``: the cursor is on a line with nothing but whitespace. The completion runs to
  the end of the block: it stops before the first line indented less than the cursor,
  or, at the top level, before a new top-level line that follows a blank line.

In both modes the completion stops where it reaches text that already follows the cursor,
and post-processing never returns text that repeats what follows the cursor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Mode = Literal["line", "block"]
Multiline = Literal["auto", "always", "never"]


_PAIRS = {")": "(", "]": "[", "}": "{"}
MAX_HEADERS = 3
"""Line mode with ``header_body``: the most nested headers one suggestion goes through."""


def _may_drop(text: str, overlap: str) -> bool:
    """Whether ``text`` may lose its ending ``overlap`` (which the line already has).

    Closing brackets are only dropped when ``text`` closes more than it opens: after an
    editor auto-closes ``print(|)``, a completion ``len(x)`` keeps its own ``)`` while
    ``len(x))`` loses the extra one.
    """
    for close, open_ in _PAIRS.items():
        need = overlap.count(close)
        if need and text.count(close) - text.count(open_) < need:
            return False
    return True


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


@dataclass(frozen=True)
class StopRules:
    """What the text around the cursor says about where a completion ends."""

    mode: Mode
    rest_of_line: str
    """Text after the cursor on its line (without the line break)."""
    base_indent: int
    """Indentation (characters) of the cursor's line, up to the cursor in block mode."""
    next_line: str
    """The first non-blank line after the cursor's line, stripped ("" if none)."""
    suffix: str
    """Everything after the cursor (for the repetition check)."""
    lead_break: bool = True
    """Line mode: whether the line may start with a line break when nothing follows the
    cursor (``def f():|`` gets the body's first line). False for ``multiline`` "never":
    such a suggestion never starts with or holds a line break."""
    header_body: bool = False
    """Line mode with nothing after the cursor: a line that opens a block (ends in
    ``:``, as Python's headers do) goes on through the first line of its body, since
    a header alone leaves the file without the body it needs."""

    @classmethod
    def at(
        cls, text: str, cursor: int, multiline: Multiline = "auto", header_body: bool = False
    ) -> StopRules:
        """Rules for a completion at str offset ``cursor`` of ``text``."""
        line_start = text.rfind("\n", 0, cursor) + 1
        nl = text.find("\n", cursor)
        line_end = len(text) if nl == -1 else nl
        before = text[line_start:cursor]
        rest = text[cursor:line_end].rstrip("\r")
        blank_line = not before.strip() and not rest.strip()
        if multiline == "always":
            mode: Mode = "block"
        elif multiline == "never":
            mode = "line"
        else:
            mode = "block" if blank_line else "line"
        next_line = ""
        if nl != -1:
            for candidate in text[nl + 1 :].split("\n"):
                if candidate.strip():
                    next_line = candidate.strip()
                    break
        lead_break = multiline != "never"
        return cls(mode, rest, _indent(before), next_line, text[cursor:], lead_break, header_body)

    ##### During decoding #####

    def cut(self, text: str) -> tuple[str, bool]:
        """Apply the stop rules to the text generated so far.

        Returns the text to keep and whether generation should stop.
        """
        if self.mode == "line":
            return self._cut_line(text)
        return self._cut_block(text)

    def _cut_line(self, text: str) -> tuple[str, bool]:
        lead = ""
        body = text
        if self.lead_break and not self.rest_of_line.strip():
            # Nothing after the cursor: allow a leading line break plus indentation.
            stripped = text.lstrip("\r\n")
            if stripped != text and "\n" in text[: len(text) - len(stripped)]:
                head = text[: len(text) - len(stripped)]
                lead = head
                body = stripped
                ws = body[: _indent(body)]
                lead, body = lead + ws, body[len(ws) :]
        nl = self._line_end(body)
        if nl is None:
            return lead + body, False
        if nl != -1:
            return lead + body[:nl].rstrip("\r"), True
        tail = self.rest_of_line.strip()
        if tail and body.rstrip().endswith(tail) and _may_drop(body.rstrip(), tail):
            return lead + body.rstrip()[: -len(tail)], True
        return lead + body, False

    @staticmethod
    def _opens_block(line: str) -> bool:
        """Whether ``line`` is a header (ends in ``:``; not a comment)."""
        code = line.strip()
        return code.endswith(":") and not code.startswith("#")

    def _line_end(self, body: str) -> int | None:
        """Where the suggestion's line in ``body`` ends (-1: not yet, no line break).

        A header's line goes on through its body's first line, and so on for a body
        line that is a header itself (up to :data:`MAX_HEADERS`); None while that line
        is unfinished. A blank line after a header ends the suggestion at the header.
        """
        nl = body.find("\n")
        if not (self.header_body and self.lead_break and not self.rest_of_line.strip()):
            return nl
        start = 0
        for _ in range(MAX_HEADERS):
            if nl == -1 or not self._opens_block(body[start:nl]):
                return nl
            end = body.find("\n", nl + 1)
            if end == -1:
                return None
            if not body[nl + 1 : end].strip():
                return nl
            start, nl = nl + 1, end
        return nl

    def _cut_block(self, text: str) -> tuple[str, bool]:
        lines = text.split("\n")
        complete = lines[:-1]  # the last element is still being generated
        seen_blank = False
        for i, line in enumerate(complete):
            if i == 0:
                continue  # the cursor's own line
            if not line.strip():
                seen_blank = True
                continue
            ends_block = _indent(line) < self.base_indent or (
                self.base_indent == 0 and _indent(line) == 0 and seen_blank
            )
            reaches_suffix = bool(self.next_line) and line.strip() == self.next_line
            if ends_block or reaches_suffix:
                return "\n".join(lines[:i]), True
            seen_blank = False
        return text, False

    ##### After decoding #####

    def finish(self, text: str) -> str:
        """Final clean-up: trailing whitespace, overlap with the text after the cursor."""
        text = text.rstrip()
        if self.mode == "line":
            text = self._trim_overlap(text)
        if not text.strip():
            return ""
        ahead = self.suffix.lstrip()
        if ahead.startswith(text.strip()):
            return ""  # the model only reproduced what is already there
        return text

    def _trim_overlap(self, text: str) -> str:
        """Drop the longest end of ``text`` that the rest of the line already starts with."""
        rest = self.rest_of_line.strip()
        for k in range(min(len(text), len(rest)), 0, -1):
            if text.endswith(rest[:k]) and _may_drop(text, rest[:k]):
                return text[:-k]
        return text


def strip_healed(text: str, healed: str) -> tuple[str, bool]:
    """Remove the whitespace that prompt healing cut off, from the generated text.

    Returns the visible text and whether it is still undecided (the model has produced
    only part of the healed whitespace so far).
    """
    if not healed:
        return text, False
    if text.startswith(healed):
        return text[len(healed) :], False
    if healed.startswith(text):
        return "", True
    return text.lstrip(" \t"), False
