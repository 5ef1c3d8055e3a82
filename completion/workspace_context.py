"""Cross-file context: what a file uses from other workspace files, as short stubs.

For a Python document, :func:`imports` lists its import statements (tree-sitter), each
is resolved to a file of the workspace (:func:`module_file`: absolute imports under a
workspace folder or its ``src/``, relative ones from the document's directory), and
that file's top-level definitions (:func:`definitions`) give the stubs: a function's
signature and the first line of its docstring, a class's header, docstring line and
method signatures. :class:`ContextIndex` ranks the imported names by how often the
document uses them and keeps the most used within a character budget; it caches each
file's definitions by modification time, so a file changed on disk is read again.

The stubs go into the prompt ahead of the document's own text
(:func:`completion.fim.build_prompt`): Qwen2.5-Coder's repository format where the
tokenizer has it, a commented header elsewhere. Their order depends only on what the
document imports and uses, not on the cursor, so the prompt's first tokens stay the
same while the user types and the cache keeps them.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fim import PromptFormat, Tokenizer, context_header
from .syntax import make_parser
from .workspace_files import MAX_FILE_BYTES

MAX_METHODS = 8
"""Methods listed in a class's stub."""
DOC_CHARS = 100
"""The longest docstring line kept in a stub."""
CACHED_FILES = 256
"""Files whose definitions :class:`ContextIndex` keeps."""
RECENT_FILES = 3
"""Recently used open documents whose definitions a document may quote."""
CHARS_PER_TOKEN = 3
"""Characters of stubs gathered per token of the header's budget (stubs average 3-4;
the header is then cut to the budget in tokens)."""
_IMPORT_LINE = re.compile(r"^[ \t]*(?:from[ \t]+\S+[ \t]+import|import)[ \t].*$", re.MULTILINE)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Imported:
    """One imported module and the names taken from it."""

    module: str
    """Dotted module path as written (``pkg.mod``; ``""`` for ``from . import x``)."""
    level: int
    """Leading dots of a relative import (0: absolute)."""
    names: tuple[str, ...]
    """``from m import a, b``: ``("a", "b")``; ``import m``: empty."""
    alias: str
    """What the document calls the module (``import m as alias``; ``""`` for ``from``)."""


@dataclass(frozen=True)
class Source:
    """A workspace file a document imports from."""

    target: Path
    alias: str
    """What the document calls it when it uses it as ``alias.name`` ("": it does not)."""
    names: tuple[str, ...]
    """The names it imports from it (``from m import a, b``)."""


@dataclass(frozen=True)
class Snippet:
    """One file's stubs for the prompt."""

    path: str
    """The file's path relative to its workspace folder (``/`` separated)."""
    text: str
    source: Path
    """The file itself."""
    rank: int = 0
    """Lower is more wanted: the first snippets to go when the header is too long are
    those of highest rank."""


def imports(text: str) -> list[Imported]:
    """The document's import statements, in order (any nesting level)."""
    parser = make_parser("python")
    if parser is None:
        return []
    tree = parser.parse(text.encode("utf-8", "surrogatepass"))
    out: list[Imported] = []
    for node in _walk(tree.root_node):
        if node.type == "import_statement":
            for name in node.named_children:
                dotted, alias = _dotted_alias(name)
                if dotted:
                    out.append(Imported(dotted, 0, (), alias or dotted))
        elif node.type == "import_from_statement":
            module = node.child_by_field_name("module_name")
            if module is None:
                continue
            level, dotted = _relative(_text(module))
            names = tuple(
                (_dotted_alias(n)[0] or "").split(".")[-1]
                for n in node.children_by_field_name("name")
            )
            out.append(Imported(dotted, level, tuple(n for n in names if n), ""))
    return out


def definitions(text: str) -> dict[str, str]:
    """Top-level functions and classes of a Python file: name -> stub text."""
    parser = make_parser("python")
    if parser is None:
        return {}
    source = text.encode("utf-8", "surrogatepass")
    tree = parser.parse(source)
    out: dict[str, str] = {}
    for node in tree.root_node.named_children:
        inner = (
            node.child_by_field_name("definition") if node.type == "decorated_definition" else node
        )
        if inner is None or inner.type not in ("function_definition", "class_definition"):
            continue
        name = inner.child_by_field_name("name")
        if name is None:
            continue
        out[_text(name)] = _stub(inner, source, "")
    return out


def _stub(node: Any, source: bytes, indent: str) -> str:
    """A definition's header, its docstring's first line and ``...`` (a class: methods)."""
    body = node.child_by_field_name("body")
    head = source[node.start_byte : body.start_byte if body is not None else node.end_byte]
    header = " ".join(head.decode("utf-8", "replace").split()).rstrip()
    lines = [indent + header]
    inner = indent + "    "
    doc = _docstring(body)
    if doc:
        lines.append(f'{inner}"""{doc}"""')
    if node.type == "class_definition" and body is not None:
        methods = [
            c.child_by_field_name("definition") if c.type == "decorated_definition" else c
            for c in body.named_children
        ]
        methods = [m for m in methods if m is not None and m.type == "function_definition"]
        for method in methods[:MAX_METHODS]:
            lines.append(_stub(method, source, inner).split("\n")[0] + " ...")
        if not methods:
            lines.append(inner + "...")
    else:
        lines.append(inner + "...")
    return "\n".join(lines)


def _docstring(body: Any) -> str:
    if body is None or not body.named_children:
        return ""
    first = body.named_children[0]
    if first.type != "expression_statement" or not first.named_children:
        return ""
    string = first.named_children[0]
    if string.type != "string":
        return ""
    parts = [_text(c) for c in string.named_children if c.type == "string_content"]
    content = "".join(parts)
    line = next((ln.strip() for ln in content.split("\n") if ln.strip()), "")
    return line[:DOC_CHARS].replace('"""', "'''")


def module_file(imp: Imported, current: Path | None, roots: list[Path]) -> Path | None:
    """The workspace file an import names (None: not in the workspace)."""
    parts = [p for p in imp.module.split(".") if p]
    if imp.level:
        if current is None:
            return None
        base = current.parent
        for _ in range(imp.level - 1):
            base = base.parent
        bases = [base]
    else:
        bases = [b for r in roots for b in (r, r / "src")]
    for base in bases:
        target = base.joinpath(*parts) if parts else base
        for candidate in (target.with_suffix(".py"), target / "__init__.py"):
            if parts and candidate.is_file():
                return candidate
        if not parts and (target / "__init__.py").is_file():
            return target / "__init__.py"
    return None


class ContextIndex:
    """Workspace files' definitions (cached by modification time) and a document's stubs."""

    def __init__(self, read: Callable[[Path], str | None] | None = None) -> None:
        self._read = read or _read
        self._cache: dict[Path, tuple[int, dict[str, str]]] = {}
        self._lock = threading.Lock()

    def definitions_of(self, path: Path) -> dict[str, str]:
        """``path``'s definitions (read and parsed again when the file changed)."""
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return {}
        with self._lock:
            cached = self._cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        text = self._read(path)
        found = definitions(text) if text is not None else {}
        with self._lock:
            self._cache[path] = (mtime, found)
            while len(self._cache) > CACHED_FILES:
                self._cache.pop(next(iter(self._cache)))
        return found

    def snippets(
        self, text: str, path: Path | None, roots: list[Path], budget_chars: int
    ) -> list[Snippet]:
        """Stubs of what ``text`` (at ``path``) uses from other workspace files.

        Names ranked by how often the document uses them (ties: import order) are
        taken while they fit; a file's stubs stay in one snippet. The layout does not
        follow the ranks: files in import order, a file's stubs in its own order, so
        documents that import the same file quote it with the same text (the prompt
        caches share it, :meth:`~completion.engine.Engine._seed`). ``rank`` keeps the
        best rank of each file's names.
        """
        if budget_chars <= 0 or not roots:
            return []
        used = Counter(_WORD.findall(text))
        wanted: list[tuple[int, int, Path, str]] = []
        order: dict[Path, list[str]] = {}  # each file's definitions, in its order
        for position, source in enumerate(self.sources(text, path, roots)):
            defs = self.definitions_of(source.target)
            order.setdefault(source.target, list(defs.values()))
            for name in self.used(text, source, everything=True):
                wanted.append((-used[name], position, source.target, defs[name]))
        chosen: dict[Path, list[str]] = {}
        rank: dict[Path, int] = {}
        spent = 0
        for best, (_, _, target, stub) in enumerate(sorted(wanted, key=lambda w: w[:2])):
            if spent + len(stub) + 1 > budget_chars or stub in chosen.get(target, []):
                continue
            chosen.setdefault(target, []).append(stub)
            rank.setdefault(target, best)
            spent += len(stub) + 1
        return [
            Snippet(_relative_path(t, roots), "\n".join(sorted(s, key=order[t].index)), t, rank[t])
            for t, s in sorted(chosen.items(), key=lambda item: list(order).index(item[0]))
        ]

    def sources(self, text: str, path: Path | None, roots: list[Path]) -> Iterator[Source]:
        """Each workspace file the document imports from, and how it names what it uses.

        ``from m import a``: ``a`` from m's file, or, when m is a package and ``a`` its
        submodule, that submodule used as ``a.name``; ``import m as x``: m used as
        ``x.name``.
        """
        for imp in imports(text):
            target = module_file(imp, path, roots)
            if target is None or target == path:
                continue
            if not imp.names:
                yield Source(target, imp.alias, ())
                continue
            yield Source(target, "", imp.names)
            if target.name == "__init__.py":
                for name in imp.names:
                    sub = target.parent / f"{name}.py"
                    if sub.is_file() and sub != path:
                        yield Source(sub, name, ())

    def used(self, text: str, source: Source, everything: bool = False) -> list[str]:
        """The names of ``source``'s file that the document uses (defined there).

        ``everything``: for a module used as ``alias.name``, its other definitions too
        (after the used ones, in the file's order): the document may be about to use
        one (the cursor right after ``alias.``).
        """
        defs = self.definitions_of(source.target)
        if not source.alias:
            return [n for n in source.names if n in defs]
        named = _attributes(text, source.alias, defs)
        return named + [n for n in defs if n not in named] if everything else named


def _attributes(text: str, alias: str, defs: dict[str, str]) -> list[str]:
    """The names used as ``alias.name`` in ``text`` that the module defines."""
    if not alias:
        return []
    found = re.findall(rf"(?<![\w.]){re.escape(alias)}\.([A-Za-z_]\w*)", text)
    return [n for n in dict.fromkeys(found) if n in defs]


def _relative_path(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def _read(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _walk(node: Any) -> Iterator[Any]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.named_children))


def _text(node: Any) -> str:
    return node.text.decode("utf-8", "replace") if node.text is not None else ""


def _dotted_alias(node: Any) -> tuple[str, str]:
    """(``a.b``, ``alias``) of a ``dotted_name`` or ``aliased_import`` node."""
    if node.type == "aliased_import":
        name, alias = node.child_by_field_name("name"), node.child_by_field_name("alias")
        return (_text(name) if name else "", _text(alias) if alias else "")
    if node.type == "dotted_name":
        return _text(node), ""
    return "", ""


def _relative(module: str) -> tuple[int, str]:
    """Leading dots and the rest of a ``from`` module name."""
    stripped = module.lstrip(".")
    return len(module) - len(stripped), stripped


@dataclass(frozen=True)
class _Header:
    imports: tuple[str, ...]
    limit: int
    files: tuple[tuple[Path, int], ...]
    ids: list[int]


class CrossFile:
    """Each document's prompt header of other workspace files' definitions.

    A header is built again only when the document's import lines, the budget, one of
    the files it quotes (by modification time) or the stubs it quotes from recently
    used open documents changed: typing elsewhere in the document leaves it, and so
    the prompt's first tokens, as they were.
    """

    def __init__(self, tokenizer: Tokenizer, fmt: PromptFormat) -> None:
        self.tokenizer = tokenizer
        self.fmt = fmt
        self.roots: list[Path] = []
        self.index = ContextIndex()
        self._headers: dict[str, _Header] = {}
        self._texts: dict[str, dict[str, str]] = {}

    def header(
        self,
        key: str,
        text: str,
        path: str | None,
        share: float,
        budget: int,
        recent: tuple[tuple[str, str], ...] = (),
    ) -> list[int]:
        """Token ids of the header for document ``key`` (empty: none applies).

        ``recent``: other open documents, (path, text), most recently used first: a
        function or class one of the first :data:`RECENT_FILES` defines and this
        document uses, not imported (a file being written alongside), is quoted too.
        """
        if share <= 0 or not self.roots or path is None or not path.endswith((".py", ".pyi")):
            return []
        limit = int(budget * min(share, 0.75))
        current = Path(path).resolve()
        alongside = self._recent(text, current, recent)
        lines = (*_IMPORT_LINE.findall(text), *(stub for _, stub in alongside))
        cached = self._headers.get(key)
        if (
            cached is not None
            and (cached.imports, cached.limit) == (lines, limit)
            and all(_mtime(p) == m for p, m in cached.files)
        ):
            return cached.ids
        snippets = self.index.snippets(text, current, self.roots, limit * CHARS_PER_TOKEN)
        quoted = {s.source for s in snippets}
        snippets += [
            Snippet(_relative_path(p, self.roots), stub, p, len(snippets) + n)
            for n, (p, stub) in enumerate(alongside)
            if p not in quoted
        ]
        ids = self._fit(snippets, current, limit)
        files = tuple((s.source, _mtime(s.source)) for s in snippets)
        self._headers[key] = _Header(lines, limit, files, ids)
        return ids

    def _recent(
        self, text: str, current: Path, recent: tuple[tuple[str, str], ...]
    ) -> list[tuple[Path, str]]:
        """(file, stubs) of the recent documents' definitions ``text`` uses."""
        out = []
        for other_path, other_text in recent[:RECENT_FILES]:
            other = Path(other_path).resolve()
            if other == current or other.suffix not in (".py", ".pyi"):
                continue
            if not any(other.is_relative_to(r) for r in self.roots):
                continue
            defs = self._defs_of_text(other_text)
            used = [
                stub
                for name, stub in defs.items()
                if re.search(rf"(?<![\w.]){re.escape(name)}\b", text)
                and not re.search(
                    rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(name)}\b", text, re.M
                )
            ]
            if used:
                out.append((other, "\n".join(used)))
        return out

    def _defs_of_text(self, text: str) -> dict[str, str]:
        """Definitions of an open document's text (the last few texts cached)."""
        found = self._texts.get(text)
        if found is None:
            found = definitions(text)
            self._texts[text] = found
            while len(self._texts) > RECENT_FILES * 2:
                self._texts.pop(next(iter(self._texts)))
        return found

    def _fit(self, snippets: list[Snippet], current: Path, limit: int) -> list[int]:
        """The header's ids, its least wanted snippets dropped until it fits ``limit``."""
        root = next((r for r in self.roots if current.is_relative_to(r)), current.parent)
        name = _relative_path(current, self.roots)
        while snippets:
            ids = context_header(self.tokenizer, self.fmt, snippets, root.name, name)
            if len(ids) <= limit:
                return ids
            worst = max(snippets, key=lambda s: s.rank)
            snippets = [s for s in snippets if s is not worst]
        return []

    def forget(self, key: str) -> None:
        """Drop a closed document's header."""
        self._headers.pop(key, None)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1
