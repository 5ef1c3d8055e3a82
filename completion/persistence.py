"""Prompt caches that outlive the process: what to save, when it is unchanged, how a load counts.

:class:`Persistence` joins an :class:`~completion.engine.Engine`'s documents to a
:class:`~cache.DiskStore` under the model's :func:`fingerprint`. Saving takes the
document's state from the engine (:meth:`Engine.saved_state`, a copy under the
document's own lock, or :meth:`Engine.release` when it closes) and writes it; an entry
identical to the one written last (same text, ids and stale flags) is not written
again. Loading reads and checks an entry and says whether the text it was made for is
the document's text now (a hit) or another (a repair: the next completion aligns and
repairs it as any edit, :meth:`~cache.PromptCache.sync`).

Nothing here runs on the model worker except :meth:`Engine.adopt_saved`; the server
runs saves and loads on its own disk thread.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cache import DiskStore, Fingerprint, Saved

from .models import LoadedModel

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".json")
"""Files of a model directory whose identity goes into the fingerprint."""

Loaded = Literal["hit", "repair", "miss"]
"""How a load went: the same text, a changed text, or no usable entry."""


def text_hash(text: str) -> str:
    """The hash a saved entry records for the text its cache was made for."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def fingerprint(loaded: LoadedModel) -> Fingerprint:
    """What makes a saved cache valid for this model: weights, numbers, rotation, library."""
    import transformers

    config = loaded.model.config
    rope = {
        key: _plain(getattr(config, key, None))
        for key in ("rope_theta", "rope_scaling", "rope_parameters", "head_dim")
    }
    return Fingerprint(
        weights=weights_identity(loaded.path, config),
        dtype=str(loaded.dtype).removeprefix("torch."),
        rope=json.dumps(rope, sort_keys=True, default=str),
        transformers=transformers.__version__.split(".")[0],
        quantize=loaded.quantize,
        device=loaded.device.type,
    )


def weights_identity(path: str, config: Any) -> str:
    """A hash naming the weights: their files' names, sizes and modification times.

    A directory's weight and config files (a converted model is rewritten, and so
    renamed in time, when its source changes); a hub id with its commit where the
    config knows it. Cheap: no weight is read.
    """
    root = Path(path)
    parts: list[str] = []
    if root.is_dir():
        for f in sorted(root.iterdir()):
            if f.is_file() and f.suffix in WEIGHT_SUFFIXES:
                st = f.stat()
                parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
        parts.insert(0, str(root.resolve()))
    else:
        parts = [path, str(getattr(config, "_commit_hash", None) or "")]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """A config value as JSON can hold it."""
    if value is None or isinstance(value, (int, float, str, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


@dataclass
class DiskCounters:
    """Loads and their outcomes (``pie/stats``)."""

    diskHits: int = 0
    """Saved caches loaded for the text they were made for."""
    diskRepairs: int = 0
    """Saved caches loaded for a text that changed since (repaired as edits)."""
    diskMisses: int = 0
    """Documents opened with no usable saved cache."""
    diskSaves: int = 0
    """Entries written."""
    diskSaveMs: float = 0.0
    """Time spent writing them (on the disk thread)."""
    diskLoadMs: float = 0.0
    """Time from a document's open to its saved cache adopted: read, check, copy in."""


@dataclass
class Persistence:
    """One model's saved prompt caches: save, load, forget, counted."""

    store: DiskStore
    fp: Fingerprint
    counters: DiskCounters = field(default_factory=DiskCounters)
    _written: dict[str, str] = field(default_factory=dict)
    """Per document: the signature of the entry written last (skip an identical one)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def enabled(self) -> bool:
        """Whether anything is saved (``cache.diskMB`` > 0)."""
        return self.store.cap_bytes > 0

    def save(self, saved: Saved) -> bool:
        """Write ``saved`` unless the same state was written last; True if written."""
        if not self.enabled:
            return False
        mark = _signature(saved)
        with self._lock:
            if self._written.get(saved.key) == mark:
                return False
        t0 = time.perf_counter()
        if not self.store.save(self.fp, saved):
            return False
        with self._lock:
            self._written[saved.key] = mark
            self.counters.diskSaves += 1
            self.counters.diskSaveMs += (time.perf_counter() - t0) * 1000
        return True

    def load(
        self, key: str, text: str, check: Callable[[], None] = lambda: None
    ) -> tuple[Loaded, Saved | None]:
        """The saved cache for ``key`` and how it relates to ``text`` (counted).

        ``check`` may raise to stop the load; a stopped load counts nothing.
        """
        saved = self.store.load(self.fp, key, check) if self.enabled else None
        if saved is None:
            self.counters.diskMisses += 1
            return "miss", None
        with self._lock:
            self._written[key] = _signature(saved)  # it is on disk as it is
        if saved.text_sha256 == text_hash(text):
            self.counters.diskHits += 1
            return "hit", saved
        self.counters.diskRepairs += 1
        return "repair", saved

    def forget(self, key: str) -> None:
        """Drop the document's entry (its file was deleted)."""
        with self._lock:
            self._written.pop(key, None)
        self.store.remove(self.fp, key)

    def stats(self) -> dict[str, Any]:
        """The counters, the bytes on disk and the errors, for ``pie/stats``."""
        return {
            **vars(self.counters),
            "diskSaveMs": round(self.counters.diskSaveMs, 1),
            "diskLoadMs": round(self.counters.diskLoadMs, 1),
            "diskCacheBytes": self.store.nbytes() if self.enabled else 0,
            "diskErrors": self.store.errors,
        }


def _signature(saved: Saved) -> str:
    """What identifies an entry's contents: its text, ids and stale flags."""
    digest = hashlib.sha256(saved.text_sha256.encode())
    digest.update(json.dumps(saved.cached.ids).encode())
    digest.update(bytes(saved.cached.stale))
    return digest.hexdigest()
