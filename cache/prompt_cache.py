"""Per-document prompt caches: token ids plus the model's keys and values for them.

This module owns the past key/values of each document's current prompt, kept across
edits and completions. Strategies for bringing a cache up to date with a new prompt:

- ``pie`` (Positional Integrity Encoding): keep the keys and values of every token the
  diff keeps, drop deleted tokens', re-rotate the keys of shifted tokens by their
  position delta, and encode only the inserted tokens, at their new positions, attending
  to what precedes them. Kept tokens after an edit still hold keys and values computed
  against the old text: they are *stale*. The last ``tail`` tokens of the prompt (the
  ones nearest the query) are always re-encoded, and a background :meth:`refresh`
  re-encodes the stale rest when a budget is exceeded.
- ``prefix``: reuse the longest unchanged token prefix and encode the rest.
- ``recompute``: encode the whole prompt every time (the reference).

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
from typing import Any, Literal, NamedTuple

import torch

from .alignment import Segment, common_prefix, diff_ids, force_encode_tail, widen_edits
from .growing import GrowingLayer
from .rope import Rerotator

Strategy = Literal["pie", "prefix", "recompute"]
STRATEGIES: tuple[str, ...] = ("pie", "prefix", "recompute")

Encoder = Callable[[list[int], Any, int], torch.Tensor]
"""``encode(ids, cache, start) -> last logits``: feeds ids at positions ``start..``."""


def truncate(kv: Any, n: int) -> None:
    """Drop every cached position from ``n`` on (transformers' ``crop`` takes a count)."""
    extra = kv.get_seq_length() - n
    if extra > 0:
        kv.crop(-extra)


def _append(kv: Any, keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    """Append per-layer ``[B, H, S, D]`` keys/values at the end of every cache layer."""
    # As the forwards do: a cache that appends in place (cache/growing.py) can then keep
    # writing into the buffers they made.
    with torch.inference_mode():
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            kv.update(k, v, i)


@dataclass
class SyncResult:
    """What bringing a cache up to date with a prompt cost."""

    reused: int
    """Tokens whose keys and values were kept (shifted or not)."""
    encoded: int
    """Tokens run through the model."""
    ms: float
    strategy: str = "prefix"
    shifted: int = 0
    """Kept tokens whose keys were re-rotated."""
    stale: int = 0
    """Stale tokens in the cache afterwards."""


class Exported(NamedTuple):
    """A prompt cache's contents, as :meth:`PromptCache.export` gives them."""

    ids: list[int]
    stale: bytearray
    layers: list[tuple[torch.Tensor, torch.Tensor]]
    """Per layer: keys and values ``[1, Hkv, len(ids), D]``."""


class PromptCache:
    """Token ids and KV cache of one document's current prompt."""

    def __init__(self, make_cache: Callable[[], Any]) -> None:
        self._make_cache = make_cache
        self.ids: list[int] = []
        self.kv: Any = None
        self.last_logits: torch.Tensor | None = None
        self.stale = bytearray()
        """One byte per cached token: 1 if its keys/values predate an edit before it."""
        self.strategy = ""
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def stale_tokens(self) -> int:
        """How many cached tokens are stale."""
        return self.stale.count(1)

    def nbytes(self) -> int:
        """Bytes held by keys and values."""
        if self.kv is None:
            return 0
        total = 0
        for layer in getattr(self.kv, "layers", []):
            held = getattr(layer, "nbytes", None)  # cache/growing.py: spare room included
            if callable(held):
                total += int(held())
                continue
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total

    ##### Saving and restoring #####

    def export(self) -> Exported | None:
        """The prompt's ids, stale flags and each layer's keys and values (None: empty).

        The tensors are views of the cache: copy or write them out before the next
        update.
        """
        if self.kv is None or not self.ids:
            return None
        n = len(self.ids)
        layers = [(layer.keys[..., :n, :], layer.values[..., :n, :]) for layer in self.kv.layers]
        return Exported(list(self.ids), bytearray(self.stale), layers)

    def adopt(self, saved: Exported) -> None:
        """Hold a saved prompt's cache (its own copy); the next :meth:`sync` goes on from it.

        The last position's logits are not saved: that sync re-encodes at least the
        prompt's tail (``tail``), as every pie update does, and has them again.
        """
        if len(saved.stale) != len(saved.ids) or not saved.layers:
            raise ValueError("a saved cache needs one stale flag per token and some layers")
        kv = self._make_cache()
        if len(getattr(kv, "layers", [])) not in (0, len(saved.layers)):
            raise ValueError("the saved keys and values are for another number of layers")
        self.kv = kv
        _append(self.kv, [k for k, _ in saved.layers], [v for _, v in saved.layers])
        if self.kv.get_seq_length() != len(saved.ids):
            self.kv, self.ids, self.stale = None, [], bytearray()
            raise ValueError("the saved keys and values do not match its token ids")
        self.ids, self.stale = list(saved.ids), bytearray(saved.stale)
        self.last_logits = None

    ##### Bringing the cache up to date #####

    def sync(
        self,
        ids: list[int],
        encode: Encoder,
        strategy: Strategy,
        *,
        rerotator: Rerotator | None = None,
        tail: int = 1,
        after_edit: int = 0,
        stale_budget: int | None = None,
    ) -> SyncResult:
        """Make the cache hold exactly ``ids``; afterwards ``last_logits`` is current.

        ``tail`` (pie only): how many of the prompt's last tokens are always re-encoded.
        ``after_edit`` (pie only): how many kept tokens right after each edit are
        re-encoded too (their local context changed most).
        ``stale_budget`` (pie only): at most this many stale tokens may remain; past it,
        the stale tokens nearest the query are re-encoded. ``0`` makes pie exact.
        """
        t0 = time.perf_counter()
        if not ids:
            raise ValueError("empty prompt")
        self.strategy = strategy
        unchanged = self.kv is not None and ids == self.ids and self.last_logits is not None
        if unchanged and strategy != "recompute":
            return SyncResult(len(ids), 0, _ms(t0), strategy, stale=self.stale_tokens)
        if strategy == "pie" and rerotator is not None and self.kv is not None and self.ids:
            result = self._sync_pie(ids, encode, rerotator, max(1, tail), after_edit, stale_budget)
        else:
            keep = (
                common_prefix(self.ids, ids)
                if strategy != "recompute" and self.kv is not None
                else 0
            )
            result = self._rebuild(ids, encode, [Segment(True, 0, keep, 0)] if keep else [], keep)
        result.ms = _ms(t0)
        result.strategy = strategy
        result.stale = self.stale_tokens
        return result

    def _sync_pie(
        self,
        ids: list[int],
        encode: Encoder,
        rot: Rerotator,
        tail: int,
        after_edit: int,
        stale_budget: int | None,
    ) -> SyncResult:
        segments = diff_ids(self.ids, ids)
        if after_edit > 0:
            segments = widen_edits(segments, after_edit)
        upto = len(ids) - tail
        if stale_budget is not None:
            flags = self._projected_stale(segments)
            if flags.count(1) > stale_budget:
                # Re-encode from the point where the stale tokens before it fit the budget.
                seen = 0
                for i, flag in enumerate(flags):
                    seen += flag
                    if seen > stale_budget:
                        upto = min(upto, i)
                        break
        return self._rebuild(ids, encode, segments, upto, rot)

    def _projected_stale(self, segments: list[Segment]) -> bytearray:
        """The stale flags the cache would have if ``segments`` were applied as they are."""
        flags = bytearray()
        for seg in segments:
            if not seg.keep:
                flags += b"\x00" * len(seg)
            elif seg.new_start == 0:
                flags += self.stale[seg.old_start : seg.old_start + len(seg)]
            else:
                flags += b"\x01" * len(seg)
        return flags

    def _rebuild(
        self,
        ids: list[int],
        encode: Encoder,
        segments: list[Segment],
        upto: int,
        rot: Rerotator | None = None,
    ) -> SyncResult:
        """Rebuild the cache as ``segments`` say; positions ``>= upto`` are encoded.

        The leading kept run with no shift stays in place; everything after it is
        appended segment by segment (kept runs copied out of the old cache before it is
        cut, re-rotated by their delta; the rest encoded). ``self.ids`` always describes
        what the cache holds, so an exception (cancellation) leaves it consistent.
        """
        # Fresh logits for the last position need at least that token encoded.
        segments = force_encode_tail(segments, min(upto, len(ids) - 1), len(ids))
        lead = 0
        if self.kv is not None and segments[0].keep and segments[0].delta == 0:
            lead = len(segments[0])
            segments = segments[1:]
        old_ids, old_stale = self.ids, self.stale
        # Kept runs after the lead, taken (re-rotated, or copied) before the cache is cut
        # to the lead: a cache that appends in place (cache/growing.py) writes the new
        # positions over the old ones they come from.
        kept: dict[int, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        if self.kv is None or (lead == 0 and not any(s.keep for s in segments)):
            self.kv = self._make_cache()
        else:
            layers = [(layer.keys, layer.values) for layer in self.kv.layers]
            for i, seg in enumerate(segments):
                if seg.keep:
                    a, b = seg.old_start, seg.old_start + len(seg)
                    if seg.delta and rot is not None:
                        keys = [rot.rotate(k[..., a:b, :], seg.delta) for k, _ in layers]
                    else:
                        keys = [k[..., a:b, :].clone() for k, _ in layers]
                    kept[i] = (keys, [v[..., a:b, :].clone() for _, v in layers])
            del layers
            truncate(self.kv, lead)
        self.ids = old_ids[:lead]
        self.stale = bytearray(old_stale[:lead])
        self.last_logits = None
        logits = None
        reused, encoded, shifted = lead, 0, 0
        for i, seg in enumerate(segments):
            if seg.keep:
                a, b = seg.old_start, seg.old_start + len(seg)
                keys, values = kept.pop(i)
                if seg.delta and rot is not None:
                    shifted += len(seg)
                _append(self.kv, keys, values)
                reused += len(seg)
                if seg.new_start == 0:
                    # Only tokens before it were dropped (the window slid): a pure
                    # re-rotation, not counted as stale (an approximation; docs/cache.md).
                    self.stale += old_stale[a:b]
                else:
                    self.stale += b"\x01" * len(seg)
            else:
                logits = encode(ids[seg.new_start : seg.new_end], self.kv, seg.new_start)
                encoded += len(seg)
                self.stale += b"\x00" * len(seg)
            self.ids = ids[: seg.new_end]
        assert logits is not None and self.ids == ids
        self.last_logits = logits
        return SyncResult(reused, encoded, 0.0, shifted=shifted)

    def refresh(self, encode: Encoder) -> int:
        """Re-encode every token from the first stale one, into a new cache.

        The new cache replaces the old one only when complete: if ``encode`` raises
        (cancellation), the old cache stays as it was. Returns the tokens re-encoded.
        """
        first = self.stale.find(1)
        if first < 0 or self.kv is None:
            return 0
        fresh = self._make_cache()
        if first:
            _append(
                fresh,
                [layer.keys[..., :first, :] for layer in self.kv.layers],
                [layer.values[..., :first, :] for layer in self.kv.layers],
            )
        logits = encode(self.ids[first:], fresh, first)
        self.kv = fresh
        self.last_logits = logits
        self.stale = bytearray(len(self.ids))
        return len(self.ids) - first

    def refresh_some(self, encode: Encoder, limit: int) -> int:
        """Re-encode up to ``limit`` tokens from the first stale one, in place.

        A step of a refresh that can stop anywhere and go on later: the tokens before
        the first stale one are exact, so re-encoding the next ``limit`` on top of them
        makes those exact too. The tokens after them keep their keys and values and are
        stale from then on (fresh ones among them were computed over stale keys). With
        no room to rewrite in place (a cache whose layers are not
        :class:`~cache.growing.GrowingLayer`), refreshes everything (:meth:`refresh`).
        If ``encode`` raises (cancellation), the cache keeps its length and flags;
        positions it rewrote hold their new states, still flagged stale. Returns the
        tokens re-encoded.
        """
        first = self.stale.find(1)
        if first < 0 or self.kv is None:
            return 0
        layers = self.kv.layers
        if not all(isinstance(layer, GrowingLayer) for layer in layers):
            return self.refresh(encode)
        end, stop = len(self.ids), min(len(self.ids), first + max(1, limit))
        buffers = [layer.buffer_ptr() for layer in layers]
        truncate(self.kv, first)
        try:
            with torch.inference_mode():  # appends must land in the same buffers
                logits = encode(self.ids[first:stop], self.kv, first)
        finally:
            moved = [layer.buffer_ptr() for layer in layers] != buffers
            if moved:
                self.drop()  # what followed the rewrite is gone: encode from scratch
            else:
                for layer in layers:
                    layer.restore_length(end)
        if moved:
            raise RuntimeError("refresh_some: a layer's buffer moved during the rewrite")
        self.stale[first:stop] = bytes(stop - first)
        self.stale[stop:end] = b"\x01" * (end - stop)
        if stop == end:
            self.last_logits = logits
        return stop - first

    @contextmanager
    def session(self) -> Iterator[Any]:
        """Decode on top of the prompt; on exit, crop generated tokens back out."""
        n = len(self.ids)
        try:
            yield self.kv
        finally:
            if self.kv is not None:
                truncate(self.kv, n)

    def snapshot(self) -> tuple[Any, ...]:
        """A copy of the cache's state (benchmarks time one request from it repeatedly)."""
        logits = None if self.last_logits is None else self.last_logits.clone()
        return (list(self.ids), self._copy(self.kv), logits, bytearray(self.stale), self.strategy)

    def restore(self, state: tuple[Any, ...]) -> None:
        """Put back a :meth:`snapshot` (copied again: it can be reused)."""
        ids, kv, logits, stale, strategy = state
        self.kv = self._copy(kv)
        self.ids, self.stale, self.strategy = list(ids), bytearray(stale), strategy
        self.last_logits = None if logits is None else logits.clone()

    def _copy(self, kv: Any) -> Any:
        """A new cache holding copies of ``kv``'s keys and values (None stays None)."""
        if kv is None:
            return None
        out = self._make_cache()
        if kv.layers and kv.get_seq_length():
            _append(out, [x.keys for x in kv.layers], [x.values for x in kv.layers])
        return out

    def trim(self) -> None:
        """Drop anything held past :attr:`ids`.

        Tokens fed after the prompt (a draft verified with the prompt's last forward)
        when decoding never started or was cut short.
        """
        if self.kv is not None:
            truncate(self.kv, len(self.ids))

    def drop(self) -> None:
        """Free the keys and values."""
        self.ids, self.kv, self.last_logits, self.stale = [], None, None, bytearray()


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


class CacheStore:
    """Prompt caches by document key, least recently used evicted past the budgets.

    Budgets: at most ``max_entries`` documents and ``max_bytes`` bytes of keys/values
    (``0``: no byte limit). The most recently used cache is never evicted. Safe to read
    (:meth:`items`, :meth:`nbytes`, :meth:`peek`) from another thread while one thread
    changes it.
    """

    def __init__(
        self, make_cache: Callable[[], Any], max_entries: int = 8, max_bytes: int = 0
    ) -> None:
        self._make_cache = make_cache
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.evictions = 0
        self._entries: OrderedDict[str, PromptCache] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: str) -> PromptCache:
        """The cache for ``key`` (created empty when new), marked most recently used."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = PromptCache(self._make_cache)
                self._entries[key] = entry
            self._entries.move_to_end(key)
            self.enforce()
            return entry

    def enforce(self) -> None:
        """Evict least recently used caches until both budgets hold."""
        with self._lock:
            while len(self._entries) > max(1, self.max_entries) or (
                self.max_bytes and len(self._entries) > 1 and self.nbytes() > self.max_bytes
            ):
                _, old = self._entries.popitem(last=False)
                old.drop()
                self.evictions += 1

    def peek(self, key: str) -> PromptCache | None:
        """The cache for ``key`` if there is one, without touching LRU order."""
        return self._entries.get(key)

    def discard(self, key: str) -> None:
        """Free the cache of a closed document."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                entry.drop()

    def clear(self) -> None:
        """Free every cache (e.g. when the model changes)."""
        with self._lock:
            for entry in self._entries.values():
                entry.drop()
            self._entries.clear()

    def items(self) -> list[tuple[str, PromptCache]]:
        """Snapshot of (key, cache) pairs."""
        with self._lock:
            return list(self._entries.items())

    def nbytes(self) -> int:
        """Bytes held by all caches."""
        with self._lock:
            return sum(e.nbytes() for e in self._entries.values())
