"""Token constraints: stateful objects that say which tokens may come next.

One small interface (as xgrammar's ``GrammarMatcher`` and llguidance's ``LLMatcher``):

- ``fill_mask(bitmask, row)``: write the allowed next tokens into ``bitmask[row]``, a
  packed int32 bitmask (bit ``t % 32`` of word ``t // 32`` set = token ``t`` allowed);
- ``allows(token, ask=True) -> bool``: whether one token is allowed next (the same answer
  as its bit in :meth:`fill_mask`, at a fraction of the cost: the decode loop checks the
  model's pick first and fills a whole mask only when that is refused). With
  ``ask=False`` a constraint that would have to wait for an oracle says True instead;
- ``accept(token) -> bool``: advance by one token (False, and an error state, if the
  token was not allowed: never an exception in the middle of decoding);
- ``rollback(n)``: undo the last ``n`` accepted tokens (speculative verification);
- ``fork()``: an independent copy (alternatives, drafts);
- ``forced_tokens()``: tokens that are the only possibility from here (may be empty);
- ``is_terminated()``: nothing more may be generated.

The decode loop applies masks to the target model's logits before it picks or accepts
a token, so a constraint holds in drafts and in corrections alike. The member
monitor (:mod:`completion.members`) plugs in here too; several constraints combine by
AND-ing their masks (:class:`AllOf`). :func:`restrict` is the pick-side helper.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch


def mask_words(vocab_size: int) -> int:
    """int32 words needed for a bitmask over ``vocab_size`` tokens."""
    return (vocab_size + 31) // 32


def new_bitmask(rows: int, vocab_size: int) -> torch.Tensor:
    """An all-allowed ``[rows, words]`` int32 bitmask."""
    return torch.full((rows, mask_words(vocab_size)), -1, dtype=torch.int32)


_SHIFTS = torch.arange(32, dtype=torch.int32)


def unpack(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``[..., words]`` int32 -> ``[..., vocab_size]`` bool (True = allowed)."""
    bits = (bitmask.unsqueeze(-1) >> _SHIFTS.to(bitmask.device)) & 1  # [..., words, 32]
    return bits.flatten(-2)[..., :vocab_size].bool()


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor) -> torch.Tensor:
    """Logits with disallowed tokens at -inf (``logits [..., V]``, ``bitmask [..., W]``)."""
    allowed = unpack(bitmask, logits.shape[-1]).to(logits.device)
    return logits.masked_fill(~allowed, float("-inf"))


def forbid(bitmask: torch.Tensor, row: int, tokens: list[int] | set[int]) -> None:
    """Clear the bits of ``tokens`` in ``bitmask[row]``."""
    for t in tokens:
        word, bit = divmod(int(t), 32)
        if word < bitmask.shape[-1]:
            value = int(bitmask[row, word]) & ~(1 << bit) & 0xFFFFFFFF
            bitmask[row, word] = value - (1 << 32) if value >= 1 << 31 else value


class Constraint(Protocol):
    """The interface every constraint implements (see the module docstring)."""

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens into ``bitmask[row]``."""
        ...

    def allows(self, token: int, ask: bool = True) -> bool:
        """Whether ``token`` may come next (``ask=False``: True where an oracle is pending)."""
        ...

    def accept(self, token: int) -> bool:
        """Advance by ``token``; False (and an error state) if it was not allowed."""
        ...

    def rollback(self, n: int) -> None:
        """Undo the last ``n`` accepted tokens."""
        ...

    def fork(self) -> Constraint:
        """An independent copy."""
        ...

    def forced_tokens(self) -> list[int]:
        """Tokens that must come next (empty when there is a choice)."""
        ...

    def is_terminated(self) -> bool:
        """Whether nothing more may be generated."""
        ...


class AllowAll:
    """No constraint: every token allowed. Counts accepted tokens (for rollback checks)."""

    def __init__(self) -> None:
        self.accepted: list[int] = []

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        bitmask[row].fill_(-1)

    def allows(self, token: int, ask: bool = True) -> bool:
        return True

    def accept(self, token: int) -> bool:
        self.accepted.append(token)
        return True

    def rollback(self, n: int) -> None:
        if n > 0:
            del self.accepted[-n:]

    def fork(self) -> AllowAll:
        twin = AllowAll()
        twin.accepted = list(self.accepted)
        return twin

    def forced_tokens(self) -> list[int]:
        return []

    def is_terminated(self) -> bool:
        return False


class ForbidTokens(AllowAll):
    """Some tokens are never allowed (tests; also a building block, e.g. banned ids)."""

    def __init__(self, tokens: set[int]) -> None:
        super().__init__()
        self.tokens = set(tokens)
        self.error = False

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        bitmask[row].fill_(-1)
        forbid(bitmask, row, self.tokens)

    def allows(self, token: int, ask: bool = True) -> bool:
        return token not in self.tokens

    def accept(self, token: int) -> bool:
        if token in self.tokens or self.error:
            self.error = True
            return False
        return super().accept(token)

    def fork(self) -> ForbidTokens:
        twin = ForbidTokens(self.tokens)
        twin.accepted = list(self.accepted)
        twin.error = self.error
        return twin

    def is_terminated(self) -> bool:
        return self.error


class AllOf:
    """Several constraints at once: masks AND-ed, tokens accepted by all."""

    def __init__(self, parts: list[Constraint]) -> None:
        self.parts = parts

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        scratch = bitmask[row : row + 1].clone()
        bitmask[row].fill_(-1)
        for part in self.parts:
            part.fill_mask(scratch, 0)
            bitmask[row] &= scratch[0]

    def allows(self, token: int, ask: bool = True) -> bool:
        return all(part.allows(token, ask) for part in self.parts)

    def accept(self, token: int) -> bool:
        return all([part.accept(token) for part in self.parts])  # a list: advance all of them

    def rollback(self, n: int) -> None:
        for part in self.parts:
            part.rollback(n)

    def fork(self) -> AllOf:
        return AllOf([part.fork() for part in self.parts])

    def forced_tokens(self) -> list[int]:
        """The first part's forced tokens (a draft: every part checks it when verified)."""
        for part in self.parts:
            forced = part.forced_tokens()
            if forced:
                return forced
        return []

    def is_terminated(self) -> bool:
        return any(part.is_terminated() for part in self.parts)


class TokenTexts:
    """Every token's text, indexed to find the tokens that begin with a given text.

    Built once per tokenizer (decoding each id alone). Tokens whose text alone is not
    valid text (a piece of a multi-byte character) or is empty (special tokens) are
    never matched.
    """

    def __init__(self, texts: list[str]) -> None:
        self.raw = list(texts)
        """Per id: its text as decoded alone."""
        self._breaking: torch.Tensor | None = None
        self.texts = [s if s and "\ufffd" not in s else "" for s in texts]
        """Per id: its text ("" where never matched)."""
        usable = [(s, i) for i, s in enumerate(self.texts) if s]
        usable.sort()
        self.sorted_texts = [s for s, _ in usable]
        self.sorted_ids = torch.tensor([i for _, i in usable], dtype=torch.long)
        self.exact: dict[str, list[int]] = {}
        for s, i in usable:
            self.exact.setdefault(s, []).append(i)

    @staticmethod
    def breaks_first(piece: str) -> bool:
        """Whether ``piece`` holds a line break before its first visible character."""
        return "\n" in piece[: len(piece) - len(piece.lstrip())] or (
            "\r" in piece and not piece.strip()
        )

    def breaking_mask(self, words: int) -> torch.Tensor:
        """A ``[words]`` bitmask allowing every token but those :meth:`breaks_first`."""
        if self._breaking is None or self._breaking.shape[-1] != words:
            allowed = torch.ones(words * 32, dtype=torch.bool)
            for i, piece in enumerate(self.raw):
                if self.breaks_first(piece):
                    allowed[i] = False
            self._breaking = pack(allowed)
        return self._breaking

    @classmethod
    def of(cls, tokenizer: Any) -> TokenTexts:
        """The index of ``tokenizer``'s vocabulary (0.3 s for 49k tokens, 1 s for 152k)."""
        ids = [[i] for i in range(len(tokenizer))]
        return cls(tokenizer.batch_decode(ids, skip_special_tokens=True))

    def compatible(self, text: str) -> torch.Tensor:
        """Ids of the tokens that begin with ``text`` or are a beginning of it."""
        lo = bisect.bisect_left(self.sorted_texts, text)
        hi = bisect.bisect_left(self.sorted_texts, text + "\U0010ffff")
        longer = self.sorted_ids[lo:hi]
        shorter = [i for j in range(1, len(text)) for i in self.exact.get(text[:j], ())]
        return torch.cat([longer, torch.tensor(shorter, dtype=torch.long)])


def pack(allowed: torch.Tensor) -> torch.Tensor:
    """``[V]`` bool -> ``[words]`` int32 bitmask (the inverse of :func:`unpack`)."""
    words = mask_words(allowed.numel())
    bits = torch.zeros(words * 32, dtype=torch.int64)
    bits[: allowed.numel()] = allowed.to(torch.int64)
    packed = (bits.view(words, 32) << _SHIFTS.to(torch.int64)).sum(dim=1)
    return torch.where(packed >= 1 << 31, packed - (1 << 32), packed).to(torch.int32)


class TextPrefix(AllowAll):
    """The output must begin with ``text``: token healing.

    A prompt that ends inside a word (the user typed part of an identifier) is cut back
    to before the word, and the model re-creates it under this constraint: the next
    token must begin with what is left of ``text`` or be a beginning of it; once all of
    ``text`` is out, everything is allowed. So the model picks its own tokens across the
    cut (``" group"`` after ``"if not gr"``) instead of continuing from the odd tokens a
    half-typed word splits into. Where no token fits (never for ASCII text with a
    byte-level vocabulary), every token is allowed rather than none.
    """

    def __init__(self, texts: TokenTexts, text: str) -> None:
        super().__init__()
        self.texts = texts
        self.text = text
        self._left = [text]
        """What is left of ``text`` before each accepted token, and now (last)."""

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        left = self._left[-1]
        bitmask[row].fill_(-1)
        if not left:
            return
        ids = self.texts.compatible(left)
        if not len(ids):
            return
        vocab = bitmask.shape[-1] * 32
        allowed = torch.zeros(vocab, dtype=torch.bool)
        allowed[ids[ids < vocab]] = True
        bitmask[row] = pack(allowed)

    def allows(self, token: int, ask: bool = True) -> bool:
        left = self._left[-1]
        piece = self.texts.texts[token] if 0 <= token < len(self.texts.texts) else ""
        fits = bool(piece) and (piece.startswith(left) or left.startswith(piece))
        return not left or fits or not len(self.texts.compatible(left))

    def accept(self, token: int) -> bool:
        left = self._left[-1]
        piece = self.texts.texts[token] if 0 <= token < len(self.texts.texts) else ""
        if not self.allows(token):
            return False  # not allowed (where nothing fitted, everything was)
        self._left.append(left[len(piece) :] if piece and left.startswith(piece) else "")
        return super().accept(token)

    def rollback(self, n: int) -> None:
        if n > 0:
            del self._left[-n:]
        super().rollback(n)

    def fork(self) -> TextPrefix:
        twin = TextPrefix(self.texts, self.text)
        twin.accepted = list(self.accepted)
        twin._left = list(self._left)
        return twin


class NoLeadingBreak(AllowAll):
    """No line break before the suggestion's first visible character.

    For suggestions that must stay on the cursor's line (``multiline`` "never"): a model
    that would start a new line is made to write on this one instead. ``healed``, the
    text the prompt cut off and the model re-creates first, does not count as visible.
    Once a visible character is out, every token is allowed (a later break ends the
    line under the stop rules).
    """

    def __init__(self, texts: TokenTexts, healed: str = "") -> None:
        super().__init__()
        self.texts = texts
        self.healed = healed
        self._out = [""]
        """The text generated before each accepted token, and now (last)."""

    def _open(self) -> bool:
        """Whether no visible character is out yet."""
        return not self._out[-1][len(self.healed) :].strip()

    def _healing_left(self) -> str:
        """What is left of ``healed`` to re-create ("" once out, or once left behind)."""
        out = self._out[-1]
        return self.healed[len(out) :] if self.healed.startswith(out) else ""

    def _breaks(self, piece: str) -> bool:
        """Whether ``piece``, next, writes a line break before anything visible.

        Only what it writes past the healed text counts: a healed ``"\n    word"`` (a
        word alone on its line) is re-created, break and all.
        """
        left = self._healing_left()
        if left and left.startswith(piece):
            return False
        return self.texts.breaks_first(piece[len(left) :] if piece.startswith(left) else piece)

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        bitmask[row].fill_(-1)
        if not self._open():
            return
        bitmask[row] &= self.texts.breaking_mask(bitmask.shape[-1])
        left = self._healing_left()
        if left:  # the healed text's own breaks are allowed
            vocab = bitmask.shape[-1] * 32
            ids = [i for i in self.texts.compatible(left).tolist() if i < vocab]
            allowed = unpack(bitmask[row], vocab)
            allowed[[i for i in ids if not self._breaks(self.texts.raw[i])]] = True
            bitmask[row] = pack(allowed)

    def allows(self, token: int, ask: bool = True) -> bool:
        raw = self.texts.raw[token] if 0 <= token < len(self.texts.raw) else ""
        return not (self._open() and self._breaks(raw))

    def accept(self, token: int) -> bool:
        piece = self.texts.texts[token] if 0 <= token < len(self.texts.texts) else ""
        if not self.allows(token):
            return False
        self._out.append(self._out[-1] + piece)
        return super().accept(token)

    def rollback(self, n: int) -> None:
        if n > 0:
            del self._out[-n:]
        super().rollback(n)

    def fork(self) -> NoLeadingBreak:
        twin = NoLeadingBreak(self.texts, self.healed)
        twin.accepted = list(self.accepted)
        twin._out = list(self._out)
        return twin


@dataclass
class ConstraintStats:
    """Counters of the member monitor and the syntax check (names as in ``pie/stats``)."""

    memberQueries: int = 0
    """Member lists asked of the oracle (cached answers not counted)."""
    memberMasked: int = 0
    """Decode steps where the member monitor refused the model's pick."""
    memberUnknown: int = 0
    """Member accesses left unconstrained: the oracle knew nothing, or would not say."""
    memberTimeouts: int = 0
    """Oracle answers that did not come within the step's budget."""
    memberCut: int = 0
    """Finished suggestions cut before an invented member."""
    memberRedecodes: int = 0
    """Suggestions decoded again, constrained, once late oracle answers refuted a member."""
    syntaxChecks: int = 0
    syntaxTrimmed: int = 0
    syntaxClosed: int = 0
    syntaxDropped: int = 0
    maskMs: float = 0.0
    """Time spent checking picks and filling masks."""
    oracleMs: float = 0.0
    """Time decode steps waited for the member oracle."""
    reviewMs: float = 0.0
    """Time finished suggestions waited for the answers that were late while decoding."""
    syntaxMs: float = 0.0
    """Time spent in syntax checks."""


TOP_CHECKED = 64
"""Picks :func:`restrict` checks one by one before it fills a whole mask."""


def restrict(
    logits: torch.Tensor,
    constraint: Constraint | None,
    mask: torch.Tensor | None,
    *,
    greedy: bool,
    margin: bool,
    stats: ConstraintStats | None = None,
) -> torch.Tensor:
    """Logits to pick from under ``constraint``: the pick is the fully masked logits' pick.

    Greedy, the model's top :data:`TOP_CHECKED` tokens are checked best first
    (:meth:`Constraint.allows`); the first allowed one is the pick (the top one nearly
    always), and no mask is filled: the tokens above it are taken out, and with
    ``margin`` so are those between it and the runner-up, the best token after it the
    constraint does not refuse without asking an oracle (so the margin is never larger
    than among allowed tokens). A whole mask is filled only when none of them is allowed,
    and always when sampling (the speculative sampling rule needs the normalised
    constrained distribution): into ``mask`` (``[1, words]``), then applied; a mask that
    allows nothing is not applied. Checking picks one by one also spares a whole mask's
    questions to an oracle about tokens the model would not pick. (A top token may be
    refused where a whole line of the top is: line breaks in one-line mode, after a
    name the model would end its line.)
    """
    if constraint is None or mask is None:
        return logits
    t = time.perf_counter()
    try:
        if greedy:
            top = torch.topk(logits, min(TOP_CHECKED, logits.shape[-1])).indices.tolist()
            for j, token in enumerate(top):
                if constraint.allows(token):
                    return _without_refused(logits, constraint, top, j, margin)
        constraint.fill_mask(mask, 0)
        masked = apply_bitmask(logits, mask[0])
        # Nothing allowed (a name no token can finish): unconstrained rather than stuck.
        return masked if bool(torch.isfinite(masked).any()) else logits
    finally:
        if stats is not None:
            stats.maskMs += (time.perf_counter() - t) * 1000


def _without_refused(
    logits: torch.Tensor, constraint: Constraint, top: list[int], pick: int, margin: bool
) -> torch.Tensor:
    """``logits`` without ``top[:pick]`` (refused), and with ``margin`` the runner-up next.

    The runner-up is the first of ``top[pick + 1:]`` the constraint does not refuse
    without asking an oracle; the ones before it are taken out too (all of them when
    there is none: a smaller margin, never a larger).
    """
    refused = top[:pick]
    if margin:
        rest = top[pick + 1 :]
        allowed = (k for k, token in enumerate(rest) if constraint.allows(token, ask=False))
        refused += rest[: next(allowed, len(rest))]
    if not refused:
        return logits
    out = logits.clone()
    out[refused] = float("-inf")
    return out
