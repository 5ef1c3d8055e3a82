"""Judges of ``pie-lsp bench constraints`` that share nothing with the engine's constraints.

- :func:`parses`: CPython's ``ast.parse`` (the engine's syntax check uses tree-sitter);
- :func:`written_members`: the member names ``expr.name`` a suggestion writes (found with
  tree-sitter in the file with the suggestion inserted);
- :class:`MypyJudge`: mypy's verdict on those names (the engine's oracle is jedi). Every
  file with a suggestion is checked in one mypy run per package, as a sibling module of
  the original (so relative imports resolve), with the package root first on the path,
  ``--ignore-missing-imports`` and ``--check-untyped-defs``. A written member is
  *invented* when mypy reports that the receiver has no such attribute (``attr-defined``,
  or ``union-attr`` for every item of a union but ``None``: an unnarrowed Optional is not
  an invented member) on a line of the suggestion, and the original file has no error
  with the same code and message. Whether mypy *could* judge is probed: the same file
  with the suggestion's first member renamed to :data:`PROBE` must get such an error
  (it does not when the receiver is ``Any``, e.g. a type from a package not installed).
- :func:`exact`, :func:`edit_similarity`, :func:`next_identifier_match`: against the code
  that was really there.
"""

from __future__ import annotations

import ast
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .bench_edits import edit_similarity as edit_similarity

PROBE = "zz_pie_probe"
"""A member name no receiver has: mypy flags it wherever it knows the receiver's type."""
ATTR_CODES = ("attr-defined", "union-attr")
_NO_ATTR = re.compile(r'has no attribute "([^"]+)"')
_ITEM = re.compile(r'^Item "(.+)" of "(.+)" has no attribute "([^"]+)"')
_LINE = re.compile(r"^(.+?):(\d+):(\d+): error: (.*?)(?:  \[([a-z0-9-]+)\])?$")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def parses(text: str) -> bool:
    """CPython parses ``text`` (warnings such as invalid escapes ignored)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _norm(s: str) -> str:
    return "\n".join(line.rstrip() for line in s.rstrip().split("\n"))


def exact(suggestion: str, truth: str) -> bool:
    """The suggestion is the removed code (trailing whitespace of lines ignored)."""
    return _norm(suggestion) == _norm(truth)


def next_identifier_match(suggestion: str, member: str) -> bool:
    """The suggestion's first identifier is ``member`` (MGD's next-identifier match)."""
    m = _IDENT.match(suggestion)
    return m is not None and m.group(0) == member


@dataclass(frozen=True)
class Written:
    """A member name written by a suggestion: ``text[start:end]`` in the new file."""

    name: str
    start: int
    end: int


def written_members(text: str, start: int, end: int) -> list[Written]:
    """Attribute names (``expr.name``) in ``text`` that overlap ``text[start:end]``.

    ``text`` is the file with the suggestion inserted at ``start`` (str offsets).
    """
    from completion.syntax import make_parser

    if start >= end:
        return []
    parser = make_parser("python")
    assert parser is not None
    data = text.encode("utf-8")
    bstart = len(text[:start].encode("utf-8"))
    bend = bstart + len(text[start:end].encode("utf-8"))
    out, stack = [], [parser.parse(data).root_node]
    while stack:
        n = stack.pop()
        if n.end_byte <= bstart or n.start_byte >= bend:
            continue
        if n.type == "attribute":
            name = n.child_by_field_name("attribute")
            if name is not None and name.type == "identifier" and name.end_byte > bstart:
                s = len(data[: name.start_byte].decode("utf-8", errors="replace"))
                word = data[name.start_byte : name.end_byte].decode("utf-8", errors="replace")
                out.append(Written(word, s, s + len(word)))
        stack.extend(n.children)
    return sorted(out, key=lambda w: w.start)


def probe_text(text: str, first: Written) -> str:
    """``text`` with the member ``first`` renamed to :data:`PROBE`."""
    return text[: first.start] + PROBE + text[first.end :]


##### mypy #####


@dataclass(frozen=True)
class MypyCase:
    """A file with a suggestion inserted, to judge against the original file."""

    key: str
    root: Path
    """The package root (the folder holding the top-level package)."""
    rel: str
    """The original file, relative to ``root``."""
    text: str
    span: tuple[int, int]
    """The suggestion in ``text`` (str offsets)."""
    names: tuple[str, ...]
    """The member names the suggestion writes (:func:`written_members`)."""
    probe: str | None
    """``text`` with the first written member renamed to :data:`PROBE` (None: no probe)."""


@dataclass(frozen=True)
class MypyVerdict:
    """What mypy says about one case."""

    key: str
    judged: bool
    """mypy knows the receiver of the first written member (the probe was flagged)."""
    invented: tuple[str, ...]
    """Written members reported missing, new against the original file."""
    errors: tuple[str, ...] = ()
    """Those errors as mypy printed them (file name left out)."""
    failed: str = ""
    """Why mypy gave no verdict (a blocking error in the file)."""


@dataclass(frozen=True)
class MypyError:
    """One line of mypy's output."""

    line: int
    message: str
    code: str


@dataclass
class _Files:
    """The files of one mypy run: variant and probe modules, and originals."""

    by_path: dict[str, str] = field(default_factory=dict)
    """Absolute path of a written file -> its role ("v:<hash>", "p:<hash>", "o:<rel>")."""
    texts: dict[str, Path] = field(default_factory=dict)
    """Role -> path, so identical texts are checked once."""


def parse_mypy(output: str) -> dict[str, list[MypyError]]:
    """Mypy's output (``--show-column-numbers --show-error-codes``) by file path."""
    out: dict[str, list[MypyError]] = {}
    for line in output.splitlines():
        m = _LINE.match(line.strip())
        if m:
            path, ln, _col, msg, code = m.groups()
            out.setdefault(path, []).append(MypyError(int(ln), msg, code or ""))
    return out


def _split_union(s: str) -> list[str]:
    """Top-level items of a type written ``A | B[C | D] | None``."""
    items, depth, cur = [], 0, ""
    for part in re.split(r"(\[|\]|\(|\)| \| )", s):
        if part in ("[", "("):
            depth += 1
        elif part in ("]", ")"):
            depth -= 1
        if part == " | " and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += part
    return [*items, cur]


def missing_names(errors: list[MypyError]) -> list[tuple[MypyError, str]]:
    """(error, name) for errors saying a receiver has no attribute ``name``.

    ``union-attr`` counts only when every item of the union but ``None`` lacks it; a
    receiver mypy types as plain ``None`` (a variable set to None and assigned in a loop
    it does not follow) does not count either, for the same reason.
    """
    out: list[tuple[MypyError, str]] = []
    items: dict[tuple[int, str, str], set[str]] = {}
    for e in errors:
        if e.code == "attr-defined" and (m := _NO_ATTR.search(e.message)):
            if not e.message.startswith('"None" has no attribute'):
                out.append((e, m.group(1)))
        elif e.code == "union-attr" and (m := _ITEM.match(e.message)):
            item, union, name = m.groups()
            flagged = items.setdefault((e.line, union, name), set())
            flagged.add(item)
            wanted = {i for i in _split_union(union) if i != "None"}
            if flagged >= wanted and flagged - {"None"}:
                out.append((e, name))
    return out


def _lines(text: str, span: tuple[int, int]) -> range:
    """1-based line numbers that ``text[span[0]:span[1]]`` touches."""
    first = text.count("\n", 0, span[0]) + 1
    return range(first, first + text.count("\n", span[0], max(span[1], span[0])) + 1)


def judge_case(
    case: MypyCase, variant: list[MypyError], probe: list[MypyError], original: list[MypyError]
) -> MypyVerdict:
    """The verdict on one case from mypy's errors in its three files."""
    if any(e.code == "syntax" or (not e.code and "syntax" in e.message.lower()) for e in variant):
        return MypyVerdict(case.key, False, (), failed="syntax error")
    before = Counter((e.code, e.message) for e in original)
    lines = _lines(case.text, case.span)
    invented, errors = [], []
    for e, name in missing_names(variant):
        if e.line not in lines or name not in case.names:
            continue
        if before[(e.code, e.message)] > 0:
            before[(e.code, e.message)] -= 1
            continue
        invented.append(name)
        errors.append(f"{e.line}: {e.message} [{e.code}]")
    judged = any(name == PROBE for _, name in missing_names(probe))
    return MypyVerdict(case.key, judged, tuple(invented), tuple(errors))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class MypyJudge:
    """Runs mypy over many cases of one package at once (see the module docstring)."""

    def __init__(self, root: Path, chunk: int = 120) -> None:
        self.root = root
        self.chunk = chunk
        self.seconds = 0.0
        """Time spent in mypy."""
        self.runs = 0

    def judge(self, cases: list[MypyCase]) -> list[MypyVerdict]:
        """A verdict for each case, in order (all of ``root``'s package)."""
        out: list[MypyVerdict] = []
        with tempfile.TemporaryDirectory(prefix="pie-mypy-") as tmp:
            work = Path(tmp) / "root"
            shutil.copytree(self.root, work, ignore=shutil.ignore_patterns("*.dist-info"))
            (Path(tmp) / "mypy.ini").write_text("[mypy]\n")
            for i in range(0, len(cases), self.chunk):
                out.extend(self._judge_chunk(cases[i : i + self.chunk], work, Path(tmp)))
        return out

    def _judge_chunk(self, cases: list[MypyCase], work: Path, tmp: Path) -> list[MypyVerdict]:
        """One mypy run for ``cases``; halves them while an error blocks the run."""
        files = _Files()
        for c in cases:
            self._add(files, work, c.rel, f"o:{c.rel}", None)
            self._add(files, work, c.rel, f"v:{_digest(c.text)}", c.text)
            if c.probe is not None:
                self._add(files, work, c.rel, f"p:{_digest(c.probe)}", c.probe)
        errors, blocked = self._run(list(files.by_path), work, tmp)
        for path, role in files.by_path.items():
            if not role.startswith("o:"):
                Path(path).unlink()
        if blocked:
            if len(cases) == 1:
                return [MypyVerdict(cases[0].key, False, (), failed=blocked)]
            half = len(cases) // 2
            return [
                *self._judge_chunk(cases[:half], work, tmp),
                *self._judge_chunk(cases[half:], work, tmp),
            ]
        by_role = {files.by_path[p]: e for p, e in errors.items() if p in files.by_path}
        verdicts = []
        for c in cases:
            v = by_role.get(f"v:{_digest(c.text)}", [])
            p = by_role.get(f"p:{_digest(c.probe)}", []) if c.probe is not None else []
            verdicts.append(judge_case(c, v, p, by_role.get(f"o:{c.rel}", [])))
        return verdicts

    def _add(self, files: _Files, work: Path, rel: str, role: str, text: str | None) -> None:
        if role in files.texts:
            return
        original = work / rel
        if text is None:
            path = original
        else:
            path = original.with_name(f"_pie_{len(files.texts)}_{original.name}")
            path.write_text(text, encoding="utf-8")
        files.texts[role] = path
        files.by_path[str(path.resolve())] = role

    def _run(
        self, paths: list[str], work: Path, tmp: Path
    ) -> tuple[dict[str, list[MypyError]], str]:
        """Errors by absolute path, and why the run was blocked ("" when it was not)."""
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(tmp / "mypy.ini")]
        cmd += ["--ignore-missing-imports", "--check-untyped-defs", "--follow-imports=silent"]
        cmd += ["--explicit-package-bases", "--show-column-numbers", "--show-error-codes"]
        cmd += ["--no-error-summary", "--hide-error-context", "--no-pretty", "--no-color-output"]
        cmd += ["--cache-dir", str(tmp / "cache"), *paths]
        t = time.perf_counter()
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        self.seconds += time.perf_counter() - t
        self.runs += 1
        out = done.stdout + done.stderr
        blocked = ""
        if done.returncode not in (0, 1) or "prevented further checking" in out:
            blocked = (out.strip().splitlines() or ["mypy failed"])[-1][:200]
        errors = {str((work / p).resolve()): e for p, e in parse_mypy(done.stdout).items()}
        return errors, blocked
