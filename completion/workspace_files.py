"""The workspace's source files: walked lazily, within bounds, ignoring what is not source.

:class:`WorkspaceFiles` knows the files under the workspace folders that a completion
may draw context from. It never walks the tree at once: :meth:`WorkspaceFiles.walk_some`
advances a depth-first scan by a bounded number of directory entries, so the server can
run it in slices when idle; the scan stops for good at ``max_files``. What it skips:

- ignored directories (``.git`` and other version-control metadata, virtual
  environments, ``node_modules``, caches and build output, see :data:`IGNORED_DIRS`),
  and any directory holding a ``pyvenv.cfg``;
- paths matched by a ``.gitignore`` (the root's and those of the directories walked,
  each relative to its own directory, with git's pattern rules);
- symbolic links (so a link loop cannot trap the scan), files over ``max_file_bytes``
  (never read) and files whose suffix is not in :data:`SOURCE_SUFFIXES`.

Changes reported by the editor or a file watcher go through :meth:`changed` and
:meth:`deleted`: a changed file is marked (its saved cache will be repaired at its next
open, its definitions re-read when next asked for), a deleted one forgotten. Events
for ignored or unknown paths are answered by :meth:`watched` without reading anything.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

log = logging.getLogger(__name__)

IGNORED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".venv",
        "venv",
        ".env",
        "env",
        "node_modules",
        "__pycache__",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        "build",
        "dist",
        "target",
        "out",
        ".idea",
        ".vscode",
    }
)
"""Directory names never entered."""
SOURCE_SUFFIXES = frozenset({".py", ".pyi"})
"""Files indexed for cross-file context."""
MAX_FILES = 20_000
"""Default bound on files known per workspace."""
MAX_FILE_BYTES = 1 << 20
"""Default bound on one file's size: larger files are skipped, never read."""


@dataclass
class FileState:
    """What is known of one file."""

    size: int
    mtime_ns: int
    changed: bool = False
    """Changed on disk since it was listed (a saved cache of it is out of date)."""


@dataclass
class WorkspaceCounts:
    """Counters for ``pie/stats``."""

    workspaceFiles: int = 0
    """Source files known."""
    workspaceChanged: int = 0
    """Source files marked changed on disk (or created) since they were listed."""
    workspaceDeleted: int = 0
    """Deletions of known files."""
    workspaceIgnored: int = 0
    """Change events for ignored paths (nothing read)."""
    workspaceSkipped: int = 0
    """Files skipped while walking: too large, unreadable, or gone."""


@dataclass
class _Dir:
    path: Path
    rules: list[tuple[Path, pathspec.PathSpec]]


@dataclass
class WorkspaceFiles:
    """The source files under ``roots`` (absolute paths)."""

    roots: list[Path]
    max_files: int = MAX_FILES
    max_file_bytes: int = MAX_FILE_BYTES
    files: dict[Path, FileState] = field(default_factory=dict)
    counts: WorkspaceCounts = field(default_factory=WorkspaceCounts)
    _pending: list[_Dir] = field(default_factory=list)
    _started: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def walked(self) -> bool:
        """Whether the scan is over (every directory seen, or ``max_files`` reached)."""
        return self._started and (not self._pending or len(self.files) >= self.max_files)

    def walk_some(self, entries: int = 500) -> int:
        """Scan at most ``entries`` directory entries further; returns the files added."""
        with self._lock:
            if not self._started:
                self._started = True
                self._pending = [_Dir(r, []) for r in reversed(self.roots) if r.is_dir()]
            added = 0
            while self._pending and entries > 0 and len(self.files) < self.max_files:
                here = self._pending.pop()
                rules = here.rules + _gitignore(here.path)
                for entry in _listing(here.path):
                    entries -= 1
                    added += self._visit(entry, rules)
                    if len(self.files) >= self.max_files:
                        break
            self.counts.workspaceFiles = len(self.files)
            return added

    def _visit(self, entry: os.DirEntry[str], rules: list[tuple[Path, pathspec.PathSpec]]) -> int:
        path = Path(entry.path)
        try:
            if entry.is_symlink():
                return 0
            is_dir = entry.is_dir(follow_symlinks=False)
            if _ignored(path, is_dir, rules):
                return 0
            if is_dir:
                if not (path / "pyvenv.cfg").exists():
                    self._pending.append(_Dir(path, rules))
                return 0
            if path.suffix not in SOURCE_SUFFIXES:
                return 0
            st = entry.stat(follow_symlinks=False)
        except OSError:
            self.counts.workspaceSkipped += 1  # gone between listing and reading
            return 0
        if st.st_size > self.max_file_bytes:
            self.counts.workspaceSkipped += 1
            return 0
        self.files[path] = FileState(st.st_size, st.st_mtime_ns)
        return 1

    def watched(self, path: Path) -> bool:
        """Whether ``path`` is a source file this workspace keeps (no file is read)."""
        root = next((r for r in self.roots if path.is_relative_to(r)), None)
        if root is None or path.suffix not in SOURCE_SUFFIXES:
            return False
        parts = path.relative_to(root).parts
        if any(p in IGNORED_DIRS for p in parts[:-1]):
            return False
        rules: list[tuple[Path, pathspec.PathSpec]] = []
        here = root
        for part in parts[:-1]:
            rules += _gitignore(here)
            here = here / part
        rules += _gitignore(here)
        return not _ignored(path, False, rules)

    def watch_points(self, limit: int = 64) -> list[tuple[Path, bool]]:
        """Where a file watcher should look: (directory, recursive) pairs.

        Each root itself (not recursively) and each of its subdirectories that is not
        ignored (recursively): the usual bulk of a tree (``.git``, virtual
        environments, ``node_modules`` at the top) is never watched. At most ``limit``.
        """
        points: list[tuple[Path, bool]] = []
        for root in self.roots:
            points.append((root, False))
            rules = _gitignore(root)
            for entry in reversed(_listing(root)):
                path = Path(entry.path)
                try:
                    if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                        continue
                except OSError:
                    continue
                if not _ignored(path, True, rules) and not (path / "pyvenv.cfg").exists():
                    points.append((path, True))
        return points[:limit]

    def changed(self, path: Path) -> bool:
        """A file was created or changed on disk; False if it is ignored."""
        if not self.watched(path):
            self.counts.workspaceIgnored += 1
            return False
        with self._lock:
            state = self.files.get(path)
            if state is None:
                if len(self.files) >= self.max_files:
                    return False
                state = self.files[path] = FileState(0, 0)
            self.counts.workspaceChanged += not state.changed
            state.changed = True
            self.counts.workspaceFiles = len(self.files)
        return True

    def deleted(self, path: Path) -> bool:
        """A file was deleted; True if it was known."""
        with self._lock:
            known = self.files.pop(path, None) is not None
            if known:
                self.counts.workspaceDeleted += 1
            self.counts.workspaceFiles = len(self.files)
        return known

    def read(self, path: Path) -> str | None:
        """A known file's text (None: too large, unreadable, gone, or not UTF-8)."""
        try:
            if path.stat().st_size > self.max_file_bytes:
                return None
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            with self._lock:
                self.counts.workspaceSkipped += 1
            return None


def _listing(path: Path) -> list[os.DirEntry[str]]:
    """A directory's entries, sorted by name (an unreadable directory has none)."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name, reverse=True)
    except OSError:
        return []


def _gitignore(directory: Path) -> list[tuple[Path, pathspec.PathSpec]]:
    """The rules of ``directory/.gitignore`` (none if it has none)."""
    try:
        lines = (directory / ".gitignore").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [(directory, pathspec.GitIgnoreSpec.from_lines(lines))]


def _ignored(path: Path, is_dir: bool, rules: list[tuple[Path, pathspec.PathSpec]]) -> bool:
    """Whether a path is ignored by name or by a ``.gitignore`` above it."""
    if is_dir and path.name in IGNORED_DIRS:
        return True
    for base, spec in rules:
        rel = path.relative_to(base).as_posix() + ("/" if is_dir else "")
        if spec.match_file(rel):
            return True
    return False
