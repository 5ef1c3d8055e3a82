"""The suggestions panel's items: records, duplicates, ranking (pure; no model).

The engine decodes the drafts (:meth:`completion.engine.Engine.panel`); this module
decides which of them the panel shows and in what order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

DEFAULT_ITEMS = 5
"""Drafts a panel asks for when the request does not say."""
MAX_ITEMS = 10
"""The most drafts a panel request gets (more is clamped)."""


class PanelItem(NamedTuple):
    """One draft as the panel shows it."""

    text: str
    """What accepting it inserts at the cursor."""
    score: float
    """The model's mean log-probability per token of the draft (higher is likelier)."""
    syntax_valid: bool | None
    """Whether inserting it adds no syntax errors near the cursor (None: no grammar)."""
    greedy: bool = False
    """The inline completion at temperature 0 (always the first item)."""


@dataclass
class PanelResult:
    """What a panel request produced."""

    items: list[PanelItem]
    """Best first: the greedy item, then valid drafts by score, then invalid ones."""
    drafts: int = 0
    """Drafts decoded, duplicates and empty ones included."""
    batched: bool = False
    """Decoded as one batch (else one after another)."""
    ms: float = 0.0
    skipped: list[str] = field(default_factory=list)
    """Drafts never shown: empty, or the same as an earlier one up to whitespace."""
    withdrawn: list[str] = field(default_factory=list)
    """Drafts streamed before the inline completion turned out to repeat them: not in
    ``items`` (the final list is authoritative)."""


def normalised(text: str) -> str:
    """``text`` with runs of whitespace made one space, ends stripped (for duplicates)."""
    return " ".join(text.split())


class Distinct:
    """Which drafts are new: not empty, not an earlier one up to whitespace."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def admit(self, text: str) -> bool:
        """Whether ``text`` is new (and remember it)."""
        key = normalised(text)
        if not key or key in self._seen:
            return False
        self._seen.add(key)
        return True


class Checker(Protocol):
    """What the board asks of the syntax check (:class:`~completion.syntax_check.SyntaxChecker`)."""

    def adds_errors(self, suggestion: str) -> bool | None:
        """Whether inserting ``suggestion`` adds syntax errors (None: no grammar)."""
        ...


class Board:
    """Collects a panel's drafts as they end: duplicates out, checked, streamed, ranked.

    The other drafts come first (:meth:`offer`), as the batch ends them; the batch's
    greedy row gives the greedy item its score (:meth:`greedy_row`); the inline
    completion then is the greedy item (:meth:`show_best`). ``on_item`` gets every item
    shown, as it comes.
    """

    def __init__(self, checker: Checker, on_item: Callable[[PanelItem], None]) -> None:
        self._checker = checker
        self._on_item = on_item
        self._distinct = Distinct()
        self._greedy_score = 0.0
        self._best: PanelItem | None = None
        self._items: list[PanelItem] = []
        self._drafts = 0
        self._skipped: list[str] = []

    def offer(self, text: str, score: float) -> None:
        """A draft other than the greedy one that ended."""
        self._drafts += 1
        if self._distinct.admit(text):
            item = PanelItem(text, score, self._valid(text))
            self._items.append(item)
            self._on_item(item)
        else:
            self._skipped.append(text)

    def greedy_row(self, text: str, score: float) -> None:
        """The batch's greedy row ended: the greedy item's score; its text is taken."""
        self._drafts += 1
        self._greedy_score = score
        self._distinct.admit(text)

    def show_best(self, text: str) -> None:
        """The inline completion: the greedy item (none when it is empty)."""
        if not text.strip():
            return
        self._best = PanelItem(text, self._greedy_score, self._valid(text), greedy=True)
        self._on_item(self._best)

    def result(self, batched: bool, ms: float) -> PanelResult:
        """Every item, ranked; a draft the greedy item turned out to repeat dropped."""
        items, withdrawn = self._items, []
        if self._best is not None:
            key = normalised(self._best.text)
            withdrawn = [it.text for it in items if normalised(it.text) == key]
            items = [self._best, *(it for it in items if normalised(it.text) != key)]
        return PanelResult(ranked(items), self._drafts, batched, ms, self._skipped, withdrawn)

    def _valid(self, text: str) -> bool | None:
        adds = self._checker.adds_errors(text)
        return None if adds is None else not adds


def ranked(items: list[PanelItem]) -> list[PanelItem]:
    """Greedy first, then syntax-valid (or unchecked) drafts by score, then invalid ones."""
    return sorted(items, key=lambda it: (not it.greedy, it.syntax_valid is False, -it.score))
