"""Suggestion memory: what the model said before, and what it will likely say again.

A suggestion is remembered where it was made (:class:`Said`: the document, the cursor,
what the model said and, per token, where the token ends and the margin it was picked
by). When a later request's text around the cursor is that text with a beginning of the
suggestion typed in between (possibly nothing) while the rest of the document may have
changed, :func:`expected_rest` returns what is left of it: the likeliest output, which
the engine drafts from its first token on. :func:`token_margins` carries the old
margins over to the rest tokenized anew, and :class:`MarginBands` learns, per band of
margin, how often a token picked by that margin is picked again; the drafting policy
turns those rates into how much of the rest to verify with the prompt.

The last suggestion shown per document is kept too (:class:`Shown`): while the user
types its beginning and nothing else changes, :func:`typed_through` gives the rest, and
the engine answers with it without running the model.

Nothing here runs the model or knows about tokens beyond their character ends.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

Marks = tuple[tuple[int, float], ...]
"""Per token of a suggestion: where the token ends, in characters from the suggestion's
start (at most 0 for a token that only re-generates the prompt's healed text), and the
greedy margin (top logit minus runner-up) it was picked by; ``inf`` where the suggestion
is known to come again as it was (nothing but its typed beginning changed)."""


class Shown(NamedTuple):
    """The last suggestion shown for a document, and the text it was made for."""

    text: str
    cursor: int
    suggestion: str
    mode: str


def typed_through(shown: Shown, text: str, cursor: int) -> str | None:
    """What is left of ``shown`` after the user typed its beginning, else None.

    Only when nothing else changed: the document is the shown one with a non-empty
    beginning of the suggestion inserted at its cursor, and some visible rest remains.
    """
    typed_len = cursor - shown.cursor
    if not 0 < typed_len < len(shown.suggestion) or len(text) != len(shown.text) + typed_len:
        return None
    if (
        not shown.suggestion.startswith(text[shown.cursor : cursor])
        or text[: shown.cursor] != shown.text[: shown.cursor]
        or text[cursor:] != shown.text[shown.cursor :]
    ):
        return None
    rest = shown.suggestion[typed_len:]
    return rest if rest.strip() else None


class Said(NamedTuple):
    """A suggestion remembered where it was made (:func:`expected_rest`)."""

    text: str
    """The document then."""
    cursor: int
    suggestion: str
    """What the model said, less what prompt healing made it re-create (whitespace, a
    half-typed word)."""
    marks: Marks
    lead: str = ""
    """What the model said before ``suggestion``: the healed whitespace as a rule, but
    not always (a prefix-only model on a blank indented line often starts a new line
    instead, and then ``suggestion`` starts there)."""


class Expected(NamedTuple):
    """What the model will likely say again (:func:`expected_rest`)."""

    rest: str
    marks: Marks
    lead: str | None
    """What it will say before ``rest``: the old lead when nothing was typed since (the
    same prompt end); None when a beginning was typed (the prompt's own healed text)."""


def expected_rest(
    text: str,
    cursor: int,
    shown: Sequence[Said],
    before: int = 64,
    after: int = 32,
) -> Expected | None:
    """What the model will likely say at ``cursor``: the rest of a suggestion shown here.

    ``shown``: recent suggestions for the document, newest first. One applies when the
    text around the cursor is the text around its cursor with a beginning of the
    suggestion typed in between (possibly nothing), the rest of the document may have
    changed (an edit elsewhere, a character typed and deleted). The longest typed
    beginning wins. Returns the rest, its marks (counted from the rest's start; one
    infinite mark when nothing but the typed beginning changed) and what comes before
    it; None when no suggestion applies.
    """
    for old_text, old_cursor, suggestion, marks, lead in shown:
        if text[cursor : cursor + after] != old_text[old_cursor : old_cursor + after]:
            continue
        ctx = old_text[max(0, old_cursor - before) : old_cursor]
        for typed in range(min(len(suggestion) - 1, cursor - len(ctx)), -1, -1):
            if text[cursor - typed : cursor] != suggestion[:typed]:
                continue
            if text[cursor - typed - len(ctx) : cursor - typed] == ctx:
                rest = suggestion[typed:]
                if not rest.strip():
                    break
                said_before = None if typed else lead
                if (
                    text[cursor:] == old_text[old_cursor:]
                    and text[: cursor - typed] == old_text[:old_cursor]
                ):
                    # Nothing else changed.
                    return Expected(rest, ((len(rest), math.inf),), said_before)
                return Expected(
                    rest, tuple((e - typed, m) for e, m in marks if e - typed > 0), said_before
                )
    return None


def token_margins(ends: Sequence[int], marks: Marks) -> list[float]:
    """The margin each token of a re-tokenized rest was picked by the last time.

    ``ends[j]``: where token j ends (characters from the rest's start); ``marks``: the
    old tokens (:func:`expected_rest`). A token gets the thinnest margin among the old
    tokens it overlaps (the old tokenization may cut elsewhere), 0 where none does.
    """
    out: list[float] = []
    prev = -math.inf
    starts = (-math.inf, *(e for e, _ in marks))  # one more than marks: zip stops
    for end in ends:
        overlapped = [m for s, (e, m) in zip(starts, marks, strict=False) if e > prev and s < end]
        out.append(min(overlapped, default=0.0))
        prev = max(prev, end)
    return out


class MarginBands:
    """How often a suggestion's token comes again when the suggestion is asked for anew.

    After an edit elsewhere the model mostly says what it said before, but not always:
    the tokens it picked by a thin margin are the ones that flip, and everything after
    them with them. Per band of that margin (and a band of its own for re-asks where
    nothing but the typed beginning changed, whose cache state may still differ): the
    share of such tokens picked again, learned from every re-ask's output compared with
    what was expected (at temperature 0), whether or not it was drafted. The priors are
    SmolLM2's measurement (docs/speculative.md), each worth :attr:`WEIGHT` observations;
    the model in use replaces them as its re-asks come in.
    """

    EDGES: ClassVar[tuple[float, ...]] = (0.25, 0.5, 1.0, 2.0)
    PRIORS: ClassVar[tuple[float, ...]] = (0.85, 0.9, 0.95, 0.99, 0.995, 0.97)
    """Per band: margins below 0.25, 0.5, 1, 2, above, and infinite (:data:`Marks`)."""
    NAMES: ClassVar[tuple[str, ...]] = ("<0.25", "<0.5", "<1", "<2", ">=2", "same")
    WEIGHT = 5.0
    """Pseudo-observations behind a prior."""
    DECAY = 0.98
    """Per re-ask, older observations fade."""

    def __init__(self) -> None:
        self.counts = [[0.0, 0.0] for _ in self.PRIORS]

    def band(self, margin: float) -> int:
        """The band of a margin (an index into :data:`PRIORS`)."""
        if margin == math.inf:
            return len(self.PRIORS) - 1
        return bisect.bisect_right(self.EDGES, margin)

    def rate(self, margin: float) -> float:
        """Estimated probability that a token picked by ``margin`` is picked again."""
        return self._band_rate(self.band(margin))

    def _band_rate(self, band: int) -> float:
        kept, total = self.counts[band]
        return (kept + self.WEIGHT * self.PRIORS[band]) / (total + self.WEIGHT)

    def observe(
        self, margins: Sequence[float], expected: Sequence[int], out: Sequence[int]
    ) -> None:
        """One re-ask: the expected tokens with their margins, and what came out.

        Tokens up to the first difference count as picked again, that one as flipped;
        what follows it is not evidence (the model went elsewhere).
        """
        for c in self.counts:
            c[0] *= self.DECAY
            c[1] *= self.DECAY
        for m, want, got in zip(margins, expected, out, strict=False):
            c = self.counts[self.band(m)]
            c[1] += 1
            if want != got:
                break
            c[0] += 1

    def rates(self) -> dict[str, float]:
        """Every band's estimate (benchmarks report them)."""
        return {n: round(self._band_rate(i), 3) for i, n in enumerate(self.NAMES)}
