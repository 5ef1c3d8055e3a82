"""Lossless speculative decoding with model-free drafts.

Drafts come from text the model is likely to copy: earlier suggestions for the same
document (the user re-asks after typing or a small edit, and the model says most of it
again), the prompt itself (prefix and, for FIM, the suffix), and other open documents
(:class:`Workspace`).
A draft is verified in one forward pass on top of the cached prompt; the longest prefix
the target model agrees with is kept and the rest rolled back out of the cache.

- Temperature 0: the emitted tokens are exactly those plain greedy decoding produces.
- Temperature > 0: the speculative sampling rule for a point-mass draft: accept draft
  token ``d`` with probability ``p(d)``; on rejection sample from ``p`` with ``d``
  removed, renormalised. The output distribution is that of plain sampling.
- Constraints (``completion.constraints``) mask the target's logits at every verified
  position, so a forbidden token is never emitted, drafted or corrected.

On a CPU a forward over k tokens costs more than one over a single token once the model
is compute-bound, so drafting blindly can lose (measured: 0.6-0.9x with a 0.5B model on
2 cores). :class:`CostModel` measures the verify-cost curve of the model on its device;
:func:`choose_length` drafts only as many tokens as the expected acceptance pays for,
and nothing when no length beats plain decoding.
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from .constraints import Constraint, apply_bitmask, new_bitmask
from .decode import decode_one_token, margin, prefill
from .fastpath import fast_linear

MAX_NGRAM = 4
"""Longest context suffix (in tokens) looked up in the draft sources."""
MIN_NGRAM = 2
"""Shortest: a single-token match drafts noise too often to pay on a CPU."""
DRAFT_SOURCES = ("aligned", "history", "elsewhere", "prompt", "workspace")
"""Where drafts come from (see :meth:`Drafter.propose`)."""
WORKSPACE_DOCS = 8
"""Other open documents drafted from (the most recently used)."""
WORKSPACE_CHARS = 65536
"""Characters of each such document indexed (its beginning)."""


@dataclass
class SpecStats:
    """Counters (names as in ``pie/stats``)."""

    draftTokens: int = 0
    acceptedTokens: int = 0
    verifySteps: int = 0
    plainSteps: int = 0
    promptVerifySteps: int = 0
    """Verify steps done inside the prompt's last forward (:func:`forward_with_draft`)."""
    decodeCostSteps: float = 0.0
    """Decode forwards weighted by the cost curve (:class:`CostModel`), in plain steps:
    what speculation cost by the curve, free of timing noise (benchmarks compare it
    with the forwards plain decoding needs)."""
    draftsBySource: dict[str, list[int]] = field(
        default_factory=lambda: {s: [0, 0] for s in DRAFT_SOURCES}
    )
    """Per draft source (:data:`DRAFT_SOURCES`): [drafted, accepted]."""
    nearTies: int = 0
    """Greedy picks decided again with plain decoding's forwards: their margin was within
    what a forward of several tokens may differ from one-token steps by."""
    nearTieTokens: int = 0
    """Tokens fed again, one at a time, to decide them."""


##### Draft sources #####


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


class NgramIndex:
    """Token sequences indexed by their n-grams (n = MIN_NGRAM..MAX_NGRAM).

    ``lookup(context)`` finds the longest suffix of ``context`` that occurs, in the most
    recently added sequence that has it, at its first place there (the longest
    continuation: in a repetitive sequence the last occurrence would leave almost
    nothing to draft), and returns what followed it.

    N-grams are keyed by a 64-bit hash of their ids, one table per n, built with numpy:
    indexing a 2k-token prompt took 7.5 ms with tuple keys, a cost every completion paid
    before its first draft. Two n-grams sharing a key (about one chance in 2**64 per
    pair) would only cost a rejected draft: drafts are verified.
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

    def get(self, gram: Sequence[int]) -> tuple[int, int] | None:
        """(sequence, offset after its first occurrence there) of ``gram``, if indexed."""
        table = self._index.get(len(gram))
        hit = None if table is None else table.get(_gram_key(gram))
        return None if hit is None else (hit >> 32, hit & 0xFFFFFFFF)

    def lookup(self, context: list[int], k: int) -> tuple[list[int], int]:
        """(up to ``k`` continuation tokens, matched n-gram length); ([], 0) if none."""
        cont, n, _, _ = self.find(context, k)
        return cont, n

    def find(self, context: list[int], k: int) -> tuple[list[int], int, int, int]:
        """Like :meth:`lookup`, plus the sequence and offset the continuation starts at."""
        for n in range(min(MAX_NGRAM, len(context)), MIN_NGRAM - 1, -1):
            hit = self.get(context[-n:])
            if hit is not None:
                s, at = hit
                cont = self.seqs[s][at : at + k]
                if cont:
                    return cont, n, s, at
        return [], 0, -1, 0


class History:
    """Earlier suggestions, each with the last prompt tokens before it."""

    def __init__(self, max_items: int = 64) -> None:
        self.items: deque[tuple[str, list[int], int]] = deque(maxlen=max_items)

    def remember(self, key: str, context: list[int], output: list[int]) -> None:
        """An earlier completion ``output`` for document ``key``, after ``context``."""
        if output:
            self.items.append((key, [*context, *output], len(context)))

    def forget(self, key: str) -> None:
        """Drop document ``key``'s suggestions (it was closed)."""
        kept = [item for item in self.items if item[0] != key]
        self.items = deque(kept, maxlen=self.items.maxlen)

    def keys(self) -> set[str]:
        """Documents with suggestions remembered."""
        return {item[0] for item in list(self.items)}

    def index_for(
        self, key: str, expected: tuple[list[int], list[int]] | None = None
    ) -> tuple[NgramIndex, list[int | None]]:
        """An index over the history, and where each sequence's suggestion starts.

        This document's suggestions go last, so their matches win; ``expected`` (the
        prompt's last tokens, the tokens the model will likely say after them: see
        :func:`expected_rest`) goes after them all. Other documents' suggestions have no
        start (None): they are a source of their own ("elsewhere"), never "aligned" (a few
        tokens matching where another document's suggestion started say little), with
        an acceptance learned apart from this document's.
        """
        idx = NgramIndex()
        ordered = [i for i in self.items if i[0] != key] + [i for i in self.items if i[0] == key]
        if expected is not None and expected[1]:
            ordered.append((key, [*expected[0], *expected[1]], len(expected[0])))
        idx.add_many([list(seq) for _, seq, _ in ordered])
        starts = [start if doc == key else None for doc, _, start in ordered]
        return idx, starts


class Workspace:
    """Other open documents as a draft source: code is copied between files.

    Each document is tokenized and indexed once per version, lazily (when a completion
    in another document drafts), and only its first ``max_chars`` characters.
    """

    def __init__(
        self, encode: Any, max_docs: int = WORKSPACE_DOCS, max_chars: int = WORKSPACE_CHARS
    ) -> None:
        self._encode = encode
        self.max_docs = max_docs
        self.max_chars = max_chars
        self._docs: dict[str, tuple[str, NgramIndex]] = {}

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
            if held is None or held[0] != text:
                index = NgramIndex()
                index.add(self._encode(text[: self.max_chars]))
                held = (text, index)
                self._docs[key] = held
            out.append(held[1])
        keep = {key for key, _ in wanted}
        for key in [k for k in self._docs if k not in keep]:
            del self._docs[key]
        return out


Marks = tuple[tuple[int, float], ...]
"""Per token of a suggestion: where the token ends, in characters from the suggestion's
start (at most 0 for a token that only re-generates the prompt's healed text), and the
greedy margin (top logit minus runner-up) it was picked by; ``inf`` where the suggestion
is known to come again as it was (nothing but its typed beginning changed)."""


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
    what SmolLM2 measured (docs/speculative.md: after a comment line added 40 lines
    above, 38 of 44 picks by less than 0.25 came again, 20 of 22 up to 0.5, 41 of 43 up
    to 1, all 182 above), each worth 5 observations; the model in use replaces them as
    its re-asks come in.
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


##### The cost model #####


ONLINE_WINDOW = 16
"""Recent forward timings kept per size for the online cost estimate."""
ONLINE_MIN = 3
"""Timings of a size (and of plain steps) before they replace the start-up measurement."""


@dataclass
class CostModel:
    """Forward cost of k+1 tokens relative to one token, measured on the device.

    ``relative`` is the start-up measurement (:meth:`measure`), a prior. Completions
    report the forwards they time anyway (:meth:`observe`: plain steps as 1 token,
    verify steps as k+1); once a size has :data:`ONLINE_MIN` timings, its cost is the
    fastest of its recent timings over the fastest recent plain step (noise on a
    shared machine only ever adds time). One bad start-up reading then steers a few
    steps, not a session, and the curve follows the machine as its load changes.
    """

    relative: dict[int, float] = field(default_factory=lambda: {1: 1.0})
    """k+1 tokens fed -> cost / cost of feeding 1 (the start-up measurement)."""
    fast_rows: frozenset[int] = frozenset()
    """Row counts for which the transposed linear path was faster (CPU)."""
    drift: float | None = None
    """The largest logit difference measured between forwards of several tokens and
    one-token steps over the same tokens (:func:`measure_drift`); None: not measured."""
    learn: bool = True
    """Whether :meth:`observe` records timings (off: a fixed curve, as tests use)."""
    observed: dict[int, deque[float]] = field(default_factory=dict)
    """Tokens fed -> recent forward times (seconds) reported by completions."""
    _table: dict[int, float] | None = field(default=None, repr=False, compare=False)

    def observe(self, fed: int, seconds: float) -> None:
        """Record one timed forward over ``fed`` tokens on top of a cache."""
        if not self.learn or fed < 1 or seconds <= 0:
            return
        self.observed.setdefault(fed, deque(maxlen=ONLINE_WINDOW)).append(seconds)
        self._table = None

    def online(self) -> dict[int, float]:
        """Sizes with enough recent timings -> their cost relative to a plain step."""
        # Copies first (each one step under the GIL): ``pie/stats`` reads this from the
        # server thread while the model worker appends.
        timed = {n: list(ts) for n, ts in list(self.observed.items())}
        recent = timed.get(1, [])
        if len(recent) < ONLINE_MIN:
            return {}
        # The fastest of as many recent plain steps as there are timings of the size:
        # a minimum over more samples would be lower by chance alone.
        return {
            n: min(ts) / min(recent[-len(ts) :])
            for n, ts in timed.items()
            if n > 1 and len(ts) >= ONLINE_MIN
        }

    def table(self) -> dict[int, float]:
        """The curve in use: the start-up measurement, with online estimates over it.

        Made non-decreasing (costs never fall with more tokens: timing noise is
        smoothed into a running maximum).
        """
        if self._table is None:
            merged = {**self.relative, **self.online(), 1: 1.0}
            table, top = {}, 1.0
            for n in sorted(merged):
                top = max(top, merged[n])
                table[n] = top
            self._table = table
        return self._table

    def cost(self, fed: int) -> float:
        """Interpolated relative cost of a forward over ``fed`` tokens."""
        table = self.table()
        if fed in table:
            return table[fed]
        keys = sorted(table)
        lo = max((k for k in keys if k <= fed), default=keys[0])
        hi = min((k for k in keys if k >= fed), default=keys[-1])
        if hi == lo:
            return table[lo] * fed / lo
        w = (fed - lo) / (hi - lo)
        return table[lo] * (1 - w) + table[hi] * w

    def appended(self) -> CostModel:
        """The cost of tokens fed after the others of a forward that runs anyway.

        A draft fed with the prompt's last span (:func:`forward_with_draft`) adds its
        tokens to a forward over tens of tokens, which the cache update runs whatever
        the draft; a token there costs what one costs on average in the longest forward
        measured, ``(cost(n) - 1) / (n - 1)``, not what a verify step of its own costs
        (whose first extra tokens are the dearest on a CPU: 4 tokens cost 1.5-2.1 plain
        steps there, 16 tokens 1.9-2.4). A fixed linear curve, ``1 + k * slope``.
        """
        table = self.table()
        top = max(table)
        slope = (table[top] - 1.0) / (top - 1) if top > 1 else 1.0
        curve = {1: 1.0, top: 1.0 + slope * (top - 1)}
        return CostModel(curve, self.fast_rows, self.drift, learn=False)

    def snapshot(self) -> dict[int, list[float]]:
        """The online timings (benchmarks put them back to repeat a request)."""
        return {n: list(ts) for n, ts in self.observed.items()}

    def restore(self, snapshot: dict[int, list[float]]) -> None:
        """Put back a :meth:`snapshot`."""
        self.observed = {n: deque(ts, maxlen=ONLINE_WINDOW) for n, ts in snapshot.items()}
        self._table = None

    @classmethod
    def measure(cls, model: Any, make_cache: Any, **options: Any) -> CostModel:
        """Measure the curve now, all at once.

        See :class:`~completion.calibration.Calibration` (``options``: its ``sizes``,
        ``context`` and ``repeats``). The model keeps the linear paths it chose.
        """
        from .calibration import Calibration

        costs = Calibration(model, make_cache, **options).run()
        costs.apply(model)
        return costs

    def apply(self, model: Any) -> None:
        """Give ``model`` the linear paths this measurement chose (a cached measurement)."""
        switch = fast_linear(model)
        if switch is not None:
            switch.set_rows(self.fast_rows)


MARGIN = 1.15
"""A draft must promise this much over plain decoding: estimates are noisy, and the
tokens a verify step computes past the point where the caller stops are wasted."""


MAX_LOSS = 0.05
"""What drafts from unsure sources may cost a completion, as a share of what plain
decoding of its tokens costs (by the measured cost curve): see :meth:`Drafter.settle`."""
SURE = 0.6
"""Acceptance from which a source's drafts are not bounded by the loss allowance."""
UNBOUNDED_SOURCES = frozenset({"aligned"})
"""Sources that may draft past the loss allowance (when :data:`SURE`): the earlier
suggestion re-asked at the same offset, whose estimate speaks of this very stretch of
code. The others' estimates are averages over other code: a long miss from one of them
is what made a cold completion slower than plain decoding."""


def choose_length(
    alpha: float | Sequence[float],
    available: int,
    cap: int,
    costs: CostModel,
    final: bool = False,
    allowance: float = MAX_LOSS,
    bounded: bool = False,
) -> int:
    """Draft length maximising tokens per unit of cost; 0 when plain decoding is best.

    ``alpha``: the probability that each drafted token is accepted, one for all or one
    per token (given that the ones before it were). ``final``: the ``available`` draft
    tokens end the completion (a line end in single-line mode, a stop token), so a fully
    accepted draft of that length earns no bonus token: the caller stops there. Below
    :data:`SURE` acceptance (of the first token) only lengths whose verify step,
    rejected at once, would cost at most ``allowance`` plain steps more than a plain
    step are drafted; with ``bounded``, whatever the acceptance.
    """
    limit = min(available, cap)
    ps = [float(alpha)] * limit if isinstance(alpha, (int, float)) else list(alpha[:limit])
    best_k, best_rate = 0, MARGIN  # plain decoding: 1 token for cost 1, plus the margin
    reach, gain = 1.0, 1.0  # P(the first k accepted); expected tokens of a k-token step
    for k in range(1, len(ps) + 1):
        if (bounded or ps[0] < SURE) and costs.cost(k + 1) - 1.0 > allowance + 1e-9:
            break  # costs never fall with more tokens
        reach *= min(1.0, ps[k - 1])
        gain += reach
        rate = (gain - (reach if final and k == available else 0.0)) / costs.cost(k + 1)
        if rate > best_rate:
            best_k, best_rate = k, rate
    return best_k


def cut_at_final(draft: list[int], final_ids: frozenset[int]) -> tuple[list[int], bool]:
    """``draft`` cut after its first token in ``final_ids``, and whether it had one.

    The caller stops after such a token, so a fully accepted draft earns no bonus.
    """
    for i, t in enumerate(draft):
        if t in final_ids:
            return draft[: i + 1], True
    return draft, False


class Acceptance:
    """Running per-token acceptance estimates per draft source and match strength.

    Buckets: (source, strong) where strong means the matched n-gram has at least 3
    tokens. Priors are deliberately modest: on a CPU a wasted verify step costs about
    two plain steps, so an optimistic estimate is what makes speculation lose.
    """

    PRIORS: ClassVar[dict[tuple[str, bool], float]] = {
        ("ahead", True): 0.8,  # reported only: drafts fed with the prompt use MarginBands
        ("aligned", True): 0.9,
        ("aligned", False): 0.8,
        ("history", True): 0.7,
        ("history", False): 0.45,
        ("elsewhere", True): 0.7,
        ("elsewhere", False): 0.45,
        ("prompt", True): 0.45,
        ("prompt", False): 0.25,
        ("workspace", True): 0.35,
        ("workspace", False): 0.2,
    }
    WEIGHT = 3.0
    """Pseudo-observations behind a prior."""
    DECAY = 0.98
    """Older observations fade (the user's behaviour and the file change)."""
    RELAX = 0.9
    """Once per completion, every source's evidence fades by this toward its prior."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, bool], list[float]] = {}

    def rate(self, source: str, n: int) -> float:
        """Estimated probability that the next drafted token is accepted."""
        key = (source, n >= 3)
        prior = self.PRIORS.get(key, 0.25)
        acc, total = self.counts.get(key, [0.0, 0.0])
        return (acc + self.WEIGHT * prior) / (total + self.WEIGHT)

    def relax(self) -> None:
        """Fade every source's evidence toward its prior (once per completion).

        A source whose estimate fell below what pays for a draft stops drafting, and so
        stops being observed: without this it would stay off for good, though what it
        missed on (another file, another stretch of typing) has passed. With it, a
        source that missed is tried again after some ten completions.
        """
        for c in self.counts.values():
            c[0] *= self.RELAX
            c[1] *= self.RELAX

    def rates(self) -> dict[str, float]:
        """The current estimate of every source observed so far (benchmarks report it)."""
        return {
            f"{source}{'' if strong else '-weak'}": round(self.rate(source, 3 if strong else 2), 3)
            for source, strong in sorted(self.counts)
        }

    def update(self, source: str, n: int, drafted: int, accepted: int) -> None:
        """Record one verify step: ``accepted`` of ``drafted`` tokens, then a miss or not."""
        c = self.counts.setdefault((source, n >= 3), [0.0, 0.0])
        c[0] = c[0] * self.DECAY + accepted
        c[1] = c[1] * self.DECAY + accepted + (1 if accepted < drafted else 0)


##### The decode loop #####


@dataclass
class Drafter:
    """Where drafts come from for one completion.

    ``prompt``: sequence 0 is the prompt's ids; generated tokens are appended to it as
    they come (prompt lookup over prompt + output). ``history``: earlier completions.
    """

    prompt: NgramIndex
    history: NgramIndex
    max_draft: int
    costs: CostModel
    acceptance: Acceptance
    history_starts: list[int | None] = field(default_factory=list)
    """Where each history sequence's suggestion starts, None for other documents' (see
    :meth:`History.index_for`)."""
    workspace: list[NgramIndex] = field(default_factory=list)
    """Other open documents (:class:`Workspace`), most relevant first."""
    final_ids: frozenset[int] = frozenset()
    """Tokens after which the caller stops (stop tokens; line ends in single-line mode):
    drafts are cut after the first of them."""
    allowance: float = MAX_LOSS
    """What drafts from unsure sources may still risk in this completion, in plain
    steps (:meth:`settle`)."""
    missed: set[str] = field(default_factory=set)
    """Sources whose draft lost time in this completion: bounded like unsure ones since."""

    def settle(self, drafted: int, accepted: int, source: str = "") -> None:
        """Account for one decode step: ``drafted`` tokens verified, ``accepted`` kept.

        The completion earns :data:`MAX_LOSS` of a plain step per token it yields, plus
        what the step gained or lost against plain decoding (tokens yielded minus the
        step's cost, in plain steps). Unsure sources may only draft lengths whose
        rejection would not take this below zero, so by the cost curve their drafts
        never make a completion more than 5% slower than plain decoding, while they
        still draft (and their acceptance is still learned) on a machine where every
        multi-token forward costs more than a plain step.

        A sure source whose draft (``source``) lost time is bounded the same way for the
        rest of the completion: its learned acceptance says little about this stretch of
        code, and a run of long rejected drafts is what made a completion slower than
        plain decoding (docs/speculative.md).
        """
        tokens = 1 + accepted
        step = self.costs.cost(drafted + 1) if drafted else 1.0
        self.allowance += MAX_LOSS * tokens + (tokens - step)
        if drafted and tokens < step:
            self.missed.add(source)

    def propose(self, context: list[int], produced: int = 0) -> tuple[list[int], str, int]:
        """(draft tokens, source, matched n) after ``produced`` generated tokens.

        A history hit at the same offset into an earlier suggestion as this request's
        output is "aligned": the user asks again where that suggestion started (after an
        edit elsewhere, or a character typed and deleted): the likeliest to repeat. A
        hit in another document's suggestion is "elsewhere", never aligned.
        """
        best: tuple[list[int], str, int] = ([], "", 0)
        sources = [("history", self.history), ("prompt", self.prompt)]
        sources += [("workspace", index) for index in self.workspace]
        for source, index in sources:
            cont, n, s, at = index.find(context, self.max_draft)
            if not cont:
                continue
            if source == "history" and 0 <= s < len(self.history_starts):
                start = self.history_starts[s]
                if start is None:
                    source = "elsewhere"
                elif at - start == produced:
                    source = "aligned"
            cont, final = cut_at_final(cont, self.final_ids)
            k = choose_length(
                self.acceptance.rate(source, n),
                len(cont),
                self.max_draft,
                self.costs,
                final,
                self.allowance,
                bounded=source in self.missed or source not in UNBOUNDED_SOURCES,
            )
            if k and (n, k) > (best[2], len(best[0])):
                best = (cont[:k], source, n)
        return best


##### Verification #####


SAFETY = 4.0
"""How many times the measured logit difference (:attr:`CostModel.drift`) a pick's margin
must clear to be taken from a forward plain decoding does not run."""
EXACT_DTYPES = frozenset({torch.float32, torch.float64})
"""Precisions in which near ties are decided as plain decoding decides them. In bf16 and
fp16 the difference is a sizeable part of a logit, so most picks would be near ties and
deciding them again would cost more than drafting saves: there only picks by a margin
above :func:`near_tie_margin`'s bound are guaranteed to be plain decoding's
(docs/speculative.md)."""
DEFAULT_DRIFT = 1e-5
"""The logit difference assumed where none was measured, relative to the logits' size."""
DRIFT_CHUNKS = (8, 1, 4, 1, 2)
"""How :func:`measure_drift` feeds its tokens the second time: verify-sized forwards and
one-token steps on the keys and values they wrote."""


def near_tie_margin(drift: float | None, dtype: torch.dtype, logits: torch.Tensor) -> float:
    """The margin under which a greedy pick is decided with plain decoding's forwards.

    Logits that each differ by at most ``drift`` from plain decoding's can swap two
    tokens only when those are less than ``2 * drift`` apart; :data:`SAFETY` times that.
    ``drift`` None: :data:`DEFAULT_DRIFT` of ``logits``' largest magnitude. Never less
    than that magnitude's rounding step in ``dtype``. 0 (no re-check) outside
    :data:`EXACT_DTYPES`.
    """
    if dtype not in EXACT_DTYPES:
        return 0.0
    scale = float(logits.abs().max())
    bound = DEFAULT_DRIFT * scale if drift is None else drift
    return 2 * SAFETY * max(bound, torch.finfo(dtype).eps * scale)


def measure_drift(model: Any, cache: Any, start: int, ids: list[int]) -> float:
    """The largest logit difference between forwards of several tokens and one-token steps.

    Feeds ``ids`` at ``start`` on top of ``cache`` one token at a time (plain decoding),
    then again in chunks of :data:`DRIFT_CHUNKS` tokens (verify steps, and one-token
    steps on the keys and values those wrote), and compares the logits at every
    position. The cache ends as it began. :func:`drift_steps` does it a forward at a time.
    """
    steps = drift_steps(model, cache, start, ids)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return float(done.value)


def drift_steps(
    model: Any, cache: Any, start: int, ids: list[int], rows: frozenset[int] | None = None
) -> Generator[None, None, float]:
    """:func:`measure_drift` one forward per ``next()``; its result is the return value.

    ``rows``: the row counts that take the transposed linear path during these forwards
    (the model's :class:`~completion.fastpath.FastLinear` switch is put back after each,
    so work that runs between two of them sees the model as it was); None: as it is.
    """
    plain: list[torch.Tensor] = []
    for i, t in enumerate(ids):
        plain.append(_forward_with_rows(model, [t], cache, start + i, rows)[0])
        yield
    cache.crop(-len(ids))
    chunks, at = [], 0
    while at < len(ids):
        for size in DRIFT_CHUNKS:
            piece = ids[at : at + size]
            if piece:
                chunks.append(_forward_with_rows(model, piece, cache, start + at, rows))
                yield
            at += len(piece)
    cache.crop(-len(ids))
    return float((torch.cat(chunks) - torch.stack(plain)).abs().max())


def _forward_with_rows(
    model: Any, ids: list[int], cache: Any, start: int, rows: frozenset[int] | None
) -> torch.Tensor:
    """:func:`_forward_all` with the transposed linear path for ``rows`` (None: as set)."""
    switch = fast_linear(model)
    if rows is None or switch is None:
        return _forward_all(model, ids, cache, start)
    saved = switch.rows
    switch.set_rows(rows)
    try:
        return _forward_all(model, ids, cache, start)
    finally:
        switch.rows = saved


@torch.inference_mode()
def _forward_all(model: Any, ids: list[int], cache: Any, start: int) -> torch.Tensor:
    """Feed ``ids`` at positions ``start..``; fp32 logits for every fed position [n, V]."""
    device = model.device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    positions = torch.arange(start, start + len(ids), device=device).unsqueeze(0)
    out = model(
        input_ids=input_ids,
        past_key_values=cache,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=len(ids),
    )
    return out.logits[0].float()


class DraftRows(NamedTuple):
    """What the forward that fed a draft after the prompt's last span computed."""

    logits: torch.Tensor
    """After each draft token [k, V] (fp32)."""
    start: int
    """Where that span starts in the cache."""
    span: list[int]
    """The span: fed alone again when a near tie needs plain decoding's numbers."""


@dataclass
class AheadDraft:
    """A draft fed right after the prompt, in the cache update's last forward."""

    ids: list[int]
    rows: DraftRows | None = None
    """That forward's logits after each draft token, once fed (:func:`forward_with_draft`)."""
    ms: float = 0.0
    """That forward's time."""


@torch.inference_mode()
def forward_with_draft(
    model: Any, ids: list[int], draft: list[int], cache: Any, start: int
) -> tuple[torch.Tensor, DraftRows]:
    """Feed ``ids`` (the prompt's last span) and ``draft`` after it in one forward.

    Returns the prompt's last-position logits [V] and the logits after each draft token
    (fp32), with the span. The cache then holds the draft too: the caller hands both to
    :func:`speculative_generate` (``verified``), which keeps what the model agrees with
    and crops the rest. Costs little over feeding ``ids`` alone on a CPU (a forward over
    a few more tokens), and saves the separate verify step a re-asked suggestion needs.
    """
    device = model.device
    fed = [*ids, *draft]
    out = model(
        input_ids=torch.tensor([fed], dtype=torch.long, device=device),
        past_key_values=cache,
        position_ids=torch.arange(start, start + len(fed), device=device).unsqueeze(0),
        use_cache=True,
        logits_to_keep=len(draft) + 1,
    )
    rows = out.logits[0].float()
    return rows[0], DraftRows(rows[1:], start, list(ids))


def _elapsed(start: float, result: torch.Tensor) -> float:
    """Seconds since ``start`` once ``result`` is computed (waits for a GPU)."""
    if result.device.type == "cuda":
        torch.cuda.synchronize(result.device)
    elif result.device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter() - start


def _pick(
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None,
    draft: int | None = None,
) -> tuple[int, bool]:
    """The target's token at one position, and whether ``draft`` was accepted there.

    Greedy: argmax (accepted iff equal). Sampling: accept ``draft`` w.p. p(draft), else
    sample from p without it (renormalised): the speculative sampling rule for a
    point-mass draft, so the result is distributed as a plain sample from p.
    """
    if temperature <= 0:
        token = int(torch.argmax(logits).item())
        return token, draft is not None and token == draft
    probs = torch.softmax(logits / temperature, dim=-1)
    if draft is not None:
        p = float(probs[draft])
        u = float(torch.rand((), generator=generator))
        if u < p:
            return draft, True
        probs = probs.clone()
        probs[draft] = 0.0
        if float(probs.sum()) <= 0:
            return draft, True
    return int(torch.multinomial(probs, 1, generator=generator).item()), False


class Step(NamedTuple):
    """What one decode step settled."""

    accepted: list[int]
    """Drafted tokens the model agreed with (fed: they are in the cache)."""
    token: int | None
    """Then the model's own token (the correction, or the bonus after a full accept), not
    fed yet; None when an accepted stop token ended the step."""


class SpeculativeDecode:
    """One decode of :func:`speculative_generate`: the cache, what it holds, where it drifted.

    The cache holds ``position`` tokens: the prompt's ``prompt_len``, then ``fed``. A
    forward of several tokens computes their keys and values, and the logits after
    them, with other kernels than plain decoding's one-token steps: the numbers differ
    in the last bits from there on (``exact_from``, None while the cache holds what
    plain decoding would). A greedy pick from such numbers whose margin is under
    ``tie_margin`` is a near tie: it is decided by feeding everything from
    ``exact_from`` again as plain decoding feeds it, one token at a time, which also
    leaves the cache as plain decoding would.
    """

    def __init__(
        self,
        model: Any,
        cache: Any,
        logits: torch.Tensor,
        position: int,
        max_new_tokens: int,
        drafter: Drafter,
        stats: SpecStats,
        temperature: float,
        stop_ids: frozenset[int],
        generator: torch.Generator | None,
        constraint: Constraint | None,
        context: list[int],
        margins: list[float] | None,
        tie_margin: float,
    ) -> None:
        self.model, self.cache, self.prompt_logits = model, cache, logits
        self.prompt_len = self.position = position
        self.max_new_tokens, self.drafter, self.stats = max_new_tokens, drafter, stats
        self.temperature, self.stop_ids, self.generator = temperature, stop_ids, generator
        self.constraint, self.ctx, self.margins = constraint, list(context), margins
        self.tie_margin = tie_margin
        self.fed: list[int] = []
        self.exact_from: int | None = None
        self.span: DraftRows | None = None
        """The prompt's span fed with a draft (``verified``), until fed alone again."""
        self.produced = 0
        self.mask = new_bitmask(1, logits.shape[-1]) if constraint is not None else None

    def tokens(self, verified: AheadDraft | None) -> Iterator[int]:
        """Yield the generated tokens (see :func:`speculative_generate`)."""
        step = self._first_step(verified)
        while True:
            for tok in step.accepted:  # the constraint accepted these in _verify()
                yield tok
                if self._emitted(tok):
                    return
            token = step.token
            if token is None:
                return
            if self.constraint is not None:
                self.constraint.accept(token)
            yield token
            if self._emitted(token):
                return
            if self.constraint is not None and self.constraint.is_terminated():
                return
            step = self._step(token)

    def _first_step(self, verified: AheadDraft | None) -> Step:
        """The first token from the prompt's logits, or a draft fed with the prompt verified."""
        if verified is None or not verified.ids or verified.rows is None:
            return Step([], self._next_token(self.prompt_logits))
        self.stats.promptVerifySteps += 1
        self.span = verified.rows
        self.exact_from = verified.rows.start
        self.position += len(verified.ids)
        self.fed += verified.ids
        # Its own acceptance bucket: the draft starts before the first token is known,
        # so it misses whenever the answer starts differently (after an edit nearby).
        rows = [self.prompt_logits, *verified.rows.logits]
        return self._verify(rows, verified.ids, self.prompt_len, "aligned", "ahead", MAX_NGRAM)

    def _step(self, token: int) -> Step:
        """Feed ``token`` with a draft after it, if one pays, and settle what comes next."""
        draft, source, n = self.drafter.propose(self.ctx, self.produced)
        draft = draft[: max(0, self.max_new_tokens - self.produced - 1)]
        at = self.position
        rows = self._feed([token, *draft])  # [k+1, V]
        self.stats.decodeCostSteps += self.drafter.costs.cost(1 + len(draft))
        if draft:
            step = self._verify(rows, draft, at + 1, source, source, n)
        else:
            self.stats.plainSteps += 1
            step = Step([], self._next_token(rows[0]))
        self.drafter.settle(len(draft), len(step.accepted), source)
        return step

    def _verify(
        self,
        rows: torch.Tensor | Sequence[torch.Tensor],
        draft: list[int],
        at: int,
        source: str,
        bucket: str,
        n: int,
    ) -> Step:
        """Accept the longest prefix of ``draft`` (cached from ``at`` on) the model agrees with.

        ``rows[i]``: the logits before ``draft[i]`` (the last one gives the bonus).
        ``source``, ``bucket``, ``n``: where the draft came from, its acceptance bucket
        and the n-gram length it matched. The rejected tail is cropped; a near tie ends
        the step with the token plain decoding's numbers pick there.
        """
        accepted: list[int] = []
        token = None
        for i in range(len(draft) + 1):
            chosen = self._choose(rows[i], draft[i] if i < len(draft) else None)
            if chosen is None:
                self._truncate(at + i)
                token = self._exact_pick()
                break
            tok, ok = chosen
            if not ok:
                token = tok
                break
            accepted.append(tok)
            if self.constraint is not None:
                self.constraint.accept(tok)
            if tok in self.stop_ids:
                break
        self._truncate(at + len(accepted))
        stats = self.stats
        stats.verifySteps += 1
        stats.draftTokens += len(draft)
        stats.acceptedTokens += len(accepted)
        by_source = stats.draftsBySource.setdefault(source, [0, 0])
        by_source[0] += len(draft)
        by_source[1] += len(accepted)
        self.drafter.acceptance.update(bucket, n, len(draft), len(accepted))
        return Step(accepted, token)

    def _choose(self, row: torch.Tensor, draft: int | None = None) -> tuple[int, bool] | None:
        """The pick from ``row`` and whether it is ``draft``; None for a near tie.

        A near tie: the cache has drifted from plain decoding's (so have ``row``'s
        numbers) and the pick's margin, among the tokens the constraint allows, is under
        :attr:`tie_margin`.
        """
        row = self._constrained(row)
        check = self.exact_from is not None and self.tie_margin > 0
        if self.margins is not None or check:
            sure = margin(row)
            if check and sure < self.tie_margin:
                return None
            if self.margins is not None:
                self.margins.append(sure)
        return _pick(row, self.temperature, self.generator, draft)

    def _next_token(self, row: torch.Tensor) -> int:
        """The token picked from ``row`` (no draft), decided exactly if a near tie."""
        chosen = self._choose(row)
        return self._exact_pick() if chosen is None else chosen[0]

    def _exact_pick(self) -> int:
        """The greedy pick at the cache's end from the numbers plain decoding has there.

        Feeds everything from :attr:`exact_from` again as plain decoding fed it: the
        prompt's span alone (when a draft came with it; the prompt's logits are then
        overwritten with the span's own), then each token alone.
        """
        start = self.exact_from
        assert start is not None
        self.cache.crop(start - self.position)
        replay = self.fed[max(0, start - self.prompt_len) :]
        logits = self.prompt_logits
        if start < self.prompt_len:
            assert self.span is not None and self.span.start == start
            logits = prefill(self.model, self.span.span, self.cache, start)
            with torch.inference_mode():
                self.prompt_logits.copy_(logits)
            self.stats.decodeCostSteps += self.drafter.costs.cost(len(self.span.span))
        for i, tok in enumerate(replay):
            logits = decode_one_token(self.model, tok, self.cache, self.position - len(replay) + i)
        self.exact_from, self.span = None, None
        self.stats.nearTies += 1
        self.stats.nearTieTokens += len(replay)
        self.stats.decodeCostSteps += len(replay)
        chosen = self._choose(logits)
        assert chosen is not None  # the cache is plain decoding's now
        return chosen[0]

    def _feed(self, ids: list[int]) -> torch.Tensor:
        """Feed ``ids`` at the cache's end (timed for the cost model); their logits [n, V]."""
        t = time.perf_counter()
        rows = _forward_all(self.model, ids, self.cache, self.position)
        self.drafter.costs.observe(len(ids), _elapsed(t, rows))
        if len(ids) > 1 and self.exact_from is None:
            self.exact_from = self.position
        self.position += len(ids)
        self.fed += ids
        return rows

    def _truncate(self, length: int) -> None:
        """Crop the cache (and :attr:`fed`) to ``length`` tokens, never into the prompt."""
        extra = self.position - length
        if extra > 0:
            self.cache.crop(-extra)
            del self.fed[len(self.fed) - extra :]
            self.position = length

    def _constrained(self, row: torch.Tensor) -> torch.Tensor:
        if self.constraint is None or self.mask is None:
            return row
        self.constraint.fill_mask(self.mask, 0)
        return apply_bitmask(row, self.mask[0])

    def _emitted(self, tok: int) -> bool:
        """Bookkeeping for a yielded token; True when generation ends with it."""
        self.produced += 1
        self.ctx.append(tok)
        self.drafter.prompt.extend(0, [tok])
        return tok in self.stop_ids or self.produced >= self.max_new_tokens


def speculative_generate(
    model: Any,
    cache: Any,
    logits: torch.Tensor,
    position: int,
    max_new_tokens: int,
    drafter: Drafter,
    stats: SpecStats,
    temperature: float = 0.0,
    stop_ids: frozenset[int] = frozenset(),
    generator: torch.Generator | None = None,
    constraint: Constraint | None = None,
    context: list[int] | None = None,
    margins: list[float] | None = None,
    verified: AheadDraft | None = None,
    tie_margin: float | None = None,
) -> Iterator[int]:
    """Like :func:`completion.decode.generate`, with drafts verified in one pass.

    ``context``: the prompt's last tokens (drafts are looked up after them and the
    tokens generated so far). Yields tokens one by one; the cache always ends holding
    exactly the prompt plus the tokens fed (rejected draft tokens are cropped out).
    ``margins`` receives the (constrained) logit margin each emitted token was picked at.
    ``verified``: a draft already fed after the prompt, with its logits (``rows``);
    ``cache`` and ``position`` then count the prompt only while the cache holds the
    draft too. It is accepted like any verify step's.

    At temperature 0 in full precision the output is plain decoding's, token for token:
    a pick whose margin is under ``tie_margin`` (default :func:`near_tie_margin` of the
    drift ``drafter.costs`` measured) is decided with plain decoding's forwards
    (:class:`SpeculativeDecode`). That may re-encode the prompt's span fed with
    ``verified``, and then overwrites ``logits`` with the span's own (the caller keeps
    them with the cache).
    """
    if tie_margin is None:
        exact = temperature <= 0
        tie_margin = near_tie_margin(drafter.costs.drift, model.dtype, logits) if exact else 0.0
    run = SpeculativeDecode(
        model,
        cache,
        logits,
        position,
        max_new_tokens,
        drafter,
        stats,
        temperature,
        stop_ids,
        generator,
        constraint,
        list(context or []),
        margins,
        tie_margin,
    )
    return run.tokens(verified)
