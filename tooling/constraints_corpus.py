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
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    if sha256_of(wheel) != pkg.sha256:
        raise RuntimeError(f"{pkg.wheel}: sha256 {sha256_of(wheel)} is not the pinned {pkg.sha256}")
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
