"""The held-out corpus of ``pie-lsp bench constraints``: pinned PyPI packages, by hash.

Code nobody on the project wrote, not the standard library, and first released after
both models' training cut-offs (2025 or later). The rule that chose the packages, the
candidates it was applied to and what the survey found are in ``constraints_corpus.json``
next to this file; the rule was fixed before any benchmark result was seen:

1. candidates: the list written in the manifest (``candidates``);
2. survey (``python -m tooling.constraints_corpus survey``, once): PyPI's JSON API gives
   each candidate's first upload time, latest version, files and requirements;
3. eligible: first upload on or after 2025-01-01, a ``py3-none-any`` wheel for the
   latest version, at most :data:`MAX_REQUIREMENTS` requirements outside extras, and at
   least :data:`MIN_LINES` lines of Python outside tests in that wheel;
4. draw: the eligible names sorted, shuffled by ``random.Random(SEED)``, the first
   :data:`PACKAGES` kept; the first half (rounded up) is ``dev`` (tune on), the rest
   ``test`` (report only).

``fetch`` downloads a pinned wheel with ``pip download --no-deps --require-hashes`` into
``<cache>/bench-corpus/`` (``PIE_LSP_CACHE_DIR`` moves it), checks its sha256 again and
unpacks it; the unpacked folder is the package root (the oracle's workspace, mypy's path).
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

from completion.install import sha256_of

MANIFEST = Path(__file__).with_name("constraints_corpus.json")
FIRST_RELEASE_FROM = "2025-01-01"
MAX_REQUIREMENTS = 4
MIN_LINES = 1500
PACKAGES = 8
SEED = 2025
TEST_PARTS = ("test", "tests", "testing", "_tests")


@dataclass(frozen=True)
class Survey:
    """What PyPI says about one candidate (its latest version), and the verdict."""

    name: str
    first_upload: str | None
    version: str | None
    wheel: str | None
    """The ``py3-none-any`` wheel's file name (None: none)."""
    sha256: str | None
    url: str | None
    requirements: list[str]
    """Requirements outside extras."""
    lines: int | None = None
    """Python lines outside tests in the wheel (counted after download)."""
    eligible: bool = False
    why_not: str = ""


@dataclass(frozen=True)
class CorpusPackage:
    """One pinned package of the corpus."""

    name: str
    version: str
    wheel: str
    sha256: str
    split: str  # "dev" | "test"
    first_upload: str
    lines: int
    files: int


def cache_dir() -> Path:
    """Where the corpus is downloaded and unpacked."""
    from completion.models import cache_root

    return cache_root() / "bench-corpus"


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    """The manifest as JSON."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def packages(split: str | None = None, path: Path = MANIFEST) -> list[CorpusPackage]:
    """The pinned packages (of one split, or all)."""
    rows = [CorpusPackage(**p) for p in load_manifest(path).get("packages", [])]
    return [p for p in rows if split in (None, "all", p.split)]


##### Survey (run once to write the manifest) #####


def _pypi_json(name: str) -> dict[str, Any]:
    url = f"https://pypi.org/pypi/{name}/json"
    with urllib.request.urlopen(url, timeout=30) as resp:
        data: dict[str, Any] = json.load(resp)
    return data


def survey_one(name: str, info: dict[str, Any]) -> Survey:
    """A candidate's survey row from its PyPI JSON (no line count yet)."""
    uploads = [f["upload_time"] for files in info["releases"].values() for f in files]
    wheel = next((u for u in info["urls"] if u["filename"].endswith("-py3-none-any.whl")), None)
    reqs = [r for r in info["info"].get("requires_dist") or [] if "extra ==" not in r]
    return Survey(
        name=name,
        first_upload=min(uploads) if uploads else None,
        version=info["info"]["version"],
        wheel=wheel["filename"] if wheel else None,
        sha256=wheel["digests"]["sha256"] if wheel else None,
        url=wheel["url"] if wheel else None,
        requirements=reqs,
    )


def verdict(s: Survey) -> Survey:
    """``s`` with ``eligible`` and ``why_not`` filled by the rule (module docstring)."""
    why = ""
    if s.first_upload is None or s.first_upload[:10] < FIRST_RELEASE_FROM:
        why = f"first upload {s.first_upload} before {FIRST_RELEASE_FROM}"
    elif s.wheel is None:
        why = "no py3-none-any wheel"
    elif len(s.requirements) > MAX_REQUIREMENTS:
        why = f"{len(s.requirements)} requirements > {MAX_REQUIREMENTS}"
    elif s.lines is not None and s.lines < MIN_LINES:
        why = f"{s.lines} lines < {MIN_LINES}"
    return Survey(**{**asdict(s), "eligible": not why, "why_not": why})


def is_test_path(rel: Path) -> bool:
    """Tests (and test helpers) are not corpus code."""
    parts = [p.lower() for p in rel.parts]
    return any(p in TEST_PARTS for p in parts[:-1]) or parts[-1].startswith(("test_", "conftest"))


def python_files(root: Path) -> list[Path]:
    """The package's Python files outside tests and metadata, sorted."""
    return sorted(
        p
        for p in root.rglob("*.py")
        if ".dist-info" not in str(p) and not is_test_path(p.relative_to(root))
    )


def count_lines(root: Path) -> int:
    """Lines in :func:`python_files`."""
    return sum(
        len(p.read_text(encoding="utf-8", errors="replace").splitlines())
        for p in python_files(root)
    )


def draw(eligible: list[str], seed: int = SEED, n: int = PACKAGES) -> dict[str, str]:
    """Name -> split by the rule's seeded draw (module docstring, step 4)."""
    names = sorted(eligible)
    random.Random(seed).shuffle(names)
    kept = names[:n]
    dev = (len(kept) + 1) // 2
    return {name: ("dev" if i < dev else "test") for i, name in enumerate(kept)}


def _survey(args: argparse.Namespace) -> int:
    """Survey the manifest's candidates, count lines, draw, and write the manifest."""
    manifest = load_manifest()
    rows: list[Survey] = []
    for name in manifest["candidates"]:
        s = verdict(survey_one(name, _pypi_json(name)))
        if s.eligible:
            pkg = CorpusPackage(name, s.version or "", s.wheel or "", s.sha256 or "", "", "", 0, 0)
            root = fetch(pkg)
            s = verdict(Survey(**{**asdict(s), "lines": count_lines(root)}))
        print(f"{name:32} {s.first_upload} {s.version} {s.lines} {s.why_not or 'eligible'}")
        rows.append(s)
    splits = draw([s.name for s in rows if s.eligible])
    chosen = []
    for s in rows:
        if s.name in splits:
            root = unpacked_dir(s.name, s.version or "")
            files = len(python_files(root))
            chosen.append(
                CorpusPackage(
                    s.name,
                    s.version or "",
                    s.wheel or "",
                    s.sha256 or "",
                    splits[s.name],
                    s.first_upload or "",
                    s.lines or 0,
                    files,
                )
            )
    chosen.sort(key=lambda p: (p.split, p.name))
    manifest["survey"] = [asdict(s) for s in rows]
    manifest["packages"] = [asdict(p) for p in chosen]
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"written: {MANIFEST}")
    return 0


##### Fetch #####


def unpacked_dir(name: str, version: str) -> Path:
    """Where a package's wheel is unpacked (the package root)."""
    return cache_dir() / f"{name}-{version}"


def fetch(pkg: CorpusPackage) -> Path:
    """The package root of ``pkg``: downloaded by hash and unpacked, once.

    Raises RuntimeError when pip fails or the wheel's sha256 is not the pinned one.
    """
    root = unpacked_dir(pkg.name, pkg.version)
    if (root / ".verified").is_file():
        return root
    wheel = cache_dir() / "wheels" / pkg.wheel
    if not (wheel.is_file() and sha256_of(wheel) == pkg.sha256):
        _pip_download(pkg, wheel.parent)
        digest = sha256_of(wheel)
        if digest != pkg.sha256:
            raise RuntimeError(f"{pkg.wheel}: sha256 {digest} is not the pinned {pkg.sha256}")
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if Path(member).is_absolute() or ".." in Path(member).parts:
                raise RuntimeError(f"{pkg.wheel}: unsafe member {member}")
        z.extractall(root)
    (root / ".verified").write_text(pkg.sha256 + "\n")
    return root


def _pip_download(pkg: CorpusPackage, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.write(f"{pkg.name}=={pkg.version} --hash=sha256:{pkg.sha256}\n")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "-r",
        req.name,
        "-d",
        str(dest),
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    Path(req.name).unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip download {pkg.name}=={pkg.version} failed: {done.stderr[-2000:]}")


def fetch_split(split: str) -> list[tuple[CorpusPackage, Path]]:
    """Every package of ``split`` ("dev", "test" or "all") with its root."""
    return [(p, fetch(p)) for p in packages(split)]


def _fetch(args: argparse.Namespace) -> int:
    for pkg, root in fetch_split(args.split):
        print(f"{pkg.split:4} {pkg.name}=={pkg.version} {count_lines(root)} lines: {root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tooling.constraints_corpus survey|fetch``."""
    parser = argparse.ArgumentParser(prog="python -m tooling.constraints_corpus")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("survey", help="apply the rule to the candidates; rewrites the manifest")
    f = sub.add_parser("fetch", help="download, verify and unpack the pinned packages")
    f.add_argument("--split", default="all", choices=("dev", "test", "all"))
    args = parser.parse_args(argv)
    return _survey(args) if args.cmd == "survey" else _fetch(args)


if __name__ == "__main__":
    sys.exit(main())


##### Positions #####

KINDS = ("member", "mid", "eol", "block")
"""member, mid and eol are line-mode positions; block is block mode."""
MODE = {"member": "line", "mid": "line", "eol": "line", "block": "block"}
MULTILINE = {"member": "never", "mid": "never", "eol": "auto", "block": "always"}
"""The ``multiline`` option each kind is completed with."""
MAX_BLOCK_LINES = 8
"""Block positions: statements of at most this many lines."""
TARGET_PARENTS = (
    "pattern_list",
    "tuple_pattern",
    "list_pattern",
    "tuple",
    "list",
    "parenthesized_expression",
    "expression_list",
    "list_splat_pattern",
)
"""Nodes between an assignment and an attribute it assigns (``a, self.b = ...``)."""


@dataclass(frozen=True)
class Position:
    """A document as the editor holds it, a cursor, and the code that was really there.

    ``text`` is the file with the part after the cursor removed: the rest of the line
    (member, mid), the next line (eol: the cursor at the end of a line, the line below
    removed with its line break) or the rest of the statement (block). ``truth`` is
    what was removed, so ``text[:cursor] + truth + text[cursor:]`` is the file.
    """

    package: str
    file: str
    """Relative to the package root."""
    path: str
    """Absolute."""
    kind: str
    text: str
    cursor: int
    truth: str
    member: str | None = None
    """member positions: the member really used (the identifier after the dot)."""

    @property
    def mode(self) -> str:
        """``line`` or ``block``."""
        return MODE[self.kind]

    @property
    def original(self) -> str:
        """The file as it is on disk."""
        return self.text[: self.cursor] + self.truth + self.text[self.cursor :]


class SourceFile:
    """One Python file of a package: its text, tree and the spans of strings and comments.

    Offsets are ``str`` offsets; tree-sitter's byte offsets are converted here.
    """

    def __init__(self, root: Path, path: Path) -> None:
        from completion.syntax import make_parser

        self.root, self.path = root, path
        self.rel = str(path.relative_to(root))
        self.text = path.read_text(encoding="utf-8")
        data = self.text.encode("utf-8")
        self._b2s: list[int] | None = None if self.text.isascii() else _byte_to_str(self.text)
        parser = make_parser("python")
        assert parser is not None, "tree-sitter-python is a dependency"
        self.tree = parser.parse(data)
        self.line_starts = [0] + [i + 1 for i, c in enumerate(self.text) if c == "\n"]
        self.strings: list[tuple[int, int]] = []
        self.comments: list[tuple[int, int]] = []
        self._collect(self.tree.root_node)
        self.strings.sort()
        self.comments.sort()

    def s(self, byte: int) -> int:
        """The str offset of a byte offset."""
        return byte if self._b2s is None else self._b2s[byte]

    def _collect(self, node: Any) -> None:
        stack = [node]
        while stack:
            n = stack.pop()
            if n.type == "comment":
                self.comments.append((self.s(n.start_byte), self.s(n.end_byte)))
            elif n.type in ("string", "concatenated_string"):
                self.strings.append((self.s(n.start_byte), self.s(n.end_byte)))
            else:
                stack.extend(n.children)

    def in_code(self, offset: int) -> bool:
        """A cursor at ``offset`` is in code: not in a string, not in or after a comment."""
        i = bisect.bisect_right(self.strings, (offset, math.inf)) - 1
        if i >= 0 and self.strings[i][0] < offset < self.strings[i][1]:
            return False
        j = bisect.bisect_right(self.comments, (offset, math.inf)) - 1
        return not (j >= 0 and self.comments[j][0] <= offset <= self.comments[j][1])

    def line_end(self, offset: int) -> int:
        """Offset of the line break ending ``offset``'s line (or the end of the text)."""
        end = self.text.find("\n", offset)
        return len(self.text) if end < 0 else end


def _byte_to_str(text: str) -> list[int]:
    """For each byte offset of ``text`` in UTF-8 (and the end), the str offset."""
    out: list[int] = []
    for i, ch in enumerate(text):
        out.extend([i] * len(ch.encode("utf-8")))
    out.append(len(text))
    return out


def _cut(
    f: SourceFile, pkg: str, kind: str, start: int, end: int, member: str | None = None
) -> Position:
    """The position whose document is ``f`` without ``text[start:end]``, cursor at start."""
    t = f.text
    return Position(pkg, f.rel, str(f.path), kind, t[:start] + t[end:], start, t[start:end], member)


def _is_target(node: Any) -> bool:
    """An attribute that is assigned, augmented, deleted or bound by ``for``/``with``."""
    child, parent = node, node.parent
    while parent is not None and parent.type in TARGET_PARENTS:
        child, parent = parent, parent.parent
    if parent is None:
        return False
    if parent.type == "delete_statement":
        return True
    if parent.type in ("assignment", "augmented_assignment", "for_statement", "as_pattern"):
        left = parent.child_by_field_name("left") or parent.child_by_field_name("alias")
        return left is not None and left.id == child.id
    return False


def _inside(node: Any, types: tuple[str, ...]) -> bool:
    p = node.parent
    while p is not None:
        if p.type in types:
            return True
        p = p.parent
    return False


def _nodes(f: SourceFile, kind: str) -> list[Any]:
    """Every node of ``kind`` in the file's tree, in document order."""
    out, stack = [], [f.tree.root_node]
    while stack:
        n = stack.pop()
        if n.type == kind:
            out.append(n)
        stack.extend(reversed(n.children))
    return out


class Cut(NamedTuple):
    """A position before it is made: ``text[start:end]`` removed, the cursor at ``start``.

    Candidates are kept as cuts (a :class:`Position` holds a copy of its file's text: a
    file's thousands of candidates as positions took gigabytes).
    """

    start: int
    end: int
    member: str | None = None


def member_positions(f: SourceFile, pkg: str) -> list[Position]:
    """Member uses ``expr.name`` (not targets, not in strings), cursor right after the dot."""
    return [_cut(f, pkg, "member", *c) for c in member_cuts(f)]


def member_cuts(f: SourceFile) -> list[Cut]:
    """The cuts of :func:`member_positions`, by cursor."""
    out = []
    for node in _nodes(f, "attribute"):
        name = node.child_by_field_name("attribute")
        if name is None or name.type != "identifier" or _is_target(node):
            continue
        if _inside(node, ("string", "concatenated_string")):
            continue
        c = f.s(name.start_byte)
        if f.text[c - 1] != "." or not f.in_code(c):
            continue
        out.append(Cut(c, f.line_end(c), f.text[c : f.s(name.end_byte)]))
    return sorted(out, key=lambda cut: cut.start)


def mid_position(f: SourceFile, pkg: str, rng: random.Random) -> Position | None:
    """A random cursor strictly inside a code line, in code (None after 50 misses)."""
    lines = f.text.split("\n")
    for _ in range(50):
        i = rng.randrange(len(lines))
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if len(line.strip()) < 2 or line.lstrip().startswith("#"):
            continue
        c = f.line_starts[i] + rng.randrange(indent + 1, len(line.rstrip()))
        if f.in_code(c) and f.in_code(f.line_starts[i] + indent):
            return _cut(f, pkg, "mid", c, f.line_end(c))
    return None


def eol_positions(f: SourceFile, pkg: str) -> list[Position]:
    """The cursor at the end of a code line whose next line is code: that line is removed."""
    return [_cut(f, pkg, "eol", *c) for c in eol_cuts(f)]


def eol_cuts(f: SourceFile) -> list[Cut]:
    """The cuts of :func:`eol_positions`."""
    lines, out = f.text.split("\n"), []
    for i in range(len(lines) - 1):
        here, below = lines[i], lines[i + 1]
        if not here.strip() or not below.strip() or below.lstrip().startswith("#"):
            continue
        end = f.line_starts[i] + len(here)
        first = f.line_starts[i + 1] + len(below) - len(below.lstrip())
        if here.rstrip() != here or not (f.in_code(end) and f.in_code(first)):
            continue
        out.append(Cut(end, f.line_end(end + 1)))
    return out


def block_positions(f: SourceFile, pkg: str) -> list[Position]:
    """Statements in function bodies (not docstrings), cursor at their first character."""
    return [_cut(f, pkg, "block", *c) for c in block_cuts(f)]


def block_cuts(f: SourceFile) -> list[Cut]:
    """The cuts of :func:`block_positions`."""
    out = []
    for block in _nodes(f, "block"):
        if not _inside(block, ("function_definition",)) and (
            block.parent is None or block.parent.type != "function_definition"
        ):
            continue
        for st in block.named_children:
            if st.type == "comment" or _is_docstring(st):
                continue
            if st.end_point[0] - st.start_point[0] + 1 > MAX_BLOCK_LINES:
                continue
            s, e = f.s(st.start_byte), f.s(st.end_byte)
            line_start = f.text.rfind("\n", 0, s) + 1
            if f.text[line_start:s].strip():
                continue  # a one-line block after a colon
            out.append(Cut(s, e))
    return out


def _is_docstring(st: Any) -> bool:
    return (
        st.type == "expression_statement"
        and st.named_child_count == 1
        and (st.named_children[0].type in ("string", "concatenated_string"))
    )


def _candidates(f: SourceFile, kind: str) -> list[Cut]:
    if kind == "member":
        return member_cuts(f)
    if kind == "eol":
        return eol_cuts(f)
    if kind == "block":
        return block_cuts(f)
    raise ValueError(kind)


def load_sources(root: Path) -> list[SourceFile]:
    """The package's Python files (outside tests) that CPython parses."""
    import ast
    import warnings

    out = []
    for path in python_files(root):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        out.append(SourceFile(root, path))
    return out


def draw_positions(
    sources: dict[str, list[SourceFile]], kind: str, n: int, seed: int
) -> list[Position]:
    """``n`` positions of ``kind``, deterministic for a seed; no position twice.

    Packages take turns (sorted by name); in a package a file is drawn uniformly, then a
    position in it. A package that yields nothing 50 times in a row leaves the turn.
    ``sources``: package name -> its files.
    """
    rng = random.Random(f"{seed}:{kind}")
    names = sorted(p for p in sources if sources[p])
    out: list[Position] = []
    seen: set[tuple[str, str, int]] = set()
    cache: dict[str, list[Cut]] = {}
    misses = dict.fromkeys(names, 0)
    turn = 0
    while len(out) < n and names:
        pkg = names[turn % len(names)]
        pos = _draw_in_file(rng.choice(sources[pkg]), pkg, kind, rng, cache)
        if pos is None or (pkg, pos.file, pos.cursor) in seen:
            misses[pkg] += 1
            if misses[pkg] >= 50:
                names.remove(pkg)
            continue
        misses[pkg] = 0
        seen.add((pkg, pos.file, pos.cursor))
        out.append(pos)
        turn += 1
    return out


def _draw_in_file(
    f: SourceFile, pkg: str, kind: str, rng: random.Random, cache: dict[str, list[Cut]]
) -> Position | None:
    if kind == "mid":
        return mid_position(f, pkg, rng)
    key = f"{pkg}/{f.rel}"
    if key not in cache:
        cache[key] = _candidates(f, kind)
    found = cache[key]
    return _cut(f, pkg, kind, *rng.choice(found)) if found else None
