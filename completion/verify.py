"""Verification: drafts checked by the model in one forward, output as plain decoding's.

A draft of k tokens is fed after the last emitted token in one forward; the longest
prefix the model agrees with is kept, the rest cropped out of the cache, and the model's
own token follows (the correction, or a bonus token after a full accept). The contract
of :func:`speculative_generate`:

- Temperature 0, fp32: the emitted tokens are plain greedy decoding's, token for token.
  Forwards of several tokens differ from one-token steps in the last bits, so a pick
  made from their numbers by a margin within :func:`near_tie_margin` (a multiple of the
  difference the calibration measured, :func:`measure_drift`) is decided by feeding the
  tokens again as plain decoding does (:class:`SpeculativeDecode`).
- Temperature 0, bf16/fp16: plain decoding's output up to the first pick plain decoding
  made by less than that bound; no re-check (docs/speculative.md).
- Temperature > 0: the speculative sampling rule for a point-mass draft (accept ``d``
  with probability ``p(d)``, else sample from ``p`` without ``d``): the output is
  distributed as plain sampling's.
- Constraints mask the logits at every verified position: a forbidden token is never
  emitted, whether drafted or not.
- The cache always ends holding the prompt and the tokens fed, as a fresh encode would.

A re-asked suggestion can be verified in the cache update's last forward instead
(:func:`forward_with_draft`, :class:`AheadDraft`). :class:`SpecStats` counts it all.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from .constraints import Constraint, ConstraintStats, new_bitmask, restrict
from .decode import decode_one_token, margin, prefill
from .drafting_policy import Drafter
from .drafting_sources import DRAFT_SOURCES, MAX_NGRAM
from .fastpath import exact_rows, fast_linear, row_exact


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
    """Decode forwards weighted by the cost curve
    (:class:`~completion.drafting_policy.CostModel`), in plain steps:
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


##### Near ties #####


SAFETY = 4.0
"""How many times the measured logit difference
(:attr:`~completion.drafting_policy.CostModel.drift`) a pick's margin must clear to be
taken from a forward plain decoding does not run."""
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


def near_tie_margin(
    drift: float | None, dtype: torch.dtype, logits: torch.Tensor, exact_rows: bool = False
) -> float:
    """The margin under which a greedy pick is decided with plain decoding's forwards.

    Logits that each differ by at most ``drift`` from plain decoding's can swap two
    tokens only when those are less than ``2 * drift`` apart; :data:`SAFETY` times that.
    ``drift`` None: :data:`DEFAULT_DRIFT` of ``logits``' largest magnitude. Never less
    than that magnitude's rounding step in ``dtype``. 0 (no re-check) outside
    :data:`EXACT_DTYPES`, and 0 for a row-exact model (``exact_rows``,
    :func:`~completion.fastpath.row_exact`): its verify steps compute what one-token steps
    do, bit for bit, so there is no near tie to decide.
    """
    if dtype not in EXACT_DTYPES or exact_rows:
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
    """:func:`forward_all` with the transposed linear path for ``rows`` (None: as set)."""
    switch = fast_linear(model)
    if rows is None or switch is None:
        return forward_all(model, ids, cache, start)
    saved = switch.rows
    switch.set_rows(rows)
    try:
        return forward_all(model, ids, cache, start)
    finally:
        switch.rows = saved


##### Forwards #####


@torch.inference_mode()
def forward_all(model: Any, ids: list[int], cache: Any, start: int) -> torch.Tensor:
    """Feed ``ids`` at positions ``start..``; fp32 logits for every fed position [n, V]."""
    device = model.device
    input_ids = torch.tensor([ids], dtype=torch.long, device=device)
    positions = torch.arange(start, start + len(ids), device=device).unsqueeze(0)
    with exact_rows(model):
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


class DraftForward(NamedTuple):
    """What :func:`forward_with_draft` computed."""

    last: torch.Tensor
    """The prompt's last-position logits [V] (fp32)."""
    rows: DraftRows
    """The logits after each draft token, with the span fed before them."""


@torch.inference_mode()
def forward_with_draft(
    model: Any, ids: list[int], draft: list[int], cache: Any, start: int
) -> DraftForward:
    """Feed ``ids`` (the prompt's last span) and ``draft`` after it in one forward.

    Returns the prompt's last-position logits [V] and the logits after each draft token
    (fp32), with the span. The cache then holds the draft too: the caller hands both to
    :func:`speculative_generate` (``verified``), which keeps what the model agrees with
    and crops the rest. Costs little over feeding ``ids`` alone on a CPU (a forward over
    a few more tokens), and saves the separate verify step a re-asked suggestion needs.
    """
    device = model.device
    fed = [*ids, *draft]
    with exact_rows(model, len(ids)):
        out = model(
            input_ids=torch.tensor([fed], dtype=torch.long, device=device),
            past_key_values=cache,
            position_ids=torch.arange(start, start + len(fed), device=device).unsqueeze(0),
            use_cache=True,
            logits_to_keep=len(draft) + 1,
        )
    rows = out.logits[0].float()
    return DraftForward(rows[0], DraftRows(rows[1:], start, list(ids)))


def _elapsed(start: float, result: torch.Tensor) -> float:
    """Seconds since ``start`` once ``result`` is computed (waits for a GPU)."""
    if result.device.type == "cuda":
        torch.cuda.synchronize(result.device)
    elif result.device.type == "mps":
        torch.mps.synchronize()
    return time.perf_counter() - start


##### The decode loop #####


class Pick(NamedTuple):
    """The target's token at one position (:func:`pick_token`)."""

    token: int
    accepted: bool
    """Whether it is the drafted token, accepted."""


def pick_token(
    logits: torch.Tensor,
    temperature: float,
    generator: torch.Generator | None,
    draft: int | None = None,
) -> Pick:
    """The target's token at one position, and whether ``draft`` was accepted there.

    Greedy: argmax (accepted iff equal). Sampling: accept ``draft`` w.p. p(draft), else
    sample from p without it (renormalised): the speculative sampling rule for a
    point-mass draft, so the result is distributed as a plain sample from p.
    """
    if temperature <= 0:
        token = int(torch.argmax(logits).item())
        return Pick(token, draft is not None and token == draft)
    probs = torch.softmax(logits / temperature, dim=-1)
    if draft is not None:
        p = float(probs[draft])
        u = float(torch.rand((), generator=generator))
        if u < p:
            return Pick(draft, True)
        probs = probs.clone()
        probs[draft] = 0.0
        if float(probs.sum()) <= 0:
            return Pick(draft, True)
    return Pick(int(torch.multinomial(probs, 1, generator=generator).item()), False)


class Step(NamedTuple):
    """What one decode step settled."""

    accepted: list[int]
    """Drafted tokens the model agreed with (fed: they are in the cache)."""
    token: int | None
    """Then the model's own token (the correction, or the bonus after a full accept), not
    fed yet; None when an accepted stop token ended the step."""


class DecodeRules(NamedTuple):
    """How one decode picks its tokens and when it ends (:func:`speculative_generate`)."""

    max_new_tokens: int
    temperature: float
    stop_ids: frozenset[int]
    """Yielded, then generation ends."""
    generator: torch.Generator | None
    constraint: Constraint | None
    """Masks the logits at every pick and accepts every emitted token."""
    tie_margin: float
    """Picks from drifted numbers by a smaller margin are near ties (0: never)."""


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
        drafter: Drafter,
        stats: SpecStats,
        rules: DecodeRules,
        context: list[int],
        margins: list[float] | None,
    ) -> None:
        self.model, self.cache, self.prompt_logits = model, cache, logits
        self.prompt_len = self.position = position
        self.drafter, self.stats, self.rules = drafter, stats, rules
        self.constraint = rules.constraint
        self.ctx, self.margins = list(context), margins
        self.fed: list[int] = []
        """The tokens cached after the prompt."""
        self.exact_from: int | None = None
        self.span: DraftRows | None = None
        """The prompt's span fed with a draft (``verified``), until fed alone again."""
        self.produced = 0
        self.mask = new_bitmask(1, logits.shape[-1]) if self.constraint is not None else None

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
        forced = self.constraint.forced_tokens() if self.constraint is not None else []
        if forced:  # what the constraint leaves as the only way on: a free draft
            draft, source, n = forced, "forced", MAX_NGRAM
        else:
            draft, source, n = self.drafter.propose(self.ctx, self.produced)
        draft = draft[: max(0, self.rules.max_new_tokens - self.produced - 1)]
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
            if not chosen.accepted:
                token = chosen.token
                break
            tok = chosen.token
            accepted.append(tok)
            if self.constraint is not None:
                self.constraint.accept(tok)
            if tok in self.rules.stop_ids:
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

    def _choose(self, row: torch.Tensor, draft: int | None = None) -> Pick | None:
        """The pick from ``row`` and whether it is ``draft``; None for a near tie.

        A near tie: the cache has drifted from plain decoding's (so have ``row``'s
        numbers) and the pick's margin, among the tokens the constraint allows, is under
        the rules' ``tie_margin``.
        """
        check = self.exact_from is not None and self.rules.tie_margin > 0
        row = self._constrained(row, self.margins is not None or check)
        if self.margins is not None or check:
            sure = margin(row)
            if check and sure < self.rules.tie_margin:
                return None
            if self.margins is not None:
                self.margins.append(sure)
        return pick_token(row, self.rules.temperature, self.rules.generator, draft)

    def _next_token(self, row: torch.Tensor) -> int:
        """The token picked from ``row`` (no draft), decided exactly if a near tie."""
        chosen = self._choose(row)
        return self._exact_pick() if chosen is None else chosen.token

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
        return chosen.token

    def _feed(self, ids: list[int]) -> torch.Tensor:
        """Feed ``ids`` at the cache's end (timed for the cost model); their logits [n, V]."""
        t = time.perf_counter()
        rows = forward_all(self.model, ids, self.cache, self.position)
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

    def _constrained(self, row: torch.Tensor, margin: bool) -> torch.Tensor:
        greedy = self.rules.temperature <= 0
        stats = self.stats if isinstance(self.stats, ConstraintStats) else None
        return restrict(row, self.constraint, self.mask, greedy=greedy, margin=margin, stats=stats)

    def _emitted(self, tok: int) -> bool:
        """Bookkeeping for a yielded token; True when generation ends with it."""
        self.produced += 1
        self.ctx.append(tok)
        self.drafter.prompt.extend(0, [tok])
        return tok in self.rules.stop_ids or self.produced >= self.rules.max_new_tokens


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
        tie_margin = (
            near_tie_margin(drafter.costs.drift, model.dtype, logits, row_exact(model))
            if exact
            else 0.0
        )
    rules = DecodeRules(max_new_tokens, temperature, stop_ids, generator, constraint, tie_margin)
    run = SpeculativeDecode(
        model, cache, logits, position, drafter, stats, rules, list(context or []), margins
    )
    return run.tokens(verified)
