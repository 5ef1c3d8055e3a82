"""Completion engine: request -> prompt -> cached prefill -> decode -> stop rules.

The engine knows documents only as text plus a cursor offset, and knows nothing of LSP.
It is blocking: the server runs it on a worker thread and cancels it through a
:class:`CancelToken`, which is checked between prefill chunks and decode steps.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from cache import (
    CacheStore,
    Exported,
    PromptCache,
    Rerotator,
    Saved,
    Strategy,
    SyncResult,
    find_rotary,
    rerotation_support,
)
from cache.alignment import common_prefix, diff_ids

from . import branching, lean_forward
from .calibration import Calibration
from .cancel import Cancelled, CancelToken
from .constraints import (
    AllOf,
    Constraint,
    ConstraintStats,
    NoLeadingBreak,
    TextPrefix,
    TokenTexts,
)
from .decode import PREFILL_CHUNK, generate, prefill
from .drafting_policy import Acceptance, CostModel, Drafter, choose_length, cut_at_final
from .drafting_sources import MAX_NGRAM, History, NgramIndex, Workspace
from .fastpath import row_exact
from .fim import Prompt, PromptFormat, build_prompt, detect_format, encode
from .guards import DEFAULT_BUDGET_S, Guards, anticipate, uri_path
from .member_oracle import MemberOracle
from .members import MemberIndex
from .models import LoadedModel
from .panel import Board, PanelItem, PanelResult
from .persistence import text_hash
from .stops import Multiline, StopRules, strip_healed
from .suggestion_memory import (
    MarginBands,
    Marks,
    Said,
    Shown,
    expected_rest,
    token_margins,
    typed_through,
)
from .syntax import exact_tree, grammar_name
from .syntax_check import SyntaxChecker
from .verify import AheadDraft, DraftRows, SpecStats, forward_with_draft, speculative_generate
from .workspace_context import CrossFile

TAIL_TOKENS = 32
"""Default for ``cache.tailTokens``; chosen by ``pie-lsp bench edits`` (docs/cache.md)."""
AFTER_EDIT_TOKENS = 32
"""Default for ``cache.afterEditTokens``; chosen by ``pie-lsp bench edits``."""
CONFIDENCE_MARGIN = 0.05
"""Default for ``cache.confidenceMargin``; chosen by ``pie-lsp bench edits``."""
SEED_MIN = 32
"""The shortest shared start worth copying from another document's cache."""
RECENT_SUGGESTIONS = 4
"""Suggestions remembered per document for drafting (:func:`expected_rest`)."""
REFRESH_CHUNK = 64
"""Tokens per forward in a background refresh: a waiting completion waits at most one."""
GATE_REFRESH_TOKENS = 128
"""Default for ``cache.gateRefreshTokens``: the most stale tokens the confidence gate
re-encodes inside a request (about 0.2 s for the default model on a 2-core CPU); past
it the suggestion is answered from the cache as it is and the refresh is left to the
background (:attr:`CompletionResult.refresh_wanted`)."""

log = logging.getLogger(__name__)

_COSTS: dict[tuple[str, str, str, str], CostModel] = {}
"""Verify-cost curves measured in this process, per model, device, dtype and quantize."""


def _decided(margins: list[float], out: list[int], reason: str) -> float:
    """The smallest margin among the picks that made the suggestion.

    Its tokens, and the end-of-sequence token when that is what ended it.
    """
    used = len(out) + (1 if reason == "endOfSequence" else 0)
    return min(margins[:used], default=float("inf"))


@dataclass(frozen=True)
class CompletionOptions:
    """Per-request knobs (the server fills them from its configuration)."""

    max_tokens: int = 64
    temperature: float = 0.0
    multiline: Multiline = "auto"
    context_tokens: int = 2048
    strategy: Strategy = "pie"
    tail_tokens: int = TAIL_TOKENS
    """pie: the prompt's last tokens, nearest the query, re-encoded at every update."""
    after_edit_tokens: int = AFTER_EDIT_TOKENS
    """pie: kept tokens right after each edit that are re-encoded too."""
    stale_budget: int | None = None
    """pie: stale tokens tolerated at completion time (None: no limit; 0: exact)."""
    seed: int | None = None
    speculative: bool = True
    """Verify model-free drafts in one pass (same output as plain decoding)."""
    max_draft_tokens: int = 16
    """Most drafted tokens per verify step (the cost model may draft fewer)."""
    confidence_margin: float = CONFIDENCE_MARGIN
    """pie: when the cache holds stale tokens and a greedy pick of the suggestion won by
    less than this logit margin, refresh the stale tokens and decode again (exact).
    0 turns the gate off."""
    gate_refresh_tokens: int = GATE_REFRESH_TOKENS
    """pie: the most stale tokens the gate re-encodes inside the request; past it the
    suggestion stands and the refresh is wanted in the background (-1: no limit)."""
    members: bool = True
    """Member monitor: a member access may only name a member the static-analysis
    oracle knows (no constraint where it knows nothing)."""
    syntax: bool = True
    """Syntax check: a suggestion that leaves the file less parseable is trimmed,
    closed or dropped."""
    oracle_budget_ms: float | None = None
    """How long a decode step waits for the member oracle (None: one measured step)."""
    workspace_tokens: float = 0.25
    """Share of ``context_tokens`` for other workspace files' definitions (0: none)."""


class OutOfMemory(RuntimeError):
    """The device ran out of memory; the prompt caches were dropped (``freed`` bytes)."""

    def __init__(self, freed: int, device: str) -> None:
        super().__init__(f"out of memory on {device}")
        self.freed = freed
        self.device = device


_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class CompletionRequest:
    """Complete ``text`` at str offset ``cursor``; ``key`` names the document's cache."""

    key: str
    text: str
    cursor: int
    options: CompletionOptions = field(default_factory=CompletionOptions)
    others: tuple[tuple[str, str], ...] = ()
    """Other open documents as (key, text), most recently used first: a draft source."""
    language: str = ""
    """The document's LSP languageId ("" unknown): selects the grammar and the oracle."""
    path: str | None = None
    """The document's file path, if it has one (the oracle's project resolves imports)."""
    tree: Any = None
    """The document's tree-sitter tree for ``text`` (None: parsed when needed). Never
    mutated: checks work on a copy."""
    unsaved: frozenset[str] = frozenset()
    """File paths of open documents with unsaved changes (the oracle reads files from
    disk, so members of types defined there are unknown)."""

    def __post_init__(self) -> None:
        """Lone surrogates become U+FFFD (JSON lets a client send them; tokenizers refuse).

        One code point and three UTF-8 bytes either way, so ``cursor`` and the tree's
        byte offsets still fit the text.
        """
        if _SURROGATE.search(self.text):
            object.__setattr__(self, "text", _SURROGATE.sub("\ufffd", self.text))
        if any(_SURROGATE.search(text) for _, text in self.others):
            others = tuple((key, _SURROGATE.sub("\ufffd", text)) for key, text in self.others)
            object.__setattr__(self, "others", others)


@dataclass
class CompletionResult:
    """The text to insert at the cursor, and what producing it cost."""

    text: str
    mode: str
    stop_reason: str
    prompt_tokens: int
    reused_tokens: int
    encoded_tokens: int
    prefill_ms: float
    generated_tokens: int
    decode_ms: float
    total_ms: float
    alternatives: list[str] = field(default_factory=list)
    """Other suggestions (distinct, non-empty), best first; asked for with ``alternatives``."""
    min_margin: float = float("inf")
    """The smallest logit margin among the picks that made the suggestion."""
    gated: bool = False
    """Decoded again on a refreshed cache (a close call on stale keys and values)."""
    gate_ms: float = 0.0
    """Time spent on the gate: the first decode and the refresh (in ``total_ms`` only)."""
    refresh_wanted: bool = False
    """The gate fired on more stale tokens than it re-encodes in a request: the
    suggestion came from the cache as it is, and a background refresh
    (:meth:`Engine.refresh`) would let the next request decide the close call exactly."""


@dataclass
class Totals(SpecStats, ConstraintStats):
    """Counters over the engine's life (names as in ``pie/stats``)."""

    reusedCompletions: int = 0
    """Requests answered from the rest of the shown suggestion the user typed into."""

    completions: int = 0
    promptTokens: int = 0
    prefillMs: float = 0.0
    generatedTokens: int = 0
    decodeMs: float = 0.0
    tokensReencoded: int = 0
    cacheUpdateMs: float = 0.0
    refreshes: int = 0
    tokensRefreshed: int = 0
    gatedRefreshes: int = 0
    """Completions decoded again on a refreshed cache (``confidence_margin``)."""
    gateMs: float = 0.0
    """Time those spent on the first decode and the refresh."""
    gatesDeferred: int = 0
    """Gated completions answered from the cache as it was, their refresh left to the
    background (more stale tokens than ``gate_refresh_tokens``)."""
    forwards: int = 0
    """Model forwards run for requests and refreshes."""
    workspaceSnippetTokens: int = 0
    """Tokens of other files' definitions put in prompts (summed over prompts)."""
    workspaceChunkTokens: int = 0
    """Tokens a new prompt cache took from another document's: a shared start copied,
    or other files' context moved by re-rotation."""
    cancelledCompletions: int = 0
    """Completions that stopped because they were cancelled or superseded."""
    forwardsAfterCancel: int = 0
    """The most forwards any cancelled work ran after its cancel (0: it stopped before
    its next forward)."""


class Plan(NamedTuple):
    """A request prepared before it touches the cache."""

    req: CompletionRequest
    rules: StopRules
    prompt: Prompt
    generator: torch.Generator | None
    speculate: bool
    constraint: Callable[[], Constraint | None]
    """A fresh constraint for each decode (None: unconstrained)."""
    found: tuple[list[int], list[float]] | None
    """An earlier suggestion's rest expected here, and its old margins."""
    ahead: AheadDraft | None
    """That rest, to verify in the cache update's last forward."""
    guards: Guards | None
    """The member monitor's lookups and the syntax check (None: both off)."""


class Decoded(NamedTuple):
    """One decode under the stop rules."""

    visible: str
    reason: str
    out: list[int]
    """Tokens generated up to the stop (the stop token not included)."""
    margins: list[float]
    sure: float
    """The smallest margin among the picks that made it (:func:`_decided`)."""


class Outcome(NamedTuple):
    """A request after the cache update, the decode(s) and the alternatives."""

    sync: SyncResult
    decoded: Decoded
    text: str
    alternatives: list[str]
    decode_ms: float
    merged_ms: float
    """Time of the cache update's last forward that verified a draft (decode time)."""
    gated: bool
    gate_ms: float
    refresh_wanted: bool
    """The gate fired past ``gate_refresh_tokens``: refresh in the background."""


def _exact_tree(req: CompletionRequest) -> CompletionRequest:
    """``req`` with the tree a fresh parse gives (:func:`completion.syntax.exact_tree`)."""
    tree = exact_tree(req.tree, req.text, req.language)
    return req if tree is req.tree else replace(req, tree=tree)


class _Seed(NamedTuple):
    """Where a new document's prompt cache starts from (:meth:`Engine._seed`)."""

    cache: PromptCache
    take: int
    """The other cache's first tokens taken."""
    reused: int
    """Tokens of the new prompt they give."""
    exact: bool
    """A shared start, copied as it is (else the context, brought by a pie update)."""


class Engine:
    """One loaded model serving completions for many documents."""

    def __init__(self, loaded: LoadedModel, max_documents: int = 8) -> None:
        from cache.growing import growing_cache  # imports transformers: not at start-up

        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        self.format: PromptFormat = detect_format(self.tokenizer, eos)
        config = self.model.config
        self.caches = CacheStore(lambda: growing_cache(config), max_documents)
        self.totals = Totals()
        self.history = History()
        self.acceptance = Acceptance()
        self.workspace = Workspace(lambda text: encode(self.tokenizer, text))
        self.context = CrossFile(self.tokenizer, self.format)
        """Other workspace files' definitions in the prompt (``workspace_tokens``)."""
        self._costs: CostModel | None = None
        self._costs_lock = threading.Lock()
        self._calibration: Calibration | None = None
        self._newline_ids: frozenset[int] | None = None
        self._token_texts: TokenTexts | None = None
        self._shown: dict[str, Shown] = {}
        """Per document: the last suggestion shown."""
        self._recent: dict[str, deque[Said]] = {}
        """Per document: the last few suggestions, newest first
        (:func:`~completion.suggestion_memory.expected_rest`)."""
        self.bands = MarginBands()
        """How often a re-asked suggestion's tokens come again, by their old margin."""
        self._lock = threading.Lock()
        self._cancel: CancelToken | None = None
        """The work running now, checked before every forward (:meth:`_cancellable`)."""
        self._starts: dict[str, int] = {}
        self._synced: dict[str, str] = {}
        """Per document: the text its prompt cache was last brought up to date with."""
        self._context_ends: dict[str, int] = {}
        """Per document: where its last prompt's shared context ends (``Prompt.context_end``)."""
        self.oracle = MemberOracle()
        """Members of receivers, for the member monitor (a worker process for Python)."""
        self._merges_dot: bool | None = None
        self.max_positions = int(getattr(config, "max_position_embeddings", 0) or 0)
        """The model's trained context length (0: unknown); prompts are kept inside it."""
        self._clamp_logged = False
        supported, why = rerotation_support(config)
        rotary = find_rotary(self.model) if supported else None
        self.rerotator: Rerotator | None = Rerotator(rotary) if rotary is not None else None
        self.pie_unsupported = "" if self.rerotator else (why or "no rotary embedding module")
        if self.pie_unsupported:
            log.warning("pie cache strategy unavailable (%s): using prefix", self.pie_unsupported)

    def effective_strategy(self, strategy: Strategy) -> Strategy:
        """The strategy actually used: pie falls back to prefix where RoPE forbids it."""
        return "prefix" if strategy == "pie" and self.rerotator is None else strategy

    ##### Public API #####

    def complete(
        self,
        req: CompletionRequest,
        cancel: CancelToken | None = None,
        *,
        alternatives: int = 0,
    ) -> CompletionResult:
        """Produce one completion (blocking). Raises :class:`Cancelled` when cancelled.

        ``alternatives``: also produce up to that many other suggestions, each decoded
        from one of the next most likely first tokens (cycling through suggestions).
        A prompt with nothing to start from (no text before the cursor, and a model
        with no start token) gets an empty suggestion, never an error. Out of memory
        on the device, every prompt cache is dropped and :class:`OutOfMemory` raised.
        """
        with self._releasing_memory():
            return self._complete(_exact_tree(req), cancel, alternatives)

    def _complete(
        self, req: CompletionRequest, cancel: CancelToken | None, alternatives: int
    ) -> CompletionResult:
        """:meth:`complete` for a request whose tree is already exact."""
        cancel = cancel or CancelToken()
        t0 = time.perf_counter()
        if not alternatives:
            reused = self._typed_through(req, t0)
            if reused is not None:
                return reused
        plan = self._plan(req)
        if not plan.prompt.ids:
            ms = (time.perf_counter() - t0) * 1000
            return CompletionResult("", plan.rules.mode, "emptyPrompt", 0, 0, 0, 0.0, 0, 0.0, ms)
        with self._locked(req.key, cancel) as pc:
            run = self._run(pc, plan, cancel, alternatives)
        return self._finished(req, plan, run, t0)

    def _finished(
        self, req: CompletionRequest, plan: Plan, run: Outcome, t0: float
    ) -> CompletionResult:
        """A run's result: remembered for later requests, counted."""
        self._remember(req, plan, run.decoded, run.text)
        result = CompletionResult(
            text=run.text,
            mode=plan.rules.mode,
            stop_reason=run.decoded.reason,
            prompt_tokens=len(plan.prompt.ids),
            reused_tokens=run.sync.reused,
            encoded_tokens=run.sync.encoded,
            prefill_ms=run.sync.ms - run.merged_ms,
            generated_tokens=len(run.decoded.out),
            decode_ms=run.decode_ms,
            total_ms=(time.perf_counter() - t0) * 1000,
            alternatives=run.alternatives,
            min_margin=run.decoded.sure,
            gated=run.gated,
            gate_ms=run.gate_ms,
            refresh_wanted=run.refresh_wanted,
        )
        self._count(result, run)
        return result

    def panel(
        self,
        req: CompletionRequest,
        count: int,
        cancel: CancelToken | None = None,
        on_item: Callable[[PanelItem], None] = lambda item: None,
    ) -> PanelResult:
        """Up to ``count`` distinct drafts for the panel, best first (blocking).

        Where the model allows (:mod:`completion.branching`), all drafts are decoded as
        one batch on the document's prompt cache, and the batch's greedy row becomes the
        inline completion: on a row-exact model it decodes in the cache as plain
        decoding does and its logits go to the inline decode as a verified draft (no
        forward again); elsewhere it goes there as the suggestion expected here and is
        verified in a few forwards. Either way the first item is what :meth:`complete`
        gives (speculation is lossless). Other models decode the other drafts one after
        another. All pass the same stop rules and guards. ``on_item`` gets each item as
        it is ready. Raises :class:`Cancelled` when cancelled, :class:`OutOfMemory`
        as :meth:`complete` does.
        """
        with self._releasing_memory():
            return self._panel(_exact_tree(req), count, cancel or CancelToken(), on_item)

    def _panel(
        self,
        req: CompletionRequest,
        count: int,
        cancel: CancelToken,
        on_item: Callable[[PanelItem], None],
    ) -> PanelResult:
        t0 = time.perf_counter()
        plan = self._plan(req)
        guards = plan.guards
        checker = guards.syntax if guards is not None else None
        if checker is None:
            checker = SyntaxChecker(req.language, req.text, req.cursor, req.tree)
        board = Board(checker, on_item)
        batched = branching.supported(self.model) and req.options.temperature <= 0
        best: CompletionResult | None = None
        if count > 1 and plan.prompt.ids and batched:
            best = self._panel_batch(req, plan, count, board, cancel, t0)
        if best is None:
            best = self._complete(req, cancel, 0)
        board.show_best(best.text)
        if count > 1 and plan.prompt.ids and not batched:
            with self._locked(req.key, cancel) as pc:
                self._sync(pc, plan.req, plan.prompt, cancel)
                for text in self._alternatives(pc, plan, best.text, [], count - 1, cancel):
                    board.offer(text, 0.0)
        return board.result(batched, (time.perf_counter() - t0) * 1000)

    def _panel_batch(
        self,
        req: CompletionRequest,
        plan: Plan,
        count: int,
        board: Board,
        cancel: CancelToken,
        t0: float,
    ) -> CompletionResult | None:
        """A panel's batch, and the inline completion where the greedy row gives it.

        None: :meth:`complete` must run (the greedy row is then the draft expected here).
        """
        # The rows' member monitors take the oracle's answers at hand and ask for
        # none: five rows at five member sites would wait five times (docs/panel.md).
        quick = plan
        if plan.guards is not None:  # the same prompt and rules: only the guards differ
            guards = self._guards(req, plan.prompt, ask_oracle=False)
            quick = plan._replace(
                guards=guards, constraint=self._constraint(plan.prompt, plan.rules, guards)
            )
        in_place = (
            row_exact(self.model) and self.effective_strategy(req.options.strategy) != "recompute"
        )
        with self._locked(req.key, cancel) as pc:
            self._sync(pc, plan.req, plan.prompt, cancel)
            with pc.session():
                greedy, verified = self._batched_drafts(pc, quick, count, board, cancel, in_place)
                run = self._run(pc, plan._replace(ahead=verified), cancel, 0) if verified else None
        if run is not None:
            return self._finished(req, plan, run, t0)
        if greedy is not None and greedy.ids:
            self._said(req, plan.prompt, greedy.ids, None)
        return None

    @contextmanager
    def _locked(self, key: str, cancel: CancelToken) -> Iterator[PromptCache]:
        """The document's prompt cache, with the engine's and its own lock held."""
        with self._lock, self._cancellable(cancel):
            cancel.check()
            pc = self.caches.get(key)
            with pc.lock:
                yield pc

    def _batched_drafts(
        self,
        pc: PromptCache,
        plan: Plan,
        count: int,
        board: Board,
        cancel: CancelToken,
        in_place: bool,
    ) -> tuple[branching.Draft | None, AheadDraft | None]:
        """Decode ``count`` drafts as one batch on ``pc``; offer each but the greedy one.

        The caller holds the locks and a session of ``pc``. Returns the greedy row's
        draft, and with ``in_place`` its fed tokens and logits as a verified draft for
        the inline decode (the cache holds them after the prompt).
        """
        assert pc.last_logits is not None
        rules, healed = plan.rules, plan.prompt.healed

        def stops(ids: list[int]) -> bool:
            raw = self.tokenizer.decode(ids, skip_special_tokens=True)
            shown, pending = strip_healed(raw, healed)
            return not raw.endswith("\ufffd") and not pending and rules.cut(shown)[1]

        def done(draft: branching.Draft) -> None:
            visible, reason, used = self._apply_rules(iter(draft.ids), rules, healed, cancel)
            decoded = Decoded(visible, reason, used, [], 0.0)
            text = self._guarded(plan, decoded, rules.finish(visible))
            if draft.branched_at < 0:
                board.greedy_row(text, draft.mean_logprob)
            else:
                board.offer(text, draft.mean_logprob)

        batch = branching.decode_drafts(
            self.model,
            pc.kv,
            pc.last_logits,
            count,
            max(1, plan.req.options.max_tokens),
            self.format.stop_ids,
            stops,
            cancel.check,
            done,
            constraint=plan.constraint(),
            stats=self.totals,
            greedy_in_place=in_place,
        )
        first = batch.drafts[0] if batch.drafts else None
        greedy = first if first is not None and first.branched_at < 0 else None
        if greedy is None or not batch.greedy_logits:
            return greedy, None
        fed = greedy.ids[: len(batch.greedy_logits)]
        rows = DraftRows(torch.stack(batch.greedy_logits), len(plan.prompt.ids), [])
        return greedy, AheadDraft(fed, rows)

    def _plan(self, req: CompletionRequest) -> Plan:
        """What a request needs before it touches the cache: rules, prompt, drafts."""
        opts = req.options
        # A Python header alone breaks the file: with the syntax check it takes its body.
        header_body = opts.syntax and grammar_name(req.language) == "python"
        rules = StopRules.at(req.text, req.cursor, opts.multiline, header_body)
        prompt = self._prompt(req)
        generator = None
        if opts.temperature > 0 and opts.seed is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(opts.seed)
        speculate = opts.speculative and opts.max_draft_tokens > 0
        line = rules.mode == "line"
        found = self._expected(req, prompt) if speculate and prompt.ids else None
        ahead = AheadDraft(self._draft_ahead(*found, opts, line)) if found else None
        guards = self._guards(req, prompt) if opts.members or opts.syntax else None
        return Plan(
            req=req,
            rules=rules,
            prompt=prompt,
            generator=generator,
            speculate=speculate,
            constraint=self._constraint(prompt, rules, guards),
            found=found,
            ahead=ahead,
            guards=guards,
        )

    def _run(self, pc: PromptCache, plan: Plan, cancel: CancelToken, alternatives: int) -> Outcome:
        """Update the cache, decode, apply the confidence gate (caller holds the locks)."""
        opts = plan.req.options
        try:
            sync = self._sync(pc, plan.req, plan.prompt, cancel, plan.ahead)
        except BaseException:
            pc.trim()  # a draft fed with the prompt must not outlive this request
            raise
        t1 = time.perf_counter()
        # A suggestion verified in the prompt's last forward: that forward counts as
        # decode time (it replaced a verify step), not as cache update time.
        merged_ms = plan.ahead.ms if plan.ahead is not None else 0.0
        decoded = self._decode(pc, plan, plan.ahead, cancel)
        close = (
            pc.stale_tokens > 0 and opts.temperature <= 0 and decoded.sure < opts.confidence_margin
        )
        limit = opts.gate_refresh_tokens
        gated = close and (limit < 0 or pc.stale_tokens <= limit)
        refresh_wanted = close and not gated
        if refresh_wanted:
            # Too much to re-encode inside a keystroke's request: the suggestion stands,
            # the refresh goes to the background and the next request decides exactly.
            self.totals.gatesDeferred += 1
        gate_ms = 0.0
        if gated:
            # Stale keys and values may have swung a close call: decide it exactly.
            # The first decode and the refresh count as gate time, not decode time.
            t_gate = time.perf_counter()
            gate_ms = (t_gate - t1) * 1000
            self._refresh_stale(pc, cancel, step=len(pc.ids))  # all of it, in one step
            self.totals.gatedRefreshes += 1
            t1 = time.perf_counter()
            gate_ms += (t1 - t_gate) * 1000
            decoded = self._decode(pc, plan, None, cancel)  # a draft is fed once
        decoded = self._second_chance(pc, plan, decoded, cancel)
        text = self._guarded(plan, decoded, plan.rules.finish(decoded.visible))
        others = (
            self._alternatives(pc, plan, text, decoded.out, alternatives, cancel)
            if alternatives > 0
            else []
        )
        decode_ms = (time.perf_counter() - t1) * 1000 + merged_ms
        return Outcome(
            sync, decoded, text, others, decode_ms, merged_ms, gated, gate_ms, refresh_wanted
        )

    def _decode(
        self, pc: PromptCache, plan: Plan, verified: AheadDraft | None, cancel: CancelToken
    ) -> Decoded:
        """Decode on top of the prompt cache and apply the stop rules (cache cropped after)."""
        margins: list[float] = []
        assert pc.last_logits is not None
        with pc.session() as kv:
            tokens = self._tokens(kv, pc.last_logits, plan, verified, margins)
            line_ok = self._line_check(plan)
            visible, reason, out = self._apply_rules(
                tokens, plan.rules, plan.prompt.healed, cancel, line_ok
            )
        return Decoded(visible, reason, out, margins, _decided(margins, out, reason))

    def _tokens(
        self,
        kv: Any,
        logits: torch.Tensor,
        plan: Plan,
        verified: AheadDraft | None,
        margins: list[float],
    ) -> Iterator[int]:
        """The token stream after the prompt: speculative or plain (the same picks)."""
        opts = plan.req.options
        if plan.speculate:
            line = plan.rules.mode == "line"
            expected = plan.found[0] if plan.found else None
            return speculative_generate(
                self.model,
                kv,
                logits,
                len(plan.prompt.ids),
                max(1, opts.max_tokens),
                self._drafter(plan.req, plan.prompt, opts.max_draft_tokens, line, expected),
                self.totals,
                opts.temperature,
                self.format.stop_ids,
                plan.generator,
                plan.constraint(),
                context=plan.prompt.ids[-2 * MAX_NGRAM :],
                margins=margins,
                verified=verified,
            )
        return generate(
            self.model,
            kv,
            logits,
            len(plan.prompt.ids),
            max(1, opts.max_tokens),
            opts.temperature,
            self.format.stop_ids,
            plan.generator,
            margins=margins,
            constraint=plan.constraint(),
            stats=self.totals,
        )

    def _remember(self, req: CompletionRequest, plan: Plan, decoded: Decoded, text: str) -> None:
        """What later requests draft from and type through: this suggestion, as said.

        ``text`` is the suggestion shown (after the stop rules and the guards).
        """
        out, prompt, opts = decoded.out, plan.prompt, req.options
        self.history.remember(req.key, prompt.ids[-2 * MAX_NGRAM :], out)
        if plan.found is not None and opts.temperature <= 0:
            self.bands.observe(plan.found[1], plan.found[0], out)
        if text:
            self._shown[req.key] = Shown(req.text, req.cursor, text, plan.rules.mode)
        else:
            self._shown.pop(req.key, None)
        # What the model said, as it said it: the suggestion shown may be cut (at a
        # stop, or empty where the output repeats the text after the cursor), but
        # asked again the model says this.
        self._said(req, prompt, out, decoded.margins if opts.temperature <= 0 else None)

    def _said(
        self, req: CompletionRequest, prompt: Prompt, out: list[int], margins: list[float] | None
    ) -> None:
        """Keep ``out``, said after ``prompt`` at ``req``'s cursor, for later requests.

        ``margins``: each token's pick margin (None: unknown, as when sampling).
        """
        full = self.tokenizer.decode(out, skip_special_tokens=True)
        said, _ = strip_healed(full, prompt.healed)
        if not said.strip():
            return
        recent = self._recent.setdefault(req.key, deque(maxlen=RECENT_SUGGESTIONS))
        marks: Marks = ((len(said), math.inf),)
        if margins is not None:
            ends = self._ends(out, len(full) - len(said))
            marks = tuple(zip(ends, margins, strict=False))
        lead = full[: len(full) - len(said)]
        recent.appendleft(Said(req.text, req.cursor, said, marks, lead))

    def _count(self, result: CompletionResult, run: Outcome) -> None:
        """Add a finished completion to :attr:`totals`."""
        t = self.totals
        t.completions += 1
        t.promptTokens += result.prompt_tokens
        t.prefillMs += result.prefill_ms
        t.generatedTokens += result.generated_tokens
        t.decodeMs += result.decode_ms
        t.tokensReencoded += run.sync.encoded
        t.cacheUpdateMs += run.sync.ms - run.merged_ms
        t.gateMs += run.gate_ms

    @contextmanager
    def _cancellable(self, cancel: CancelToken) -> Iterator[None]:
        """Work under ``cancel``: every model forward checks it first (caller holds _lock).

        A cancelled request then stops before its next forward, wherever that forward
        is (prefill chunk, decode or verify step, alternative); it is counted in
        ``cancelledCompletions`` with the forwards that ran after the cancel.
        """
        self._cancel = cancel
        cancel.bind(lambda: self.totals.forwards)
        hook = self.model.register_forward_pre_hook(self._before_forward, with_kwargs=True)
        try:
            yield
        except Cancelled:
            self.totals.cancelledCompletions += 1
            late = cancel.forwards_since()
            self.totals.forwardsAfterCancel = max(self.totals.forwardsAfterCancel, late)
            raise
        finally:
            hook.remove()
            self._cancel = None

    def _before_forward(self, module: Any, args: Any, kwargs: Any) -> None:
        """Forward pre-hook: stop a cancelled request, count the forward."""
        cancel = self._cancel
        if cancel is not None:
            cancel.check()
        self.totals.forwards += 1

    @property
    def costs_measured(self) -> bool:
        """Whether the verify-cost curve is in use (speculation drafts only then)."""
        return self._costs is not None

    @property
    def costs(self) -> CostModel:
        """The verify-cost curve of this model on its device, measured now if need be.

        Once per process, model, device, dtype and quantize (seconds on a CPU: docs/speculative.md).
        A server measures it in slices instead (:meth:`calibrate`).
        """
        while not self.calibrate(60.0):
            pass
        assert self._costs is not None
        return self._costs

    def calibrate(self, seconds: float) -> bool:
        """Run the verify-cost measurement for about ``seconds``; True once it is in use.

        Run on the thread that runs completions, between them: until the curve is in
        use, completions decode plainly. A curve measured for the same model, device,
        dtype and quantize setting in this process is reused at once.
        """
        with self._costs_lock:
            if self._costs is not None:
                return True
            loaded = self.loaded
            key = (loaded.path, str(loaded.device), str(loaded.dtype), loaded.quantize)
            if key not in _COSTS:
                if self._calibration is None:
                    from cache.growing import growing_cache

                    config = self.model.config
                    self._calibration = Calibration(self.model, lambda: growing_cache(config))
                if not self._calibration.steps_for(seconds):
                    return False
                _COSTS[key] = self._calibration.result()
            self._use_costs(_COSTS[key])
            return True

    def stop_calibration(self) -> None:
        """Use the curve from what the measurement timed so far (it ran past its cap).

        Not kept for other engines: a complete measurement would be better.
        """
        with self._costs_lock:
            if self._costs is None and self._calibration is not None:
                self._use_costs(self._calibration.result())

    def _use_costs(self, costs: CostModel) -> None:
        self._costs = costs
        self._calibration = None
        costs.apply(self.model)
        # Drafting in single-line mode needs this; one vocabulary scan that the first
        # completion would otherwise pay.
        _ = self.newline_ids
        log.info("verify cost (k tokens / 1 token): %s", costs.relative)

    def verify_cost(self) -> dict[str, float]:
        """The verify-cost curve drafting uses now, rounded; empty until measured.

        Tokens fed in one forward -> its time relative to a one-token step.
        """
        if self._costs is None:
            return {}
        return {str(n): round(c, 2) for n, c in self._costs.table().items()}

    @property
    def token_texts(self) -> TokenTexts:
        """Every token's text, indexed for token healing and constraints (built once)."""
        if self._token_texts is None:
            self._token_texts = TokenTexts.of(self.tokenizer)
        return self._token_texts

    def _constraint(
        self, prompt: Prompt, rules: StopRules, guards: Guards | None
    ) -> Callable[[], Constraint | None]:
        """A factory of the constraint each decode of a request runs under.

        Token healing where the prompt cut a word off (:class:`TextPrefix`; healed
        whitespace alone is not constrained: the model may start a new line instead of
        re-creating an indentation, :func:`~completion.stops.strip_healed`), no line
        break before the first visible character where the suggestion must be one line
        (:class:`NoLeadingBreak`), and the member monitor
        (:class:`~completion.members.MemberMonitor`) where it applies.
        """
        heal = bool(prompt.healed.strip(" \t"))
        one_line = not rules.lead_break
        members = guards is not None and guards.members
        if not heal and not one_line and not members:
            return lambda: None
        texts = self.token_texts

        def make() -> Constraint:
            parts: list[Constraint] = []
            if heal:
                parts.append(TextPrefix(texts, prompt.healed))
            if one_line:
                parts.append(NoLeadingBreak(texts, prompt.healed))
            monitor = guards.monitor() if guards is not None else None
            if monitor is not None:
                parts.append(monitor)
            return parts[0] if len(parts) == 1 else AllOf(parts)

        return make

    ##### Guards: the member monitor and the syntax check #####

    def set_workspace(self, roots: list[str]) -> None:
        """The workspace folders: the member oracle's projects and cross-file context."""
        self.oracle.roots = list(roots)
        self.context.roots = [Path(r).resolve() for r in roots]

    def warm_oracle(self, text: str, path: str | None, language: str) -> None:
        """Let the member oracle load what a document imports (returns at once)."""
        self.oracle.warm(text, path, language)

    def anticipate(self, req: CompletionRequest) -> bool:
        """Ask the member oracle now about the access at ``req``'s cursor (never waits).

        For an edit, before its completion request: see :func:`completion.guards.anticipate`.
        No model work; safe to call from any thread.
        """
        return anticipate(self.oracle, req)

    def prepare_guards(self) -> None:
        """Build the token indexes the constraints use, on a background thread (once).

        Otherwise the first constrained request pays for them (about a second for a
        150k-token vocabulary).
        """
        if self._token_texts is None:
            threading.Thread(
                target=lambda: MemberIndex.of(self.token_texts), name="pie-index", daemon=True
            ).start()

    def close(self) -> None:
        """Stop helper processes (the member oracle's worker)."""
        self.oracle.close()

    @property
    def merges_dot(self) -> bool:
        """Whether the tokenizer writes ``.name`` as one token (Qwen: 5,872 such tokens)."""
        if self._merges_dot is None:
            dotted = sum(
                1 for t in self.token_texts.texts if len(t) > 2 and t[0] == "." and t[1].isalpha()
            )
            self._merges_dot = dotted >= 1000
        return self._merges_dot

    def oracle_budget_s(self, opts: CompletionOptions) -> float | None:
        """How long a step waits for the oracle: the setting, else one measured step."""
        if opts.oracle_budget_ms is not None:
            return opts.oracle_budget_ms / 1000
        steps = list(self._costs.observed.get(1, ())) if self._costs is not None else []
        return sorted(steps)[len(steps) // 2] if steps else DEFAULT_BUDGET_S

    def _guards(self, req: CompletionRequest, prompt: Prompt, ask_oracle: bool = True) -> Guards:
        """The request's guards (``ask_oracle`` False: only answers the oracle has)."""
        return Guards(
            req,
            prompt.healed,
            self.oracle,
            lambda: self.token_texts,
            lambda text: list(self.tokenizer.encode(text, add_special_tokens=False)),
            self.oracle_budget_s(req.options),
            self.totals,
            ask_oracle,
        )

    def _line_check(self, plan: Plan) -> Callable[[str], bool] | None:
        """Block mode with the syntax check on: a judge of each finished line."""
        checker = plan.guards.syntax if plan.guards is not None else None
        if checker is None or not checker.available or plan.rules.mode != "block":
            return None

        def line_ok(partial: str) -> bool:
            t = time.perf_counter()
            ok = checker.line_ok(partial)
            self.totals.syntaxMs += (time.perf_counter() - t) * 1000
            self.totals.syntaxTrimmed += not ok
            return ok

        return line_ok

    def _second_chance(
        self, pc: PromptCache, plan: Plan, decoded: Decoded, cancel: CancelToken
    ) -> Decoded:
        """Decode once more, constrained, when a late oracle answer refutes a member.

        That is: the suggestion invents a member at a site decoded unconstrained because
        the oracle's answer was late, and the answer has come since; or at a ``self.``
        site left free because it may define a member, where it wrote a use instead.
        The suggestion would otherwise be cut before that member (often to nothing, when
        the site is the cursor's own ``obj.``): the constrained decode keeps what the
        model would write with the members known.
        """
        guards = plan.guards
        text = plan.rules.finish(decoded.visible)
        if guards is None or not guards.members or not text:
            return decoded
        if guards.review(text, plan.prompt.healed) >= len(text):
            return decoded
        late, uses = guards.lookup.retry_late(), guards.constrain_refuted_uses()
        if not (late or uses):
            return decoded
        self.totals.memberRedecodes += 1
        # The first decode's tokens are the draft: verified in a few forwards up to the
        # site now constrained, instead of decoded again one step at a time.
        return self._decode(pc, plan._replace(found=(decoded.out, decoded.margins)), None, cancel)

    def _guarded(self, plan: Plan, decoded: Decoded, text: str) -> str:
        """The suggestion after the member review and the syntax check."""
        guards = plan.guards
        if guards is None or not text:
            return text
        if guards.members:
            cut = guards.review(text, plan.prompt.healed)
            if cut < len(text):
                self.totals.memberCut += 1
                text = text[:cut].rstrip()
        checker = guards.syntax
        if checker is None or not checker.available or not text:
            return text
        healed = plan.prompt.healed
        ends = self._ends(decoded.out, len(healed)) if decoded.out else []
        verdict = checker.check(
            text,
            line_mode=plan.rules.mode == "line",
            boundaries=[e for e in ends if 0 < e < len(text)],
        )
        t = self.totals
        t.syntaxChecks += 1
        t.syntaxMs += verdict.ms
        t.syntaxTrimmed += verdict.action == "trimmed"
        t.syntaxClosed += verdict.action == "closed"
        t.syntaxDropped += verdict.action == "dropped"
        return verdict.text

    @property
    def newline_ids(self) -> frozenset[int]:
        """Token ids whose text contains a line break (from :attr:`token_texts`, once)."""
        if self._newline_ids is None:
            raw = self.token_texts.raw
            self._newline_ids = frozenset(i for i, text in enumerate(raw) if "\n" in text)
        return self._newline_ids

    def _final_ids(self, line: bool) -> frozenset[int]:
        """Tokens after which a completion stops: stop tokens, and line ends for one line."""
        return self.format.stop_ids | (self.newline_ids if line else frozenset())

    def _expected(
        self, req: CompletionRequest, prompt: Prompt
    ) -> tuple[list[int], list[float]] | None:
        """The rest of a suggestion shown here before, tokenized after the prompt.

        With the margin each of those tokens was picked by the last time
        (:func:`~completion.suggestion_memory.token_margins`; infinite where nothing else
        changed). See :func:`~completion.suggestion_memory.expected_rest`; None when none
        applies.
        """
        found = expected_rest(req.text, req.cursor, list(self._recent.get(req.key, ())))
        if found is None:
            return None
        # What the model said before the rest: the healed whitespace it re-creates, or
        # (nothing typed since) what it said there the last time.
        lead = prompt.healed if found.lead is None else found.lead
        ids = list(self.tokenizer.encode(lead + found.rest, add_special_tokens=False))
        return ids, token_margins(self._ends(ids, len(lead)), found.marks)

    def _ends(self, ids: list[int], skip: int) -> list[int]:
        """Where each of ``ids`` ends, in characters of their text after its first ``skip``."""
        return [
            len(self.tokenizer.decode(ids[: n + 1], skip_special_tokens=True)) - skip
            for n in range(len(ids))
        ]

    def _draft_ahead(
        self, expected: list[int], margins: list[float], opts: CompletionOptions, line: bool
    ) -> list[int]:
        """The part of ``expected`` to verify in the prompt's last forward.

        Such a draft starts before the first token is known and costs its length in
        that forward whether or not it is accepted. Each token is accepted as likely as
        tokens picked by its old margin came again in earlier re-asks (:attr:`bands`):
        a pick by a thin margin is what an edit elsewhere flips, and everything after it
        with it. As long as the cost model drafts for those chances, cut after the first
        token that ends the completion, leaving room for the token the step yields.
        """
        if self._costs is None:
            return []
        room = max(0, min(opts.max_draft_tokens, max(1, opts.max_tokens) - 1))
        cont, final = cut_at_final(expected[:room], self._final_ids(line))
        chances = [self.bands.rate(m) for m in margins[: len(cont)]]
        costs = self._costs.appended()  # on top of the update's forward, which runs anyway
        k = choose_length(chances, len(cont), opts.max_draft_tokens, costs, final)
        return cont[:k]

    def _drafter(
        self,
        req: CompletionRequest,
        prompt: Prompt,
        max_draft: int,
        line: bool,
        expected_ids: list[int] | None = None,
    ) -> Drafter:
        self.acceptance.relax()
        index = NgramIndex()
        index.add(list(prompt.ids))
        expected = (prompt.ids[-MAX_NGRAM:], expected_ids) if expected_ids else None
        history, starts = self.history.index_for(req.key, expected)
        return Drafter(
            prompt=index,
            history=history,
            max_draft=max_draft,
            costs=self._costs or CostModel(),  # linear cost: never drafts
            acceptance=self.acceptance,
            history_starts=starts,
            workspace=self.workspace.indexes(tuple(o for o in req.others if o[0] != req.key)),
            final_ids=self._final_ids(line),
        )

    def _typed_through(self, req: CompletionRequest, t0: float) -> CompletionResult | None:
        """The rest of the last suggestion, if the user typed its beginning since."""
        shown = self._shown.get(req.key)
        rest = typed_through(shown, req.text, req.cursor) if shown is not None else None
        if shown is None or rest is None:
            return None
        self._shown[req.key] = Shown(req.text, req.cursor, rest, shown.mode)
        self.totals.reusedCompletions += 1
        ms = (time.perf_counter() - t0) * 1000
        return CompletionResult(rest, shown.mode, "reused", 0, 0, 0, 0.0, 0, 0.0, ms)

    def _alternatives(
        self,
        pc: PromptCache,
        plan: Plan,
        best: str,
        best_ids: list[int],
        n: int,
        cancel: CancelToken,
    ) -> list[str]:
        """Up to ``n`` other suggestions, distinct from ``best``.

        Each is the greedy continuation of one of the next likeliest first tokens that
        the constraints allow: deterministic, and they differ where the model hesitates
        most. Each decodes under its own fork of the constraints and passes the same
        guards (member review, syntax check) as the best one.
        """
        assert pc.last_logits is not None
        prompt, rules, opts = plan.prompt, plan.rules, plan.req.options
        seen = {best}
        out: list[str] = []
        skip = set(self.format.stop_ids) | set(best_ids[:1])
        root = plan.constraint()
        ranked = torch.topk(pc.last_logits, min(4 * n + len(skip), pc.last_logits.numel()))
        for token in ranked.indices.tolist():
            if len(out) >= n:
                break
            if token in skip:
                continue
            piece = self.tokenizer.decode([token], skip_special_tokens=True)
            healed = prompt.healed
            if not piece or (healed and not (piece.startswith(healed) or healed.startswith(piece))):
                continue  # it would not continue the text the prompt healing cut off
            fork = root.fork() if root is not None else None
            if fork is not None and not fork.allows(token):
                continue  # e.g. an invented member as the first token
            cancel.check()
            with pc.session() as kv:
                tokens = generate(
                    self.model,
                    kv,
                    pc.last_logits,
                    len(prompt.ids),
                    max(1, opts.max_tokens),
                    0.0,
                    self.format.stop_ids,
                    first=token,
                    constraint=fork,
                    stats=self.totals,
                )
                visible, reason, ids = self._apply_rules(tokens, rules, healed, cancel)
            decoded = Decoded(visible, reason, ids, [], 0.0)
            text = self._guarded(plan, decoded, rules.finish(visible))
            if text.strip() and text not in seen:
                seen.add(text)
                out.append(text)
        return out

    def stale_tokens(self, key: str) -> int:
        """Stale tokens in a document's cache (0 if none)."""
        pc = self.caches.peek(key)
        return pc.stale_tokens if pc is not None else 0

    def refresh(self, key: str, cancel: CancelToken | None = None) -> int:
        """Re-encode a document's stale tokens (background work between requests).

        Steps of :data:`REFRESH_CHUNK` tokens from the first stale one, rewritten in
        place (:meth:`~cache.prompt_cache.PromptCache.refresh_some`), ``cancel`` checked
        before each: a cancelled refresh keeps the steps it finished, and the next one
        goes on from there. Returns the tokens re-encoded.
        """
        cancel = cancel or CancelToken()
        pc = self.caches.peek(key)
        if pc is None or not pc.stale_tokens:
            return 0
        with self._lock, self._cancellable(cancel), pc.lock:
            n = self._refresh_stale(pc, cancel, step=REFRESH_CHUNK)
        self.totals.refreshes += 1
        return n

    def _refresh_stale(self, pc: PromptCache, cancel: CancelToken, step: int) -> int:
        """Re-encode ``pc``'s stale tokens in place, ``step`` tokens at a time.

        The caller holds the locks. ``cancel`` is checked before each step and each
        prefill chunk; a cancelled refresh keeps the steps it finished.
        """
        n = 0
        while pc.stale_tokens:
            cancel.check()
            done = pc.refresh_some(
                lambda ids, kv, start: prefill(self.model, ids, kv, start, cancel.check), step
            )
            n += done
            self.totals.tokensRefreshed += done
        return n

    def _prompt(self, req: CompletionRequest) -> Prompt:
        """The request's prompt, its window start kept sticky per document."""
        budget = max(16, req.options.context_tokens)
        if self.max_positions:
            # Room for the completion inside the positions the model was trained on.
            limit = max(16, self.max_positions - max(1, req.options.max_tokens) - 8)
            if budget > limit:
                if not self._clamp_logged:
                    log.warning(
                        "contextTokens %d is beyond what the model was trained on (%d "
                        "positions): prompts are kept to %d tokens",
                        budget,
                        self.max_positions,
                        limit,
                    )
                    self._clamp_logged = True
                budget = limit
        opts = req.options
        recent = tuple((path, text) for uri, text in req.others if (path := uri_path(uri)))
        header = self.context.header(
            req.key, req.text, req.path, opts.workspace_tokens, budget, recent
        )
        self.totals.workspaceSnippetTokens += len(header)
        prompt = build_prompt(
            self.tokenizer,
            self.format,
            req.text,
            req.cursor,
            budget,
            prefer_start=self._starts.get(req.key),
            heal_dot=self.merges_dot,
            header=header,
        )
        self._starts[req.key] = prompt.prefix_start
        return prompt

    def _sync(
        self,
        pc: PromptCache,
        req: CompletionRequest,
        prompt: Prompt,
        cancel: CancelToken,
        ahead: AheadDraft | None = None,
    ) -> SyncResult:
        """Bring ``pc`` up to date with ``prompt``, ``req``'s (caller holds the locks).

        ``ahead``: a draft to feed after the prompt in the same forward as the prompt's
        last span, when that span is short (one prefill chunk with the draft); its
        logits and the forward's time go into it (``rows``, ``ms``), and the cache then
        holds the draft too (the caller's decode keeps or crops it).
        """
        opts = req.options
        n = len(prompt.ids)

        def encode(ids: list[int], kv: Any, start: int) -> torch.Tensor:
            if (
                ahead is not None
                and ahead.ids
                and ahead.rows is None
                and start + len(ids) == n
                and len(ids) + len(ahead.ids) <= PREFILL_CHUNK
            ):
                cancel.check()
                t = time.perf_counter()
                last, ahead.rows = forward_with_draft(self.model, ids, ahead.ids, kv, start)
                ahead.ms = (time.perf_counter() - t) * 1000
                return last
            return prefill(self.model, ids, kv, start, cancel.check)

        self._synced.pop(req.key, None)  # until the sync is whole
        strategy = self.effective_strategy(opts.strategy)
        seeded = None
        if not len(pc) and strategy != "recompute":
            seeded = self._seed(pc, req, prompt, strategy)
        result = pc.sync(
            prompt.ids,
            encode,
            strategy,
            rerotator=self.rerotator,
            tail=opts.tail_tokens,
            after_edit=opts.after_edit_tokens,
            stale_budget=opts.stale_budget,
        )
        if seeded is not None:
            # This sync kept the whole context the seed's placed: only the seed's
            # reused part was reused, its encoded part was encoded.
            result.reused -= seeded.encoded
            result.encoded += seeded.encoded
            result.shifted += seeded.shifted
            result.ms += seeded.ms
        self._synced[req.key] = req.text
        self._context_ends[req.key] = prompt.context_end
        return result

    def _seed(
        self, pc: PromptCache, req: CompletionRequest, prompt: Prompt, strategy: Strategy
    ) -> SyncResult | None:
        """Start an empty prompt cache from the other document's that shares most with it.

        Prompts open with other files' context (:mod:`.workspace_context`). A start
        shared with another document's prompt is copied as it is: at the same positions
        after the same tokens the keys and values are the same. Otherwise (pie) the
        other prompt's context is taken and brought to this one's: the files' blocks
        both quote (runs of :data:`~cache.alignment.MIN_KEEP` tokens or more) are moved
        by re-rotation, stale (their context differs), the rest encoded; the returned
        cost adds to the sync's. At least :data:`SEED_MIN` tokens reused, or nothing is
        done. The caller holds the locks.
        """
        seed = self._seed_source(pc, req.key, prompt, strategy == "pie")
        if seed is None:
            return None
        exported = seed.cache.export()
        if exported is None:
            return None
        n = seed.take
        layers = [(k[..., :n, :], v[..., :n, :]) for k, v in exported.layers]
        pc.adopt(Exported(exported.ids[:n], exported.stale[:n], layers))
        if seed.exact:
            self.totals.workspaceChunkTokens += n
            return None
        opts = req.options
        result = pc.sync(
            prompt.ids[: prompt.context_end],
            lambda ids, kv, start: prefill(self.model, ids, kv, start),
            "pie",
            rerotator=self.rerotator,
            after_edit=opts.after_edit_tokens,
        )
        self.totals.workspaceChunkTokens += result.reused
        return result

    def _seed_source(self, pc: PromptCache, key: str, prompt: Prompt, chunks: bool) -> _Seed | None:
        """The other document's cache to start ``pc`` from (:meth:`_seed`), if any."""
        ids, shared = prompt.ids, prompt.ids[: prompt.context_end]
        best: _Seed | None = None
        for other_key, other in self.caches.items():
            if other is pc or other_key == key or len(other) < SEED_MIN:
                continue
            exact = common_prefix(other.ids, ids)
            if exact >= len(shared) or not chunks or self.rerotator is None:
                seed = _Seed(other, min(exact, len(ids) - 1), exact, True)
            else:
                end = min(self._context_ends.get(other_key, 0), len(other.ids))
                runs = diff_ids(other.ids[:end], shared)
                seed = _Seed(other, end, sum(len(r) for r in runs if r.keep), False)
            if seed.reused >= SEED_MIN and (best is None or seed.reused > best.reused):
                best = seed
        return best

    def _apply_rules(
        self,
        tokens: Iterable[int],
        rules: StopRules,
        healed: str,
        cancel: CancelToken,
        line_ok: Callable[[str], bool] | None = None,
    ) -> tuple[str, str, list[int]]:
        """Consume generated tokens until a stop; returns (text, reason, tokens used).

        ``line_ok`` judges each finished line (block mode): the first it refuses ends
        the suggestion before that line (reason ``"syntax"``).
        """
        out: list[int] = []
        visible = ""
        checked = 0
        for token in tokens:
            if token in self.format.stop_ids:
                return visible, "endOfSequence", out
            out.append(token)
            raw = self.tokenizer.decode(out, skip_special_tokens=True)
            if raw.endswith("\ufffd"):
                continue  # a multi-byte character is still incomplete
            shown, pending = strip_healed(raw, healed)
            if pending:
                continue
            visible, stop = rules.cut(shown)
            end = visible.rfind("\n") + 1
            if line_ok is not None and end > checked:
                if not line_ok(visible[:end]):
                    return visible[:checked], "syntax", out
                checked = end
            if stop:
                return visible, "stopRule", out
            cancel.check()
        shown, _ = strip_healed(self.tokenizer.decode(out, skip_special_tokens=True), healed)
        # The last line is complete now: let the block rules see it.
        visible, _ = rules.cut(shown + "\n")
        return visible, "maxTokens", out

    def forget(self, key: str) -> None:
        """Free everything held for a document (it was closed).

        Run it on the thread that runs completions, after any completion of ``key``:
        a completion in flight writes its suggestion back when it ends.
        """
        with self._lock:
            self.caches.discard(key)
            self._starts.pop(key, None)
            self._synced.pop(key, None)
            self._context_ends.pop(key, None)
            self._shown.pop(key, None)
            self._recent.pop(key, None)
            self.history.forget(key)
            self.workspace.forget(key)
            self.context.forget(key)

    def saved_state(self, key: str) -> Saved | None:
        """The document's prompt cache as an entry to save, keys and values copied.

        None when nothing is cached or the last update did not finish. Safe from any
        thread: it holds the document's cache lock while it copies, so only work on
        this document waits (a 4,000-token cache of the default model: tens of ms).
        """
        pc, text = self.caches.peek(key), self._synced.get(key)
        if pc is None or text is None:
            return None
        with pc.lock:
            exported = pc.export()
            if exported is None or self._synced.get(key) is not text:
                return None
            layers = [
                (
                    k.clone(memory_format=torch.contiguous_format),
                    v.clone(memory_format=torch.contiguous_format),
                )
                for k, v in exported.layers
            ]
        cached = exported._replace(layers=layers)
        return Saved(key, text_hash(text), cached, self._starts.get(key))

    def release(self, key: str) -> Saved | None:
        """Forget a closed document (:meth:`forget`) and hand over its cache to save.

        No copy: the keys and values leave the engine with the entry. Run it on the
        thread that runs completions, as :meth:`forget`.
        """
        with self._lock:
            pc, text, start = self.caches.peek(key), self._synced.get(key), self._starts.get(key)
            exported = pc.export() if pc is not None and text is not None else None
        self.forget(key)  # drops the cache object, not the tensors exported from it
        if exported is None or text is None:
            return None
        return Saved(key, text_hash(text), exported, start)

    def adopt_saved(self, saved: Saved) -> bool:
        """Start a document's prompt cache from a saved one; False if it was not used.

        Not used when the document has a cache already or the entry does not fit this
        model. The next completion brings it to the document's text like any edit.
        Run it on the thread that runs completions.
        """
        with self._lock:
            pc = self.caches.get(saved.key)
            with pc.lock:
                if len(pc):
                    return False
                try:
                    pc.adopt(saved.cached)
                except ValueError as exc:
                    log.warning("saved cache for %s not used: %s", saved.key, exc)
                    return False
            if saved.start is not None:
                self._starts.setdefault(saved.key, saved.start)
            return True

    @contextmanager
    def _releasing_memory(self) -> Iterator[None]:
        """On running out of device memory: drop the caches, raise :class:`OutOfMemory`.

        The device's cached blocks are returned too; the exception carries the bytes
        the caches held.
        """
        try:
            yield
        except torch.OutOfMemoryError as exc:
            with self._lock:
                held = self.caches.nbytes()
                self.caches.clear()
                self._synced.clear()
            if self.model.device.type == "cuda":
                torch.cuda.empty_cache()
            raise OutOfMemory(held, self.model.device.type) from exc

    def configure_caches(self, max_documents: int, max_bytes: int, clear: bool) -> None:
        """New cache budgets (and drop every cache, e.g. for a new strategy)."""
        with self._lock:
            self.caches.max_entries = max_documents
            self.caches.max_bytes = max_bytes
            if clear:
                self.caches.clear()
            self.caches.enforce()

    def tracked_keys(self) -> set[str]:
        """Documents that hold any state in the engine (cache, window, suggestions)."""
        keys = {key for key, _ in self.caches.items()}
        for held in (self._starts, self._synced, self._context_ends, self._shown, self._recent):
            keys.update(list(held))
        return keys | self.history.keys() | self.workspace.keys()

    def cached_tokens(self, key: str) -> int:
        """Tokens in a document's prompt cache (0 if none)."""
        pc = self.caches.peek(key)
        return len(pc) if pc is not None else 0

    def describe(self) -> dict[str, Any]:
        """Model facts for ``pie/stats``."""
        return {
            "pieSupported": self.rerotator is not None,
            "id": self.loaded.id,
            "path": self.loaded.path,
            "device": str(self.loaded.device),
            "dtype": str(self.loaded.dtype).removeprefix("torch."),
            "quantize": self.loaded.quantize,
            "forward": "lean" if lean_forward.installed(self.model) else "library",
            "rowExact": row_exact(self.model),
            "promptFormat": self.format.name,
            "loadSeconds": round(self.loaded.load_seconds, 3),
        }
