"""Engines with what benchmarks need on top of the product's: probes and snapshots.

- :class:`PrepareEngine` brings a document's prompt cache up to date without decoding
  (``bench edits`` and ``bench drift`` warm caches, then edit).
- :class:`ProbeEngine` decodes a fixed number of tokens greedily with no stop at all
  (``bench edits`` compares the first 32 tokens of each cache strategy's output) and
  derives the completion from their beginning.
- :class:`SnapshotEngine` copies and puts back what drafting and typing-through learn
  from completions (``bench decode`` times one request several times from one state).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch

from cache import SyncResult
from completion.cancel import CancelToken
from completion.decode import generate
from completion.engine import (
    AheadDraft,
    CompletionRequest,
    CompletionResult,
    Decoded,
    Engine,
    Plan,
)


class PrepareEngine(Engine):
    """An engine that can update a document's prompt cache without decoding."""

    def prepare(self, req: CompletionRequest, cancel: CancelToken | None = None) -> SyncResult:
        """Bring a document's prompt cache up to date for a cursor, without decoding."""
        cancel = cancel or CancelToken()
        prompt = self._prompt(req)
        if not prompt.ids:
            return SyncResult(0, 0, 0.0)
        with self._lock, self._cancellable(cancel):
            cancel.check()
            pc = self.caches.get(req.key)
            with pc.lock:
                sync = self._sync(pc, req, prompt, cancel)
        self.totals.tokensReencoded += sync.encoded
        self.totals.cacheUpdateMs += sync.ms
        return sync


class ProbeEngine(PrepareEngine):
    """An engine whose :meth:`probe` returns the first tokens the model says, unstopped."""

    _probe_tokens = 0
    _probe_ids: list[int]

    def probe(self, req: CompletionRequest, tokens: int) -> tuple[CompletionResult, list[int]]:
        """Complete ``req`` from ``tokens`` tokens decoded greedily with no stop rule.

        Plain decoding, no typing-through and nothing remembered for later drafts: each
        probe is computed from the cache alone. Returns the completion (its rules
        applied to the probe's first ``max_tokens``) and the probe's token ids.
        """
        self._probe_tokens, self._probe_ids = tokens, []
        try:
            return self.complete(req), self._probe_ids
        finally:
            self._probe_tokens = 0

    def _plan(self, req: CompletionRequest) -> Plan:
        plan = super()._plan(req)
        return plan._replace(speculate=False) if self._probe_tokens else plan

    def _typed_through(self, req: CompletionRequest, t0: float) -> CompletionResult | None:
        return None if self._probe_tokens else super()._typed_through(req, t0)

    def _remember(self, req: CompletionRequest, plan: Plan, decoded: Decoded, text: str) -> None:
        if not self._probe_tokens:
            super()._remember(req, plan, decoded, text)

    def _tokens(
        self,
        kv: Any,
        logits: torch.Tensor,
        plan: Plan,
        verified: AheadDraft | None,
        margins: list[float],
    ) -> Iterator[int]:
        if not self._probe_tokens:
            return super()._tokens(kv, logits, plan, verified, margins)
        n = max(1, plan.req.options.max_tokens)
        stream = generate(
            self.model,
            kv,
            logits,
            len(plan.prompt.ids),
            max(n, self._probe_tokens),
            margins=margins,
            constraint=plan.constraint(),
        )
        self._probe_ids = list(stream)
        return iter(self._probe_ids[:n])


class SnapshotEngine(Engine):
    """An engine whose learned drafting state can be copied and put back."""

    def drafting_state(self, key: str | None = None) -> Any:
        """A copy of what drafting and typing-through learn from completions.

        It includes the verify-cost timings learned online (shared by the engines on
        one model) and, with ``key``, that document's prompt cache: how a request runs
        depends on it (a re-ask is verified inside the cache update's forward only when
        the cache update runs one).
        """
        timings = self._costs.snapshot() if self._costs is not None else None
        learned = copy.deepcopy(
            (self.history, self.acceptance, self.bands, self._shown, self._recent)
        )
        pc = self.caches.peek(key) if key is not None else None
        return (learned, timings, key, pc.snapshot() if pc is not None else None)

    def restore_drafting_state(self, state: Any) -> None:
        """Put back a :meth:`drafting_state` copy (copied again: it can be reused)."""
        learned, timings, key, cache = state
        self.history, self.acceptance, self.bands, self._shown, self._recent = copy.deepcopy(
            learned
        )
        if timings is not None and self._costs is not None:
            self._costs.restore(timings)
        if key is not None:
            if cache is None:
                self.caches.discard(key)
            else:
                pc = self.caches.get(key)
                with pc.lock:
                    pc.restore(cache)
