"""Completion engine: request -> prompt -> cached prefill -> decode -> stop rules.

The engine knows documents only as text plus a cursor offset, and knows nothing of LSP.
It is blocking: the server runs it on a worker thread and cancels it through a
:class:`CancelToken`, which is checked between prefill chunks and decode steps.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from cache import CacheStore, Strategy

from .decode import generate, prefill
from .fim import PromptFormat, build_prompt, detect_format
from .models import LoadedModel
from .stops import Multiline, StopRules, strip_healed


class Cancelled(Exception):
    """The request was cancelled or superseded."""


class CancelToken:
    """A flag that a worker checks between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def cancel(self, reason: str = "cancelled") -> None:
        """Ask the work to stop at its next check."""
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether cancel() was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancelled."""
        if self._event.is_set():
            raise Cancelled(self.reason)


@dataclass(frozen=True)
class CompletionOptions:
    """Per-request knobs (the server fills them from its configuration)."""

    max_tokens: int = 64
    temperature: float = 0.0
    multiline: Multiline = "auto"
    context_tokens: int = 2048
    strategy: Strategy = "prefix"
    seed: int | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """Complete ``text`` at str offset ``cursor``; ``key`` names the document's cache."""

    key: str
    text: str
    cursor: int
    options: CompletionOptions = field(default_factory=CompletionOptions)


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


@dataclass
class Totals:
    """Counters over the engine's life (names as in ``pie/stats``)."""

    completions: int = 0
    promptTokens: int = 0
    prefillMs: float = 0.0
    generatedTokens: int = 0
    decodeMs: float = 0.0


class Engine:
    """One loaded model serving completions for many documents."""

    def __init__(self, loaded: LoadedModel, max_documents: int = 8) -> None:
        from transformers import DynamicCache

        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = [gen_eos] if isinstance(gen_eos, int) else list(gen_eos or [])
        self.format: PromptFormat = detect_format(self.tokenizer, eos)
        config = self.model.config
        self.caches = CacheStore(lambda: DynamicCache(config=config), max_documents)
        self.totals = Totals()
        self._lock = threading.Lock()

    ##### Public API #####

    def complete(
        self, req: CompletionRequest, cancel: CancelToken | None = None
    ) -> CompletionResult:
        """Produce one completion (blocking). Raises :class:`Cancelled` when cancelled."""
        cancel = cancel or CancelToken()
        opts = req.options
        t0 = time.perf_counter()
        rules = StopRules.at(req.text, req.cursor, opts.multiline)
        prompt = build_prompt(
            self.tokenizer, self.format, req.text, req.cursor, max(16, opts.context_tokens)
        )
        generator = None
        if opts.temperature > 0 and opts.seed is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(opts.seed)
        with self._lock:
            cancel.check()
            pc = self.caches.get(req.key)
            with pc.lock:
                sync = pc.sync(
                    prompt.ids,
                    lambda ids, kv, start: prefill(self.model, ids, kv, start, cancel.check),
                    opts.strategy,
                )
                assert pc.last_logits is not None
                t1 = time.perf_counter()
                out: list[int] = []
                visible = ""
                reason = "maxTokens"
                with pc.session() as kv:
                    for token in generate(
                        self.model,
                        kv,
                        pc.last_logits,
                        len(prompt.ids),
                        max(1, opts.max_tokens),
                        opts.temperature,
                        self.format.stop_ids,
                        generator,
                    ):
                        if token in self.format.stop_ids:
                            reason = "endOfSequence"
                            break
                        out.append(token)
                        raw = self.tokenizer.decode(out, skip_special_tokens=True)
                        if raw.endswith("\ufffd"):
                            continue  # a multi-byte character is still incomplete
                        shown, pending = strip_healed(raw, prompt.healed)
                        if pending:
                            continue
                        visible, stop = rules.cut(shown)
                        if stop:
                            reason = "stopRule"
                            break
                        cancel.check()
                    else:
                        shown, _ = strip_healed(
                            self.tokenizer.decode(out, skip_special_tokens=True), prompt.healed
                        )
                        # The last line is complete now: let the block rules see it.
                        visible, _ = rules.cut(shown + "\n")
                decode_ms = (time.perf_counter() - t1) * 1000
        text = rules.finish(visible)
        result = CompletionResult(
            text=text,
            mode=rules.mode,
            stop_reason=reason,
            prompt_tokens=len(prompt.ids),
            reused_tokens=sync.reused,
            encoded_tokens=sync.encoded,
            prefill_ms=sync.ms,
            generated_tokens=len(out),
            decode_ms=decode_ms,
            total_ms=(time.perf_counter() - t0) * 1000,
        )
        t = self.totals
        t.completions += 1
        t.promptTokens += result.prompt_tokens
        t.prefillMs += result.prefill_ms
        t.generatedTokens += result.generated_tokens
        t.decodeMs += result.decode_ms
        return result

    def forget(self, key: str) -> None:
        """Free a document's cache (the document was closed)."""
        self.caches.discard(key)

    def cached_tokens(self, key: str) -> int:
        """Tokens in a document's prompt cache (0 if none)."""
        pc = self.caches.peek(key)
        return len(pc) if pc is not None else 0

    def describe(self) -> dict[str, Any]:
        """Model facts for ``pie/stats``."""
        return {
            "id": self.loaded.id,
            "path": self.loaded.path,
            "device": str(self.loaded.device),
            "dtype": str(self.loaded.dtype).removeprefix("torch."),
            "promptFormat": self.format.name,
            "loadSeconds": round(self.loaded.load_seconds, 3),
        }
