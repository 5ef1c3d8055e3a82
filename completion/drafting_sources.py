"""Drafting sources: text the model is likely to copy, looked up by the context's last tokens.

A source is an :class:`NgramIndex` over token sequences. Given the context (the prompt's
last tokens and what was generated so far), :meth:`NgramIndex.find` returns what followed
the longest of the context's last :data:`MAX_NGRAM` .. :data:`MIN_NGRAM` tokens in the
most recently added sequence holding them, at their first place there. The sources:

- the prompt, and the output as it grows (the drafting policy builds that index);
- :class:`History`: earlier suggestions, each with the prompt tokens before it; the
  document's own come last so that they win, and another document's have no start (a
  source of their own, "elsewhere");
- :class:`Workspace`: the other open documents, tokenized once per version.

A continuation is only a proposal: nothing here runs the model, and a wrong draft costs
time, never output (verification keeps only what the model agrees with).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

MAX_NGRAM = 4
"""Longest context suffix (in tokens) looked up in the draft sources."""
MIN_NGRAM = 2
"""Shortest: a single-token match drafts noise too often to pay on a CPU."""
DRAFT_SOURCES = ("aligned", "history", "elsewhere", "prompt", "workspace", "forced")
"""Where drafts come from (see :meth:`~completion.drafting_policy.Drafter.propose`)."""
WORKSPACE_DOCS = 8
"""Other open documents drafted from (the most recently used)."""
WORKSPACE_CHARS = 65536
"""Characters of each such document indexed (its beginning)."""

_MIX = 0x9E3779B97F4A7C15
"""Odd 64-bit multiplier that folds an n-gram's token ids into one integer key."""
_MASK = (1 << 64) - 1


def _gram_key(gram: Sequence[int]) -> int:
    """The integer key of an n-gram (what :func:`_gram_keys` computes, one at a time)."""
    key = 0
    for t in gram:
        key = (key * _MIX + t + 1) & _MASK
    return key


def _gram_keys(seq: np.ndarray, n: int) -> np.ndarray:
    """Keys of every n-gram of ``seq`` but the last (which has no continuation)."""
    count = len(seq) - n
    key = np.zeros(count, dtype=np.uint64)
    for j in range(n):
        key = key * np.uint64(_MIX) + seq[j : j + count] + np.uint64(1)  # wraps mod 2**64
    return key


class Place(NamedTuple):
    """Where an n-gram was found: a sequence, and the offset just after the n-gram."""

    seq: int
    offset: int


class Match(NamedTuple):
    """A continuation found for a context (:meth:`NgramIndex.find`)."""

    tokens: list[int]
    """What followed the matched n-gram (empty: nothing matched)."""
    n: int
    """The matched n-gram's length (0: nothing matched)."""
    seq: int
    """The sequence it was found in (-1: nothing matched)."""
    offset: int
    """Where ``tokens`` start in that sequence."""


NO_MATCH = Match([], 0, -1, 0)


class NgramIndex:
    """Token sequences indexed by their n-grams (n = MIN_NGRAM..MAX_NGRAM).

    An n-gram is found in the most recently added sequence that has it, at its first
    place there: in a repetitive sequence the last occurrence would leave almost nothing
    to draft. N-grams are keyed by a 64-bit hash of their ids, one table per n, built
    with numpy (every completion indexes its prompt before its first draft). Two n-grams
    sharing a key (about one chance in 2**64 per pair) would only cost a rejected draft.
    """

    def __init__(self) -> None:
        self.seqs: list[list[int]] = []
        self._index: dict[int, dict[int, int]] = {n: {} for n in range(MIN_NGRAM, MAX_NGRAM + 1)}
        """n -> n-gram key -> sequence << 32 | offset after the n-gram."""

    def __len__(self) -> int:
        return sum(len(table) for table in self._index.values())

    def add(self, seq: list[int]) -> None:
        """Index a sequence (later sequences win; inside one, the first occurrence)."""
        self.add_many([seq])

    def add_many(self, seqs: list[list[int]]) -> None:
        """Index sequences in order, in one pass (as :meth:`add` one after the other)."""
        if not seqs:
            return
        first = len(self.seqs)
        self.seqs.extend(seqs)
        lens = np.array([len(q) for q in seqs], dtype=np.int64)
        flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.uint64, count=lens.sum())
        owner = np.repeat(np.arange(first, first + len(seqs), dtype=np.int64), lens)
        pos = np.arange(len(flat), dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        size = np.repeat(lens, lens)
        for n, table in self._index.items():
            if len(flat) <= n:
                continue
            keys = _gram_keys(flat, n)
            at = slice(0, len(keys))
            # An n-gram counts where it and the token after it lie in one sequence.
            keep = pos[at] + n < size[at]
            # Written in the order later writes win: sequences first to last, inside
            # one back to front (its first occurrence is written last and wins).
            order = np.lexsort((-pos[at][keep], owner[at][keep]))
            ends = (owner[at][keep] << 32) + pos[at][keep] + n
            table.update(zip(keys[keep][order].tolist(), ends[order].tolist(), strict=True))

    def extend(self, s: int, tokens: list[int]) -> None:
        """Append tokens to sequence ``s`` and index the new n-grams."""
        seq = self.seqs[s]
        start = len(seq)
        seq.extend(tokens)
        for n, table in self._index.items():
            for i in range(max(0, start - n), len(seq) - n):
                key = _gram_key(seq[i : i + n])
                hit = table.get(key)
                if hit is None or hit >> 32 != s:
                    table[key] = (s << 32) | (i + n)

    def get(self, gram: Sequence[int]) -> Place | None:
        """Where ``gram`` occurs (its first place in the latest sequence), if indexed."""
        table = self._index.get(len(gram))
        hit = None if table is None else table.get(_gram_key(gram))
        return None if hit is None else Place(hit >> 32, hit & 0xFFFFFFFF)

    def find(self, context: list[int], k: int) -> Match:
        """Up to ``k`` tokens that followed the longest indexed suffix of ``context``."""
        for n in range(min(MAX_NGRAM, len(context)), MIN_NGRAM - 1, -1):
            hit = self.get(context[-n:])
            if hit is not None:
                cont = self.seqs[hit.seq][hit.offset : hit.offset + k]
                if cont:
                    return Match(cont, n, hit.seq, hit.offset)
        return NO_MATCH


class Suggestion(NamedTuple):
    """An earlier suggestion in :class:`History`."""

    key: str
    """The document it was made for."""
    tokens: list[int]
    """The prompt's last tokens before it, then the suggestion."""
    start: int
    """Where the suggestion starts in ``tokens``."""


class HistoryIndex(NamedTuple):
    """:class:`History` indexed for one completion (:meth:`History.index_for`)."""

    ngram_index: NgramIndex
    starts: list[int | None]
    """Per indexed sequence: where its suggestion starts; None for other documents'."""


class History:
    """Earlier suggestions, each with the last prompt tokens before it."""

    def __init__(self, max_items: int = 64) -> None:
        self.items: deque[Suggestion] = deque(maxlen=max_items)

    def remember(self, key: str, context: list[int], output: list[int]) -> None:
        """An earlier completion ``output`` for document ``key``, after ``context``."""
        if output:
            self.items.append(Suggestion(key, [*context, *output], len(context)))

    def forget(self, key: str) -> None:
        """Drop document ``key``'s suggestions (it was closed)."""
        kept = [item for item in self.items if item.key != key]
        self.items = deque(kept, maxlen=self.items.maxlen)

    def keys(self) -> set[str]:
        """Documents with suggestions remembered."""
        return {item.key for item in list(self.items)}

    def index_for(
        self, key: str, expected: tuple[list[int], list[int]] | None = None
    ) -> HistoryIndex:
        """An index over the history for a completion in document ``key``.

        This document's suggestions go last, so their matches win; ``expected`` (the
        prompt's last tokens, and the tokens the model will likely say after them: see
        :func:`~completion.suggestion_memory.expected_rest`) goes after them all. Other
        documents' suggestions have no start (None): they are a source of their own
        ("elsewhere"), never "aligned" (a few tokens matching where another document's
        suggestion started say little), with an acceptance learned apart.
        """
        ordered = [i for i in self.items if i.key != key] + [i for i in self.items if i.key == key]
        if expected is not None and expected[1]:
            context, tokens = expected
            ordered.append(Suggestion(key, [*context, *tokens], len(context)))
        index = NgramIndex()
        index.add_many([list(item.tokens) for item in ordered])
        return HistoryIndex(index, [i.start if i.key == key else None for i in ordered])


class IndexedText(NamedTuple):
    """An open document as :class:`Workspace` indexed it."""

    text: str
    """The text it was indexed from (the object itself: unchanged means identical)."""
    ngram_index: NgramIndex


class Workspace:
    """Other open documents as a draft source: code is copied between files.

    Each document is tokenized and indexed once per version, lazily (when a completion
    in another document drafts), and only its first ``max_chars`` characters.
    """

    def __init__(
        self,
        encode: Callable[[str], list[int]],
        max_docs: int = WORKSPACE_DOCS,
        max_chars: int = WORKSPACE_CHARS,
    ) -> None:
        self._encode = encode
        self.max_docs = max_docs
        self.max_chars = max_chars
        self._docs: dict[str, IndexedText] = {}

    def __len__(self) -> int:
        """Documents indexed now."""
        return len(self._docs)

    def forget(self, key: str) -> None:
        """Drop document ``key``'s index (it was closed)."""
        self._docs.pop(key, None)

    def keys(self) -> set[str]:
        """Documents indexed now."""
        return set(list(self._docs))

    def indexes(self, others: tuple[tuple[str, str], ...]) -> list[NgramIndex]:
        """Indexes of ``others`` ((key, text), most relevant first), built as needed.

        Documents not in ``others`` are dropped (closed, or past ``max_docs``).
        """
        wanted = others[: self.max_docs]
        out = []
        for key, text in wanted:
            held = self._docs.get(key)
            # The text object itself is kept: an unchanged document is the same object,
            # so this check costs nothing per request (no slice, no character compare).
            if held is None or held.text != text:
                index = NgramIndex()
                index.add(self._encode(text[: self.max_chars]))
                held = self._docs[key] = IndexedText(text, index)
            out.append(held.ngram_index)
        keep = {key for key, _ in wanted}
        for key in [k for k in self._docs if k not in keep]:
            del self._docs[key]
        return out
