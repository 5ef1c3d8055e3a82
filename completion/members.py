"""The member monitor: a member access may only name a member the oracle knows.

Monitor-guided decoding (Agrawal et al., NeurIPS 2023) for the decode loop's constraint
hook. A *site* is a ``.`` in code after a receiver (a name, ``)`` or ``]``; not a
number), followed by the member's name as far as it is written. At each site the
oracle (:mod:`completion.member_oracle`) is asked for the receiver's members, with the
generated text inserted into the document; the name must stay a prefix of one of them
while it is written, and be one of them once a character that cannot continue a name
follows. Where the oracle knows nothing (no list, a dynamic type, an answer later than
the budget), the site is not constrained.

Tokens may span a site: Qwen's tokenizer writes ``.append`` as one token (the dot and
the name), and any tokenizer may write ``append(``. So a token is judged on the text it
makes, not on where it starts: every site whose name overlaps the token is checked.
Sites whose receiver is ``self`` or ``cls`` at the start of a statement may be an
assignment that creates the member (``self.x = ...``): they are not constrained while
decoding, and :meth:`MemberMonitor.review` cuts a finished suggestion before an unknown
member there unless an assignment follows it.

Strings and comments are no code: the monitor follows them in the generated text with
a small scanner (:class:`Scan`), and is off when the cursor itself is in one.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple

import torch

from .constraints import ConstraintStats, TokenTexts, pack

STATEMENT_RECEIVERS = frozenset({"self", "cls", "this"})
"""Receivers whose member, written at a statement's start, may be created right there."""
_ASSIGNED = re.compile(r"[ \t]*(=(?!=)|:(?!=)|[-+*/%&|^@]=|//=|\*\*=|>>=|<<=|,)")
"""What follows a member that is an assignment target (or one of several targets)."""


def name_char(c: str) -> bool:
    """Whether ``c`` can continue an identifier (Python and JavaScript, ``$`` included)."""
    return c.isalnum() or c == "_" or c == "$"


def _name_end(text: str, start: int) -> int:
    end = start
    while end < len(text) and name_char(text[end]):
        end += 1
    return end


class Names:
    """A member list, sorted for prefix queries."""

    def __init__(self, names: frozenset[str], only_object: bool = False) -> None:
        self.set = names
        self.sorted = sorted(names)
        self.only_object = only_object
        """The receiver is known only as ``object``: code uses such a value as something
        narrower, often narrowed after the access (``v.base if isinstance(v, T) else
        v``). Decoding leaves its site free; the review holds its member to an
        ``isinstance`` of the receiver later on the suggestion's line."""

    def starting(self, prefix: str) -> list[str]:
        """The names that begin with ``prefix``."""
        lo = bisect.bisect_left(self.sorted, prefix)
        hi = bisect.bisect_left(self.sorted, prefix + "\U0010ffff")
        return self.sorted[lo:hi]

    def fits(self, name: str, complete: bool) -> bool:
        """Whether ``name`` is a member (complete) or the beginning of one."""
        return name in self.set if complete else bool(self.starting(name))


Lookup = Callable[[str, int, bool], "Names | Literal[False] | None"]
"""``lookup(text, offset, ask)``: the members at the site whose dot ends ``text[:offset]``
(``text`` = document with the generated text inserted): :class:`Names`, None when the
oracle knows nothing, or False when the answer is not there yet and ``ask`` is False."""


##### Strings and comments in generated text #####


@dataclass(frozen=True)
class Scan:
    """Where a scanner of code stands.

    In code (``open`` empty) or inside a string or comment (``open`` is its opener: a
    quote, a triple quote, ``#``, ``//`` or ``/*``).
    """

    open: str = ""
    escaped: bool = False

    def feed(self, text: str, python: bool) -> tuple[Scan, list[int]]:
        """The state after ``text``, and the offsets in ``text`` of dots in code."""
        state, dots, i = self, [], 0
        while i < len(text):
            state, i, dot = state._step(text, i, python)
            if dot:
                dots.append(i - 1)
        return state, dots

    def _step(self, text: str, i: int, python: bool) -> tuple[Scan, int, bool]:
        c = text[i]
        if not self.open:
            return self._in_code(text, i, python)
        if self.open in ("#", "//"):
            return (Scan() if c in "\r\n" else self), i + 1, False
        if self.open == "/*":
            return (Scan() if text.startswith("*/", i) else self), i + (2 if c == "*" else 1), False
        if self.escaped:
            return Scan(self.open), i + 1, False
        if c == "\\":
            return Scan(self.open, True), i + 1, False
        if text.startswith(self.open, i):
            return Scan(), i + len(self.open), False
        if len(self.open) == 1 and self.open != "`" and c in "\r\n":
            return Scan(), i + 1, False  # an unterminated one-line string ends here
        return self, i + 1, False

    @staticmethod
    def _in_code(text: str, i: int, python: bool) -> tuple[Scan, int, bool]:
        c = text[i]
        if python and c == "#":
            return Scan("#"), i + 1, False
        if not python and text.startswith(("//", "/*"), i):
            return Scan(text[i : i + 2]), i + 2, False
        if c in "'\"" or (c == "`" and not python):
            triple = c * 3
            if python and text.startswith(triple, i):
                return Scan(triple), i + 3, False
            return Scan(c), i + 1, False
        return Scan(), i + 1, c == "."


##### Sites #####


class Site(NamedTuple):
    """A member access in a text: the dot's offset, the name written after it."""

    dot: int
    name: str
    complete: bool
    """Whether a character that cannot continue a name follows it."""


def receiver_before(text: str, dot: int) -> bool:
    """Whether ``text[:dot]`` ends with something that has members (not a number)."""
    if dot <= 0:
        return False
    c = text[dot - 1]
    if c in ")]":
        return True
    if not name_char(c):
        return False
    start = dot - 1
    while start > 0 and name_char(text[start - 1]):
        start -= 1
    if text[start].isdigit():
        return False  # 1.5, 1e3.
    return not (start > 0 and text[start - 1] == "." and text[start - 2 : start - 1].isdigit())


def site_at(text: str, dot: int) -> Site | None:
    """The site of the dot at ``text[dot]``, if it is one (any code check is the caller's)."""
    if not receiver_before(text, dot):
        return None
    end = _name_end(text, dot + 1)
    return Site(dot, text[dot + 1 : end], end < len(text))


def dot_before(text: str, end: int | None = None) -> int | None:
    """The dot before the name that ``text[:end]`` ends in (or right before its end)."""
    start = len(text) if end is None else end
    while start > 0 and name_char(text[start - 1]):
        start -= 1
    return start - 1 if start > 0 and text[start - 1] == "." else None


def _name_start(text: str, dot: int) -> int:
    """Where the name that ends right before ``text[dot]`` starts (``dot``: none)."""
    start = dot
    while start > 0 and name_char(text[start - 1]):
        start -= 1
    return start


def narrowed_after(text: str, dot: int, end: int) -> bool:
    """Whether the receiver of the site at ``dot`` is narrowed after ``end`` on its line.

    By an ``isinstance(receiver, ...)`` (``v.base if isinstance(v, T) else v``); the
    receiver is the name right before the dot.
    """
    receiver = text[_name_start(text, dot) : dot]
    line_end = text.find("\n", end)
    rest = text[end : line_end if line_end >= 0 else len(text)]
    return (
        bool(receiver)
        and re.search(rf"\bisinstance\(\s*{re.escape(receiver)}\s*,", rest) is not None
    )


def may_define(text: str, dot: int) -> bool:
    """Whether the site at ``dot`` is ``self.`` / ``cls.`` / ``this.`` opening a statement."""
    start = _name_start(text, dot)
    if text[start:dot] not in STATEMENT_RECEIVERS:
        return False
    line = text[max(text.rfind("\n", 0, start), text.rfind(";", 0, start)) + 1 : start]
    return not line.strip()


##### The constraint #####


@dataclass
class MemberContext:
    """The document around the generated text: ``before`` + generated + ``after``."""

    before: str
    """The document up to where the generated text goes (the prompt's healed text cut)."""
    after: str
    """The document after the cursor."""
    python: bool
    in_code: bool
    """Whether the cursor is in code (not a string or comment): else no monitoring."""
    lookup: Lookup
    encode: Callable[[str], list[int]]
    """Text -> token ids (the rest of the only name left becomes a draft)."""
    stats: ConstraintStats = field(default_factory=ConstraintStats)
    """Where refused picks are counted (``memberMasked``; shared by forks)."""
    uses: set[int] = field(default_factory=set)
    """Dots (offsets in ``before`` + generated) of ``self.``-opened sites known to be
    uses, not definitions: a decode wrote something else than an assignment there and
    the review refuted its member, so the next decode constrains them."""

    def defines(self, text: str, dot: int) -> bool:
        """Whether the site at ``dot`` may define a member (:func:`may_define`)."""
        return dot not in self.uses and may_define(text, dot)


class MemberMonitor:
    """The member monitor as a :class:`~completion.constraints.Constraint`.

    It keeps, per accepted token, the generated text and the scanner state after it.
    :meth:`allows` and :meth:`fill_mask` give the same answer for every token.
    """

    def __init__(self, texts: TokenTexts, context: MemberContext) -> None:
        self.texts = texts
        self.ctx = context
        self._out = [""]
        self._scan = [Scan()]
        self.accepted: list[int] = []
        self.refuted_uses: list[int] = []
        """Dots of sites that may define a member where :meth:`review` cut (not assigned)."""

    ##### the protocol #####

    def allows(self, token: int, ask: bool = True) -> bool:
        """Whether ``token`` keeps every member access legal (counts refusals)."""
        ok = self._legal(self._piece(token), ask)
        if not ok and ask:
            self.ctx.stats.memberMasked += 1
        return ok

    def accept(self, token: int) -> bool:
        """Advance by ``token`` (judged without waiting for the oracle)."""
        piece = self._piece(token)
        ok = self._legal(piece, ask=False)
        state, _ = self._scan[-1].feed(piece, self.ctx.python)
        self._out.append(self._out[-1] + piece)
        self._scan.append(state)
        self.accepted.append(token)
        return ok

    def rollback(self, n: int) -> None:
        """Undo the last ``n`` tokens."""
        if n > 0:
            del self._out[-n:], self._scan[-n:], self.accepted[-n:]

    def fork(self) -> MemberMonitor:
        """An independent copy (same document and oracle)."""
        twin = MemberMonitor(self.texts, self.ctx)
        twin._out, twin._scan, twin.accepted = (
            list(self._out),
            list(self._scan),
            list(self.accepted),
        )
        return twin

    def is_terminated(self) -> bool:
        """Never: the monitor only narrows names."""
        return False

    def forced_tokens(self) -> list[int]:
        """The rest of the only member left that begins with the name written so far."""
        site = self._open_site(ask=False)
        if site is None or not isinstance(site[1], Names):
            return []
        found, names = site[0], site[1]
        left = names.starting(found.name)
        if len(left) != 1 or left[0] == found.name:
            return []
        return self.ctx.encode(left[0][len(found.name) :])

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        """Allow exactly the tokens :meth:`allows` allows (asking the oracle)."""
        bitmask[row].fill_(-1)
        if not self._active():
            return
        vocab = bitmask.shape[-1] * 32
        refused = self._refused_at_end(vocab)
        if refused is None:
            return
        allowed = torch.zeros(vocab, dtype=torch.bool)  # beyond the index: as special tokens
        n = min(vocab, len(refused))
        allowed[:n] = ~refused[:n]
        allowed[n:] = self._legal("\ufffd", ask=True)  # ids past the tokenizer's
        bitmask[row] = pack(allowed)

    ##### judging one token #####

    def _piece(self, token: int) -> str:
        """The token's text (U+FFFD for a piece of a character or a special token).

        Such tokens cannot continue a name: they end it, like any other character.
        """
        if not 0 <= token < len(self.texts.texts):
            return "\ufffd"
        return self.texts.texts[token] or "\ufffd"

    def _active(self) -> bool:
        return self.ctx.in_code and not self._scan[-1].open

    def _legal(self, piece: str, ask: bool) -> bool:
        """Whether every site whose name overlaps ``piece`` (appended) is legal."""
        if not piece or not self._active():
            return True
        out = self._out[-1]
        text = self.ctx.before + out + piece
        start = len(text) - len(piece)
        _, dots = self._scan[-1].feed(piece, self.ctx.python)
        candidates = [start + d for d in dots]
        head = dot_before(self.ctx.before + out)
        if head is not None:
            candidates.insert(0, head)
        return all(self._site_ok(text, dot, ask) for dot in candidates)

    def _site_ok(self, text: str, dot: int, ask: bool) -> bool:
        site = site_at(text, dot)
        if site is None or self.ctx.defines(text, dot):
            return True
        names = self._decoding(text, dot, ask)
        if names is False:
            return True  # not known yet, and not asked to wait
        return names is None or names.fits(site.name, site.complete)

    def _decoding(self, text: str, dot: int, ask: bool) -> Names | Literal[False] | None:
        """The members at the site at ``dot`` as decoding uses them (``object``: free)."""
        names = self.ctx.lookup(text[: dot + 1] + self.ctx.after, dot + 1, ask)
        return None if isinstance(names, Names) and names.only_object else names

    def _open_site(self, ask: bool) -> tuple[Site, Names | bool | None] | None:
        """The site the generated text ends in, with its members (see :data:`Lookup`)."""
        text = self.ctx.before + self._out[-1]
        dot = dot_before(text)
        if dot is None:
            return None
        site = site_at(text, dot)
        if site is None or self.ctx.defines(text, dot):
            return None
        return site, self._decoding(text, dot, ask)

    ##### the whole mask #####

    def _refused_at_end(self, vocab: int) -> torch.Tensor | None:
        """Per token of the index: refused next (None: all allowed)."""
        text = self.ctx.before + self._out[-1]
        site = self._open_site(ask=True)
        refused = torch.zeros(len(self.texts.texts), dtype=torch.bool)
        if site is not None and isinstance(site[1], Names):
            found, names = site[0], site[1]
            refused |= self._name_refusals(found.name, names)
            if found.name in names.set:
                self._dots_refused(text, refused)
            else:
                refused |= self.texts_index.starts_other
            self._check_odd(refused)
            return refused
        if receiver_before(text + ".", len(text)):
            self._dots_refused(text, refused)
            self._check_odd(refused)
            return refused
        return None

    def _name_refusals(self, written: str, names: Names) -> torch.Tensor:
        """Tokens starting with a name character that do not continue ``written`` legally."""
        index = self.texts_index
        allowed = torch.zeros(len(self.texts.texts), dtype=torch.bool)
        for name in names.starting(written):
            rest = name[len(written) :]
            if rest:  # after a whole name: only other characters (not refused here)
                allowed[index.continuing(rest)] = True
        return index.starts_name & ~allowed

    def _dots_refused(self, text: str, refused: torch.Tensor) -> None:
        """Refuse the ``.name`` tokens that would open an illegal site after ``text``."""
        index = self.texts_index
        if not len(index.dot_names):
            return
        dot = len(text)
        joined = text + "."
        if self.ctx.defines(joined, dot):
            return
        names = self._decoding(joined, dot, True)
        if not isinstance(names, Names):
            return
        allowed = torch.zeros(len(self.texts.texts), dtype=torch.bool)
        for name in names.sorted:
            allowed[index.continuing(name, lead=".")] = True
        refused |= index.dot_name_mask & ~allowed

    def _check_odd(self, refused: torch.Tensor) -> None:
        """Tokens with a site inside (not at their start): judged one by one."""
        for token in self.texts_index.odd:
            refused[token] = not self._legal(self.texts.texts[token], ask=True)

    @property
    def texts_index(self) -> MemberIndex:
        """The token sets of this tokenizer (:class:`MemberIndex`)."""
        return MemberIndex.of(self.texts)

    ##### after decoding #####

    def review(self, suggestion: str) -> int:
        """Where to cut a finished suggestion: before its first unknown member.

        Every site in ``suggestion`` with a known member list is checked (answers that
        came late count now; sites that may define a member pass when an assignment
        follows; a cut at one that does not is noted in :attr:`refuted_uses`). Returns
        ``len(suggestion)`` when nothing is wrong.
        """
        if not self.ctx.in_code:
            return len(suggestion)
        base = len(self.ctx.before)
        text = self.ctx.before + suggestion
        _, dots = Scan().feed(suggestion, self.ctx.python)
        head = dot_before(text, base)
        for dot in ([head] if head is not None else []) + [base + d for d in dots]:
            site = site_at(text, dot)
            if site is None:
                continue
            end = dot + 1 + len(site.name)
            defines = self.ctx.defines(text, dot)
            if defines and _ASSIGNED.match(text, end):
                continue
            # A site left free while decoding (it may define) is asked now, waiting.
            names = self.ctx.lookup(text[: dot + 1] + self.ctx.after, dot + 1, defines)
            if isinstance(names, Names) and not names.fits(site.name, end < len(text)):
                if names.only_object and narrowed_after(text, dot, end):
                    continue
                if defines:
                    self.refuted_uses.append(dot)
                return max(0, dot - base)
        return len(suggestion)


def _inner_site(t: str) -> bool:
    """Whether ``t`` holds a dot after a receiver character and before a name character."""
    return any(
        t[j] == "." and (name_char(t[j - 1]) or t[j - 1] in ")]") and name_char(t[j + 1])
        for j in range(1, len(t) - 1)
    )


class MemberIndex:
    """Per tokenizer: the token sets the monitor's masks are made of (built once)."""

    _built: ClassVar[dict[int, MemberIndex]] = {}

    def __init__(self, texts: TokenTexts) -> None:
        self.texts = texts
        names = [bool(t) and name_char(t[0]) for t in texts.texts]
        self.starts_name = torch.tensor(names, dtype=torch.bool)
        """Tokens whose text begins with a name character."""
        self.starts_other = ~self.starts_name
        """Tokens whose text begins with another character (or is none: a piece of a
        character, a special token)."""
        dotted = [t[:1] == "." and name_char(t[1:2] or " ") for t in texts.texts]
        self.dot_name_mask = torch.tensor(dotted, dtype=torch.bool)
        """Tokens ``.name...``: a dot and a name character (Qwen's ``.append``)."""
        odd = [i for i, t in enumerate(texts.texts) if "." in t[1:-1] and _inner_site(t)]
        self.dot_names = self.dot_name_mask.nonzero().flatten()
        self.odd = odd
        """Tokens with a dot after a name character inside them (judged one by one)."""

    @classmethod
    def of(cls, texts: TokenTexts) -> MemberIndex:
        """The index of ``texts`` (cached per index object)."""
        key = id(texts)
        index = cls._built.get(key)
        if index is None or index.texts is not texts:
            index = cls._built[key] = MemberIndex(texts)
        return index

    def continuing(self, rest: str, lead: str = "") -> torch.Tensor:
        """Tokens that write ``lead + rest`` legally.

        A beginning of it (past ``lead``), or all of it and then a character that
        cannot continue a name.
        """
        whole = lead + rest
        ids = [
            i
            for j in range(len(lead) + 1, len(whole) + 1)
            for i in self.texts.exact.get(whole[:j], ())
        ]
        texts, sorted_ids = self.texts.sorted_texts, self.texts.sorted_ids
        lo = bisect.bisect_right(texts, whole)
        hi = bisect.bisect_left(texts, whole + "\U0010ffff")
        for k in range(lo, hi):
            if not name_char(texts[k][len(whole)]):
                ids.append(int(sorted_ids[k]))
        return torch.tensor(ids, dtype=torch.long)
