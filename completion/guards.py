"""What guards one request's suggestion: the member monitor's lookups and the syntax check.

The engine builds a :class:`Guards` per request (when ``members`` or ``syntax`` is on):
it knows the document, asks the member oracle within the step budget (each site once
per request: a site whose answer was late stays unconstrained for the rest of the
request, while the late answer still serves the finished-suggestion review and the
next request), and counts what happened into :class:`~completion.constraints.ConstraintStats`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from .constraints import ConstraintStats, TokenTexts
from .member_oracle import PYTHON, MemberOracle, MemberQuery, Members, supported
from .members import MemberContext, MemberMonitor, Names, Scan, dot_before, site_at
from .syntax import make_parser
from .syntax_check import SyntaxChecker

DEFAULT_BUDGET_S = 0.05
"""The oracle's budget per decode step before a step time was measured."""
REVIEW_STEPS = 4
"""The finished suggestion's review waits up to this many step budgets, in all, for the
answers that were late while decoding (cutting an invented member beats showing it)."""
NOT_CODE = ("string", "comment", "template_string", "string_content", "string_fragment")
"""Syntax node types that are text, not code (Python, JavaScript, TypeScript)."""


def uri_path(key: str) -> str | None:
    """A ``file://`` URI's path (other keys: None; plain paths pass through)."""
    if key.startswith("file://"):
        return unquote(urlparse(key).path)
    return key if key.startswith("/") else None


def cursor_in_code(language: str, text: str, cursor: int, tree: Any = None) -> bool:
    """Whether ``cursor`` is in code: not in a string or comment (by the tree and the line)."""
    python = language in ("python", "py")
    line_start = text.rfind("\n", 0, cursor) + 1
    state, _ = Scan().feed(text[line_start:cursor], python)
    if state.open:
        return False
    if tree is None:
        parser = make_parser(language)
        if parser is None:
            return True
        tree = parser.parse(text.encode("utf-8", "surrogatepass"))
    at = len(text[:cursor].encode("utf-8", "surrogatepass"))
    node = tree.root_node.descendant_for_byte_range(max(0, at - 1), at)
    while node is not None:
        if node.type in NOT_CODE and node.start_byte < at < node.end_byte:
            return False
        node = node.parent
    return True


class OracleLookup:
    """A request's view of the oracle (:data:`~completion.members.Lookup`)."""

    def __init__(
        self,
        oracle: MemberOracle,
        query: Callable[[str, int], MemberQuery],
        budget_s: float | None,
        stats: ConstraintStats,
        asks: bool = True,
    ) -> None:
        self.oracle, self.query, self.budget_s, self.stats = oracle, query, budget_s, stats
        self.asks = asks
        """False: only answers the oracle already has are used; nothing is sent to it."""
        self._memo: dict[tuple[int, int], Names | None] = {}
        """Per site (offset, text hash): what this request decided."""
        self._late_queries: list[MemberQuery] = []
        """Queries whose answers were later than the budget (for :meth:`settle`)."""
        self._timed_out: dict[tuple[int, int], MemberQuery] = {}
        """Sites left unconstrained because their answer was late (for :meth:`retry_late`)."""

    def __call__(self, text: str, offset: int, ask: bool) -> Names | Literal[False] | None:
        """The members at ``offset`` (see :data:`~completion.members.Lookup`)."""
        key = (offset, hash(text))
        if key in self._memo:
            known = self._memo[key]
            if known is not None or not ask:
                return known if known is not None else self._late(text, offset)
            return None
        q = self.query(text, offset)
        found = self.oracle.cached(q)
        if found is None and not (ask and self.asks):
            return False
        if found is None:
            self.stats.memberQueries += 1
            t = time.perf_counter()
            found = self.oracle.members(q, self.budget_s)
            self.stats.oracleMs += (time.perf_counter() - t) * 1000
            if found.reason == "timeout":
                self.stats.memberTimeouts += 1
                self._late_queries.append(q)
                self._timed_out[key] = q
        names = _names(found)
        self.stats.memberUnknown += names is None
        self._memo[key] = names
        return names

    def settle(self, budget_s: float | None) -> None:
        """Wait, ``budget_s`` in all, for the answers that were late while decoding."""
        if not self._late_queries or budget_s is None:
            return
        t = time.perf_counter()
        deadline = t + budget_s
        for q in self._late_queries:
            self.oracle.members(q, max(0.0, deadline - time.perf_counter()))
        self._late_queries.clear()
        self.stats.reviewMs += (time.perf_counter() - t) * 1000

    def retry_late(self) -> bool:
        """Forget the decisions "unconstrained: late" whose answers have come since.

        Returns whether any did: a decode run again then constrains those sites.
        """
        arrived = [key for key, q in self._timed_out.items() if self.oracle.cached(q)]
        for key in arrived:
            del self._memo[key], self._timed_out[key]
        return bool(arrived)

    def _late(self, text: str, offset: int) -> Names | None:
        """An answer that came after this request gave up waiting (None: still none)."""
        found = self.oracle.cached(self.query(text, offset))
        return _names(found) if found is not None else None

    def prefetch(self, text: str, offset: int) -> None:
        """Start the query for ``offset`` now; its answer is cached when it comes."""
        self.oracle.members(self.query(text, offset), budget_s=0)


def _names(found: Members) -> Names | None:
    """An oracle's answer as the monitor's member list (None: unknown)."""
    return Names(found.names, found.reason == "object") if found.names else None


def member_queries(req: Any) -> Callable[[str, int], MemberQuery]:
    """How a request asks the oracle about the site whose dot ends ``text[:offset]``."""
    workspace = tuple(
        (path, text) for key, text in req.others if (path := uri_path(key)) is not None
    )
    return lambda text, offset: MemberQuery(
        text, offset, req.path, req.language, req.unsaved, workspace
    )


def cursor_site(text: str, cursor: int) -> tuple[str, int] | None:
    """The query (text, offset) for the member access ``text[:cursor]`` ends in, if any.

    ``obj.`` or ``obj.na``: the document with the name's typed part taken out, as the
    member monitor asks about the site when the model writes the name.
    """
    before = text[:cursor]
    dot = dot_before(before)
    if dot is None or site_at(before, dot) is None:
        return None
    return before[: dot + 1] + text[cursor:], dot + 1


def anticipate(oracle: MemberOracle, req: Any) -> bool:
    """Ask the oracle now about the member access at ``req``'s cursor (never waits).

    For an edit that typed ``obj.``: the answer is cached before the completion request
    comes (editors wait 150-200 ms of quiet first), so the request's first step does not
    wait for it. Python only (its oracle is a worker process; the symbol tables would
    run here). Returns whether a query was sent.
    """
    if not (req.options.members and req.language in PYTHON):
        return False
    site = cursor_site(req.text, req.cursor)
    if site is None or not cursor_in_code(req.language, req.text, req.cursor, req.tree):
        return False
    oracle.members(member_queries(req)(*site), budget_s=0)
    return True


class Guards:
    """The member monitor factory and the syntax checker of one request."""

    def __init__(
        self,
        req: Any,
        healed: str,
        oracle: MemberOracle,
        texts: Callable[[], TokenTexts],
        encode: Callable[[str], list[int]],
        budget_s: float | None,
        stats: ConstraintStats,
        asks: bool = True,
    ) -> None:
        opts = req.options
        self.req, self.stats = req, stats
        self.in_code = cursor_in_code(req.language, req.text, req.cursor, req.tree)
        self.members = bool(opts.members and supported(req.language) and self.in_code)
        self.syntax = (
            SyntaxChecker(req.language, req.text, req.cursor, req.tree) if opts.syntax else None
        )
        self._texts, self._encode = texts, encode
        self.lookup = OracleLookup(oracle, member_queries(req), budget_s, stats, asks)
        before = req.text[: req.cursor - len(healed)]
        self.context = MemberContext(
            before=before,
            after=req.text[req.cursor :],
            python=req.language in ("python", "py"),
            in_code=self.in_code,
            lookup=self.lookup,
            encode=encode,
            stats=stats,
        )
        self._refuted_uses: list[int] = []
        self._reviewed: tuple[tuple[str, str, int], int] | None = None
        """The last review: (text, healed, constrained uses) -> its cut."""
        if self.members:
            self._prefetch()

    def _prefetch(self) -> None:
        """Ask about the member access the text before the cursor ends in, if any."""
        site = cursor_site(self.req.text, self.req.cursor)
        if site is not None:
            self.lookup.prefetch(*site)

    def review(self, text: str, healed: str) -> int:
        """Where to cut ``text`` (shown after ``healed``): before an invented member.

        ``len(text)`` when there is none.
        """
        key = (text, healed, len(self.context.uses))
        if self._reviewed is not None and self._reviewed[0] == key:
            return self._reviewed[1]  # the engine reviews before a second decode and after
        budget = self.lookup.budget_s
        self.lookup.settle(None if budget is None else budget * REVIEW_STEPS)
        monitor = MemberMonitor(self._texts(), self.context)
        cut = max(0, monitor.review(healed + text) - len(healed))
        self._refuted_uses = monitor.refuted_uses
        self._reviewed = (key, cut)
        return cut

    def constrain_refuted_uses(self) -> bool:
        """Constrain from now on the ``self.`` sites the last review cut as uses.

        A statement opened by ``self.`` may define a member, so it is decoded free; when
        the decode wrote a use there instead (no assignment) and the member does not
        exist, the next decode of this request constrains it. True if any is new.
        """
        new = [dot for dot in self._refuted_uses if dot not in self.context.uses]
        self.context.uses.update(new)
        return bool(new)

    def monitor(self) -> MemberMonitor | None:
        """A fresh member monitor for one decode (None when members are off here)."""
        return MemberMonitor(self._texts(), self.context) if self.members else None
