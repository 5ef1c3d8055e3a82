"""Drafting policy: whether to draft, how many tokens, and from which source.

On a CPU a forward over k tokens costs more than one over a single token once the model
is compute-bound, so drafting blindly can lose. :class:`CostModel` holds the verify-cost
curve measured on the device (:mod:`completion.calibration`, then learned from the
completions' own forwards); :class:`Acceptance` estimates, per draft source and match
strength, how likely a drafted token is accepted; :func:`choose_length` drafts only as
many tokens as the expected acceptance pays for, nothing when no length beats plain
decoding. :class:`Drafter` applies all this to one completion: it looks the context up
in every source (:mod:`completion.drafting_sources`) and proposes the best draft, and
keeps the allowance that bounds what unsure sources may cost (at most
:data:`MAX_LOSS` over plain decoding, by the cost curve).

Nothing here runs the model but the calibration :meth:`CostModel.measure` starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from .drafting_sources import NgramIndex
from .fastpath import fast_linear

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
    one-token steps over the same tokens (:func:`~completion.verify.measure_drift`);
    None: not measured."""
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

        A draft fed with the prompt's last span
        (:func:`~completion.verify.forward_with_draft`) adds its tokens to a forward
        over tens of tokens, which the cache update runs whatever the draft; a token
        there costs what one costs on average in the longest forward measured,
        ``(cost(n) - 1) / (n - 1)``, not what a verify step of its own costs (whose
        first extra tokens are the dearest on a CPU). A fixed linear curve,
        ``1 + k * slope``.
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
code. The others' estimates are averages over other code, and a long miss from one of
them would make a cold completion slower than plain decoding."""


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


class Cut(NamedTuple):
    """A draft cut at the first token that ends the completion (:func:`cut_at_final`)."""

    tokens: list[int]
    final: bool
    """Whether it had such a token (its last now): a full accept earns no bonus token."""


def cut_at_final(draft: list[int], final_ids: frozenset[int]) -> Cut:
    """``draft`` cut after its first token in ``final_ids``; the caller stops after it."""
    for i, t in enumerate(draft):
        if t in final_ids:
            return Cut(draft[: i + 1], True)
    return Cut(draft, False)


class Acceptance:
    """Running per-token acceptance estimates per draft source and match strength.

    Buckets: (source, strong) where strong means the matched n-gram has at least 3
    tokens. Priors are deliberately modest: a wasted verify step costs more than a plain
    step, so an optimistic estimate is what makes speculation lose.
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


class Proposal(NamedTuple):
    """A draft :meth:`Drafter.propose` chose (empty: decode plainly)."""

    tokens: list[int]
    source: str
    """Where it came from (:data:`~completion.drafting_sources.DRAFT_SOURCES`)."""
    n: int
    """The length of the n-gram it matched."""


NO_PROPOSAL = Proposal([], "", 0)


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
    :meth:`~completion.drafting_sources.History.index_for`)."""
    workspace: list[NgramIndex] = field(default_factory=list)
    """Other open documents (:class:`~completion.drafting_sources.Workspace`), most
    relevant first."""
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
        code, and a run of long rejected drafts is what makes a completion slower than
        plain decoding.
        """
        tokens = 1 + accepted
        step = self.costs.cost(drafted + 1) if drafted else 1.0
        self.allowance += MAX_LOSS * tokens + (tokens - step)
        if drafted and tokens < step:
            self.missed.add(source)

    def propose(self, context: list[int], produced: int = 0) -> Proposal:
        """The draft to verify after ``context``, ``produced`` tokens into the output.

        The longest match wins, then the longest draft the cost model pays for. A history
        hit at the same offset into an earlier suggestion as this request's output is
        "aligned": the user asks again where that suggestion started (after an edit
        elsewhere, or a character typed and deleted): the likeliest to repeat. A hit in
        another document's suggestion is "elsewhere", never aligned.
        """
        best = NO_PROPOSAL
        sources = [("history", self.history), ("prompt", self.prompt)]
        sources += [("workspace", index) for index in self.workspace]
        for source, index in sources:
            match = index.find(context, self.max_draft)
            if not match.tokens:
                continue
            if source == "history" and 0 <= match.seq < len(self.history_starts):
                start = self.history_starts[match.seq]
                if start is None:
                    source = "elsewhere"
                elif match.offset - start == produced:
                    source = "aligned"
            cut = cut_at_final(match.tokens, self.final_ids)
            k = choose_length(
                self.acceptance.rate(source, match.n),
                len(cut.tokens),
                self.max_draft,
                self.costs,
                cut.final,
                self.allowance,
                bounded=source in self.missed or source not in UNBOUNDED_SOURCES,
            )
            if k and (match.n, k) > (best.n, len(best.tokens)):
                best = Proposal(cut.tokens[:k], source, match.n)
        return best
