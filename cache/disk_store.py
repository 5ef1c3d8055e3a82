"""Prompt caches on disk: one entry per model and document, written atomically.

An entry is two files in the store's directory, named by a hash of the model's
fingerprint and the document's key: ``<name>.safetensors`` (every layer's keys and
values, ``k.<i>`` / ``v.<i>``, as the cache holds them) and ``<name>.json`` (the manifest:
the fingerprint, the document key, the text's hash, the prompt's token ids, which of them
are stale, the tensor file's SHA-256 and size). Each file is written to a temporary name,
synced and renamed into place, the tensors before the manifest, so a reader sees a whole
entry or none; a load checks the manifest's fingerprint and the tensors' checksum and
treats anything else as a miss. The directory is private (0700, files 0600). Past
``cap_bytes`` the least recently used entries go (a load counts as a use).

Nothing here raises on bad files or a failing disk: the entry is discarded, the problem
counted in :attr:`DiskStore.errors` and logged once per kind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .prompt_cache import Exported

log = logging.getLogger(__name__)

FORMAT = 1
"""The manifest's format version (an entry of another is a miss)."""


NAME_DIGITS = 40
"""An entry's file name (without suffix): the first 40 hex digits of a SHA-256."""
_ENTRY_NAME = re.compile(rf"[0-9a-f]{{{NAME_DIGITS}}}")


def _go_on() -> None:
    """The default ``check`` of :meth:`DiskStore.load`: never stops it."""


@dataclass(frozen=True)
class Fingerprint:
    """What makes saved keys and values valid for a model: same weights, same numbers."""

    weights: str
    """A hash of the weights (their files' contents or the model's identity)."""
    dtype: str
    """The keys' and values' dtype."""
    rope: str
    """The rotary configuration (theta, scaling), as text."""
    transformers: str
    """transformers' major version (its cache layout)."""
    quantize: str = "none"
    """The low-bit kernel the linear layers ran (another gives other numbers)."""
    device: str = "cpu"
    """The kind of device that computed them (kernels differ in their last bits)."""

    def key(self) -> str:
        """A stable hash of all of it."""
        return _sha(json.dumps(asdict(self), sort_keys=True).encode())


@dataclass
class Saved:
    """A loaded entry."""

    key: str
    """The document's key (its URI)."""
    text_sha256: str
    """The hash of the document text the cache was made for."""
    cached: Exported
    """The prompt's token ids, stale flags and per-layer keys and values."""
    start: int | None = None
    """Where the prompt's window began in that text (kept so the next prompt matches)."""


@dataclass
class DiskStore:
    """The entries under ``root``, at most ``cap_bytes`` of them (0: store nothing)."""

    root: Path
    cap_bytes: int
    errors: int = 0
    """Entries discarded or saves that failed (bad files, a failing disk)."""
    _logged: set[str] = field(default_factory=set)

    def save(self, fp: Fingerprint, saved: Saved) -> bool:
        """Write an entry (replacing the document's last one); False if it could not be."""
        if self.cap_bytes <= 0:
            return False
        name = self._name(fp, saved.key)
        tensors = {}
        for i, (k, v) in enumerate(saved.cached.layers):
            tensors[f"k.{i}"] = k.detach().to("cpu").contiguous()
            tensors[f"v.{i}"] = v.detach().to("cpu").contiguous()
        try:
            self._directory()
            blob = _safetensors_bytes(tensors)
            _write_atomically(self.root / f"{name}.safetensors", blob)
            manifest = {
                "format": FORMAT,
                "fingerprint": asdict(fp),
                "key": saved.key,
                "textSha256": saved.text_sha256,
                "ids": saved.cached.ids,
                "stale": [i for i, s in enumerate(saved.cached.stale) if s],
                "start": saved.start,
                "layers": len(saved.cached.layers),
                "sha256": _sha(blob),
                "bytes": len(blob),
            }
            _write_atomically(self.root / f"{name}.json", json.dumps(manifest).encode())
        except OSError as exc:
            self._problem("save", f"could not save a cache for {saved.key}: {exc}")
            return False
        self._evict(keep=name)
        return True

    def load(self, fp: Fingerprint, key: str, check: Callable[[], None] = _go_on) -> Saved | None:
        """The document's entry for this model, checked (None: none, or a bad one).

        ``check`` runs between the steps (read, checksum, parse) and may raise to stop
        the load (a cancelled one leaves the entry as it was).
        """
        if self.cap_bytes <= 0:
            return None
        name = self._name(fp, key)
        manifest_path, tensor_path = self.root / f"{name}.json", self.root / f"{name}.safetensors"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            check()
            blob = tensor_path.read_bytes()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._discard(name, f"unreadable cache entry for {key}: {exc}")
            return None
        check()
        why = _mismatch(manifest, fp, key, blob)
        if why:
            self._discard(name, f"cache entry for {key} discarded: {why}")
            return None
        check()
        try:
            tensors = _safetensors_load(blob)
            layers = [(tensors[f"k.{i}"], tensors[f"v.{i}"]) for i in range(manifest["layers"])]
        except (KeyError, ValueError, RuntimeError) as exc:
            self._discard(name, f"cache entry for {key} discarded: bad tensors ({exc})")
            return None
        stale = bytearray(len(manifest["ids"]))
        for i in manifest["stale"]:
            stale[i] = 1
        with contextlib.suppress(OSError):
            os.utime(manifest_path)  # a use, for the eviction order
        cached = Exported(list(manifest["ids"]), stale, layers)
        start = manifest.get("start")
        return Saved(key, manifest["textSha256"], cached, start if isinstance(start, int) else None)

    def remove(self, fp: Fingerprint, key: str) -> None:
        """Forget the document's entry for this model (if any)."""
        self._delete(self._name(fp, key))

    def nbytes(self) -> int:
        """Bytes the entries take on disk."""
        return sum(size for _, size, _ in self._entries())

    ##### internals #####

    def _name(self, fp: Fingerprint, key: str) -> str:
        return _sha(f"{fp.key()}\n{key}".encode())[:NAME_DIGITS]

    def _directory(self) -> None:
        """Create the store's directory, private (0700); one that exists keeps its mode."""
        if not self.root.is_dir():
            self.root.mkdir(parents=True, mode=0o700)
            os.chmod(self.root, 0o700)  # mkdir's mode passes through the umask

    def _entries(self) -> list[tuple[str, int, float]]:
        """(name, bytes, last use) of every entry, least recently used first."""
        out = []
        with contextlib.suppress(OSError):
            for manifest in self.root.glob("*.json"):
                name = manifest.stem
                if not _ENTRY_NAME.fullmatch(name):
                    continue  # not ours: a store never touches other files
                try:
                    used = manifest.stat().st_mtime
                    size = manifest.stat().st_size
                    tensor = self.root / f"{name}.safetensors"
                    size += tensor.stat().st_size if tensor.exists() else 0
                except OSError:
                    continue  # deleted between listing and reading
                out.append((name, size, used))
        return sorted(out, key=lambda entry: entry[2])

    def _evict(self, keep: str) -> None:
        """Drop the least recently used entries until the store fits its cap."""
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        for name, size, _ in entries:
            if total <= self.cap_bytes:
                break
            if name != keep:
                self._delete(name)
                total -= size

    def _delete(self, name: str) -> None:
        for suffix in (".json", ".safetensors"):
            with contextlib.suppress(OSError):
                (self.root / f"{name}{suffix}").unlink()

    def _discard(self, name: str, message: str) -> None:
        self._delete(name)
        self._problem("discard", message)

    def _problem(self, kind: str, message: str) -> None:
        self.errors += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning("%s (further ones are counted, not logged)", message)


def _mismatch(manifest: Any, fp: Fingerprint, key: str, blob: bytes) -> str:
    """Why a manifest and its tensors do not make a valid entry ("" if they do)."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return "another format"
    if manifest.get("fingerprint") != asdict(fp):
        return "made by another model or version"
    if manifest.get("key") != key:
        return "made for another document"
    if manifest.get("bytes") != len(blob) or manifest.get("sha256") != _sha(blob):
        return "checksum mismatch (truncated or corrupted)"
    ids, stale = manifest.get("ids"), manifest.get("stale")
    if not isinstance(ids, list) or not isinstance(stale, list):
        return "no token ids"
    if any(not isinstance(i, int) or not 0 <= i < len(ids) for i in stale):
        return "bad stale flags"
    return ""


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, sync it, rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors)


def _safetensors_load(blob: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(blob)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
