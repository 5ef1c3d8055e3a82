"""``pie-lsp bench crossfile``: completions at calls of functions defined in other files.

The workspace is the standard library (a real project the project did not write); the
documents are modules of its packages (``asyncio``, ``email``, ``concurrent.futures``,
``importlib``, ``logging``, ``unittest``, ``multiprocessing``, ``json``, ``http``). A
position is a call on one line of a function that the module imports from another file
of its package (``from .events import get_event_loop`` then ``get_event_loop(``, or
``from . import events`` then ``events.get_event_loop(``): the cursor goes where the
called name starts, the rest of the line is removed (what follows stays, for FIM).

Each position is completed twice by the same engine, each time from an empty cache:
with ``completion.workspaceTokens`` at its default (the imported definitions' stubs in
the prompt) and at 0. Printed per setting: the share whose suggestion names the right
function (it starts with ``name(``) and the share that equals the rest of the line
(whitespace normalised), with n; JSON in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .bench import report_header

PACKAGES = (
    "asyncio",
    "email",
    "concurrent/futures",
    "importlib",
    "logging",
    "unittest",
    "multiprocessing",
    "json",
    "http",
)


@dataclass(frozen=True)
class Site:
    """A call site: the document (the line's rest removed), the cursor, what was there."""

    path: str
    text: str
    cursor: int
    name: str
    expected: str
    unseen: bool = False
    """The name is nowhere else in the document, imports included: the model cannot
    copy it from the file (a ``module.name`` used for the first time)."""


@dataclass
class Outcome:
    """One site's suggestions with and without workspace context."""

    path: str
    name: str
    expected: str
    unseen: bool
    with_context: str
    without: str
    header_tokens: int
    with_ms: float
    """The first completion with context, from empty caches."""
    switch_ms: float
    """The same with the earlier sites' caches kept (a user switching documents)."""
    switch_taken: int
    """Prompt tokens that completion took from the other documents' caches."""
    switch_encoded: int
    switch_same: bool
    """Its suggestion is the one from empty caches."""


def find_sites(root: Path, rng: random.Random, n: int, packages: list[str]) -> list[Site]:
    """Up to ``n`` call sites of cross-file functions, spread over packages and modules.

    The packages (folders under ``root``) in turn, each time a site from the package's
    next module (at random within it).
    """
    from completion.workspace_context import ContextIndex

    index = ContextIndex()
    per_package: list[list[list[Site]]] = []
    for package in packages:
        modules = []
        for path in sorted((root / package).glob("*.py")):
            found = _sites(index, root, path, path.read_text(encoding="utf-8"))
            rng.shuffle(found)
            if found:
                modules.append(found)
        per_package.append(modules)
    sites: list[Site] = []
    while len(sites) < n and any(per_package):
        for modules in per_package:
            if modules and len(sites) < n:
                found = modules.pop(0)
                sites.append(found.pop())
                if found:
                    modules.append(found)
    return sites


def project_packages(root: Path) -> list[str]:
    """The folders of a project that hold Python files (``.`` for its top).

    What the workspace walk skips is skipped (virtual environments, caches, build
    output, VCS metadata, hidden folders).
    """
    from completion.workspace_files import IGNORED_DIRS

    found = {
        path.parent.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if not any(
            part in IGNORED_DIRS or part.startswith(".")
            for part in path.relative_to(root).parts[:-1]
        )
    }
    return sorted(found)


def _sites(index: Any, root: Path, path: Path, text: str) -> list[Site]:
    """The single-line calls in ``text`` of functions another workspace file defines."""
    written: dict[str, str] = {}  # what the code writes before "(" -> the function's name
    for source in index.sources(text, path, [root]):
        defs = index.definitions_of(source.target)
        for name in index.used(text, source):
            if defs[name].startswith(("def ", "async def ")):
                written[f"{source.alias}.{name}" if source.alias else name] = name
    sites: list[Site] = []
    offset = 0
    for line in text.split("\n"):
        if not line.lstrip().startswith(("#", "def ", "class ", "@", "import ", "from ")):
            for call, name in written.items():
                for m in re.finditer(rf"(?<![\w.]){re.escape(call)}\(", line):
                    at = m.start() + len(call) - len(name)  # where the name starts
                    rest = line[at:].rstrip()
                    if _balanced(rest) and len(rest) < 120:
                        doc = text[: offset + at] + text[offset + len(line) :]
                        rel = path.relative_to(root).as_posix()
                        unseen = not _named_elsewhere(doc, name)
                        sites.append(Site(rel, doc, offset + at, name, rest, unseen))
        offset += len(line) + 1
    return sites


def _named_elsewhere(text: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None


def _balanced(rest: str) -> bool:
    depth = 0
    for c in rest:
        depth += (c == "(") - (c == ")")
        if depth < 0:
            return False
    return depth == 0


def normalised(text: str) -> str:
    """Whitespace runs as one space, ends stripped."""
    return " ".join(text.split())


class Completed(NamedTuple):
    """One completion and what it cost."""

    result: Any
    ms: float
    snippet_tokens: int
    taken: int
    """Prompt tokens taken from other documents' caches."""


def run_site(engines: tuple[Any, Any], site: Site, root: Path, options: Any) -> Outcome:
    """One site's suggestions with and without the workspace context, and switching.

    The first engine forgets every document (empty caches); the second completes with
    context again and keeps the earlier sites' caches (a user switching documents).
    """
    from dataclasses import replace

    from completion.engine import CompletionRequest

    key = f"file://{root / site.path}"

    def complete(engine: Any, share: float) -> Completed:
        req = CompletionRequest(
            key,
            site.text,
            site.cursor,
            replace(options, workspace_tokens=share),
            language="python",
            path=str(root / site.path),
        )
        snippets, taken = engine.totals.workspaceSnippetTokens, engine.totals.workspaceChunkTokens
        t0 = time.perf_counter()
        result = engine.complete(req)
        ms = (time.perf_counter() - t0) * 1000
        t = engine.totals
        return Completed(
            result, ms, t.workspaceSnippetTokens - snippets, t.workspaceChunkTokens - taken
        )

    cold, switching = engines
    with_context = complete(cold, options.workspace_tokens)
    cold.forget(key)
    without = complete(cold, 0.0)
    cold.forget(key)
    switch = complete(switching, options.workspace_tokens)
    return Outcome(
        site.path,
        site.name,
        site.expected,
        site.unseen,
        with_context.result.text,
        without.result.text,
        with_context.snippet_tokens,
        round(with_context.ms, 1),
        round(switch.ms, 1),
        switch.taken,
        switch.result.encoded_tokens,
        switch.result.text == with_context.result.text,
    )


def summarise(rows: list[Outcome]) -> dict[str, Any]:
    """Name and exact-line hit counts with and without context."""

    def named(text: str, name: str) -> bool:
        return text.lstrip().startswith(f"{name}(")

    def exact(text: str, expected: str) -> bool:
        return normalised(text.split("\n", 1)[0]) == normalised(expected)

    unseen = [r for r in rows if r.unseen]
    return {
        "positions": len(rows),
        "unseen": {
            "positions": len(unseen),
            "withContextNameRight": sum(named(r.with_context, r.name) for r in unseen),
            "withoutNameRight": sum(named(r.without, r.name) for r in unseen),
        },
        "withContext": {
            "nameRight": sum(named(r.with_context, r.name) for r in rows),
            "exactLine": sum(exact(r.with_context, r.expected) for r in rows),
        },
        "without": {
            "nameRight": sum(named(r.without, r.name) for r in rows),
            "exactLine": sum(exact(r.without, r.expected) for r in rows),
        },
        "headerTokensMedian": _median([r.header_tokens for r in rows]),
        "switching": {
            "takenMedian": _median([r.switch_taken for r in rows]),
            "taken": sum(r.switch_taken for r in rows),
            "headerTokens": sum(r.header_tokens for r in rows),
            "encodedMedian": _median([r.switch_encoded for r in rows]),
            "msMedian": _median([r.switch_ms for r in rows]),
            "emptyCachesMsMedian": _median([r.with_ms for r in rows]),
            "sameSuggestion": sum(r.switch_same for r in rows),
        },
    }


def _median(values: list[Any]) -> Any:
    return sorted(values)[len(values) // 2] if values else 0


def run_crossfile(args: argparse.Namespace) -> int:
    """Run the benchmark for each ``--models``; returns an exit code."""
    from completion.engine import CompletionOptions, Engine
    from completion.models import load_model

    if args.workspace is None:
        root, packages = Path(sysconfig.get_paths()["stdlib"]).resolve(), list(PACKAGES)
    else:
        root = args.workspace.resolve()
        packages = project_packages(root)
    sites = find_sites(root, random.Random(args.seed), args.positions, packages)
    print(f"{len(sites)} call sites in {root}", file=sys.stderr)
    reports = []
    for model in args.models.split(","):
        loaded = load_model(model)
        engines = (Engine(loaded), Engine(loaded))
        for engine in engines:
            engine.set_workspace([str(root)])
        options = CompletionOptions(
            max_tokens=args.max_tokens, context_tokens=args.context, members=False
        )
        rows = []
        t0 = time.perf_counter()
        # In path order: the switching engine then sees a package's files one after
        # another, as a user working in one part of a project would.
        for i, site in enumerate(sorted(sites, key=lambda s: s.path)):
            rows.append(run_site(engines, site, root, options))
            r = rows[-1]
            print(
                f"[{model} {i + 1}/{len(sites)}] {site.path} {site.name}: "
                f"with {r.with_context[:40]!r} / without {r.without[:40]!r}",
                file=sys.stderr,
            )
        for engine in engines:
            engine.close()
        rep = {
            **report_header("crossfile", loaded),
            "workspace": str(root),
            "context": args.context,
            "seconds": round(time.perf_counter() - t0, 1),
            **summarise(rows),
            "rows": [asdict(r) for r in rows],
        }
        reports.append(rep)
        print_report(rep)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "crossfile.json"
    path.write_text(json.dumps(reports, indent=2))
    print(f"written: {path}", file=sys.stderr)
    return 0


def print_report(rep: dict[str, Any]) -> None:
    """The table on stdout."""
    n = rep["positions"]
    w, o = rep["withContext"], rep["without"]
    print(
        f"\n{rep['model']} ({rep['quantize']}), {n} call sites in {rep['workspace']}, contextTokens "
        f"{rep['context']}, {rep['date']}"
    )
    print(
        f"  with workspace context: name right {w['nameRight']}/{n}, exact line {w['exactLine']}/{n}"
    )
    print(
        f"  without:                name right {o['nameRight']}/{n}, exact line {o['exactLine']}/{n}"
    )
    u = rep["unseen"]
    print(
        f"  names in no other line of the file ({u['positions']} sites): name right "
        f"{u['withContextNameRight']} with context, {u['withoutNameRight']} without"
    )
    print(f"  header tokens, median {rep['headerTokensMedian']}")
    sw = rep["switching"]
    print(
        f"  switching documents (earlier sites' caches kept): {sw['taken']} of "
        f"{sw['headerTokens']} header tokens taken from other documents' caches (median "
        f"{sw['takenMedian']} per site); first completion {sw['msMedian']} ms median against "
        f"{sw['emptyCachesMsMedian']} ms from empty caches; same suggestion {sw['sameSuggestion']}/{n}"
    )
