"""Per-document prompt caches: token ids plus the model's keys and values for them.

This module owns the past key/values of each document's current prompt, kept between
completions. Strategies:

- ``prefix``: reuse the longest unchanged token prefix and encode the rest;
- ``recompute``: encode the whole prompt every time (the reference).

The edit-aware ``pie`` strategy (issue 3) slots in beside them.

Generated tokens never stay in a document's cache: :meth:`PromptCache.session` crops the
cache back to the prompt when decoding ends, however it ends.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch

Strategy = Literal["prefix", "recompute"]
STRATEGIES: tuple[str, ...] = ("prefix", "recompute")

Encoder = Callable[[list[int], Any, int], torch.Tensor]
"""``encode(ids, cache, start) -> last logits``: feeds ids at positions ``start..``."""


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def truncate(kv: Any, n: int) -> None:
    """Drop every cached position from ``n`` on (transformers' ``crop`` takes a count)."""
    extra = kv.get_seq_length() - n
    if extra > 0:
        kv.crop(-extra)


@dataclass
class SyncResult:
    """What bringing a cache up to date with a prompt cost."""

    reused: int
    encoded: int
    ms: float


class PromptCache:
    """Token ids and KV cache of one document's current prompt."""

    def __init__(self, make_cache: Callable[[], Any]) -> None:
        self._make_cache = make_cache
        self.ids: list[int] = []
        self.kv: Any = None
        self.last_logits: torch.Tensor | None = None
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def nbytes(self) -> int:
        """Bytes held by keys and values."""
        if self.kv is None:
            return 0
        total = 0
        for layer in getattr(self.kv, "layers", []):
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total

    def sync(self, ids: list[int], encode: Encoder, strategy: Strategy) -> SyncResult:
        """Make the cache hold exactly ``ids``; afterwards ``last_logits`` is current."""
        t0 = time.perf_counter()
        if not ids:
            raise ValueError("empty prompt")
        keep = common_prefix(self.ids, ids) if strategy == "prefix" and self.kv is not None else 0
        if keep == len(ids) and keep == len(self.ids) and self.last_logits is not None:
            return SyncResult(keep, 0, (time.perf_counter() - t0) * 1000)
        keep = min(keep, len(ids) - 1)  # at least one token to get fresh logits
        if keep == 0:
            self.kv = self._make_cache()
        else:
            truncate(self.kv, keep)
        self.ids = ids[:keep]
        self.last_logits = None
        logits = encode(ids[keep:], self.kv, keep)
        self.ids = list(ids)
        self.last_logits = logits
        return SyncResult(keep, len(ids) - keep, (time.perf_counter() - t0) * 1000)

    @contextmanager
    def session(self) -> Iterator[Any]:
        """Decode on top of the prompt; on exit, crop generated tokens back out."""
        n = len(self.ids)
        try:
            yield self.kv
        finally:
            if self.kv is not None:
                truncate(self.kv, n)

    def drop(self) -> None:
        """Free the keys and values."""
        self.ids, self.kv, self.last_logits = [], None, None


class CacheStore:
    """Prompt caches by document key, least recently used evicted past ``max_entries``."""

    def __init__(self, make_cache: Callable[[], Any], max_entries: int = 8) -> None:
        self._make_cache = make_cache
        self.max_entries = max_entries
        self._entries: OrderedDict[str, PromptCache] = OrderedDict()

    def get(self, key: str) -> PromptCache:
        """The cache for ``key`` (created empty when new), marked most recently used."""
        entry = self._entries.get(key)
        if entry is None:
            entry = PromptCache(self._make_cache)
            self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            _, old = self._entries.popitem(last=False)
            old.drop()
        return entry

    def peek(self, key: str) -> PromptCache | None:
        """The cache for ``key`` if there is one, without touching LRU order."""
        return self._entries.get(key)

    def discard(self, key: str) -> None:
        """Free the cache of a closed document."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.drop()

    def clear(self) -> None:
        """Free every cache (e.g. when the model changes)."""
        for entry in self._entries.values():
            entry.drop()
        self._entries.clear()

    def items(self) -> list[tuple[str, PromptCache]]:
        """Snapshot of (key, cache) pairs."""
        return list(self._entries.items())

    def nbytes(self) -> int:
        """Bytes held by all caches."""
        return sum(e.nbytes() for e in self._entries.values())
