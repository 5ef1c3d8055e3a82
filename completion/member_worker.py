"""The member oracle's worker process: jedi, asked over JSON lines on stdin/stdout.

Run as ``python -m completion.member_worker``. One request per line, one answer per
line, in order::

    {"id": 1, "op": "members", "text": ..., "offset": 310, "path": ..., "roots": [...],
     "unsaved": [...]}
    -> {"id": 1, "names": ["append", ...] | null, "reason": "known" | "empty" | "dynamic"
        | "narrowed" | "object" | "lambda" | "unsaved" | "error", "ms": 3.1}
    {"id": 2, "op": "warm", "text": ..., "path": ..., "roots": [...]}  -> {"id": 2, "ms": ...}

``offset`` is a code point offset into ``text``, right after the member access's dot
(turned into jedi's line and column with parso's line splitting, as jedi splits).
Names are the receiver's complete member list ("known"), or ``object``'s when the
receiver is known only as ``object`` and not narrowed above ("object": code uses such
a value as something narrower). Otherwise None: no members known, a ``__getattr__``
that makes any name valid, a receiver narrowed by ``isinstance`` to what jedi cannot
resolve (jedi does not narrow), a ``lambda`` parameter (jedi takes an outer variable
of its name), a member defined in a file with unsaved changes, or jedi failing.
Anything jedi prints goes to stderr: stdout carries the answers only.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, TextIO

DYNAMIC = frozenset({"__getattr__"})
"""A type with one of these accepts any member name: its list is not complete."""


OBJECT_MEMBERS = frozenset(dir(object)) | {"__annotations__", "__dict__", "__module__"}
"""A value typed ``object`` (or no better) is narrowed before use: its list is not its type's."""
NARROWING_LINES = 40
"""How far above the access an ``isinstance`` check of the receiver is looked for."""


def _receiver(text: str, offset: int) -> re.Match[str] | None:
    """The receiver of the access whose dot ends ``text[:offset]``, if a plain name."""
    return re.search(r"(?<![\w.])([A-Za-z_]\w*)$", text[: offset - 1])


def _lines_above(text: str, offset: int, lines: int) -> str:
    """The last ``lines`` lines before the access's dot (its own line's start included)."""
    return "\n".join(text[: offset - 1].splitlines()[-lines:])


_CLASSES = r"([A-Za-z_][\w.]*|\(\s*[A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*\s*,?\s*\))"


def narrowed(text: str, offset: int) -> list[str] | None:
    """The classes the receiver (a plain name) was narrowed to above, if it was.

    An ``isinstance(name, C)`` / ``isinstance(name, (A, B))`` / ``type(name) is C`` in the
    :data:`NARROWING_LINES` lines above the access: jedi infers the declared type, not
    the narrowed one, so a subclass's members would be refused. ``[]`` when it was
    narrowed by something else than plain class names (unknown). None: not narrowed.
    """
    receiver = _receiver(text, offset)
    if receiver is None:
        return None
    name = re.escape(receiver.group(1))
    above = _lines_above(text, offset, NARROWING_LINES)
    checks = list(
        re.finditer(rf"isinstance\(\s*{name}\s*,|type\(\s*{name}\s*\)\s+(?:is|==)", above)
    )
    if not checks:
        return None
    classes = re.match(r"\s*" + _CLASSES + r"(?!\s*[\[(.\w])", above[checks[-1].end() :])
    if classes is None:
        return []
    return [c.strip() for c in classes.group(1).strip("()").split(",") if c.strip()]


LAMBDA_LINES = 5
"""How far above the access a ``lambda`` whose parameter is the receiver is looked for."""


def lambda_parameter(text: str, offset: int) -> bool:
    """Whether the receiver (a plain name) is a parameter of a ``lambda`` just above.

    jedi resolves such a parameter to a variable of the same name in the enclosing
    scope (``for idx, f in enumerate(...)`` then ``lambda idx: idx.split("-")``: int's
    members, refusing ``split``), so its list is not the parameter's.
    """
    receiver = _receiver(text, offset)
    if receiver is None:
        return False
    name = re.escape(receiver.group(1))
    above = _lines_above(text, offset, LAMBDA_LINES)
    return re.search(rf"\blambda\b[^:\n]*\b{name}\b[^:\n]*:", above) is not None


def _complete(script: Any, text: str, offset: int) -> list[Any]:
    """Jedi's completions (no keywords) at ``offset`` of ``text``."""
    from parso import split_lines

    lines = split_lines(text[:offset])
    return [c for c in script.complete(len(lines), len(lines[-1])) if c.type != "keyword"]


def _narrowed_members(jedi: Any, request: dict[str, Any], classes: list[str]) -> set[str] | None:
    """Members of instances of ``classes`` at the access (None if one is unknown)."""
    text, offset = request["text"], request["offset"]
    receiver = _receiver(text, offset)
    assert receiver is not None  # narrowed() found one
    found: set[str] = set()
    for cls in classes:
        probe = f"{text[: receiver.start()]}({cls}())."
        probe_text = probe + text[offset:]
        script = jedi.Script(probe_text, path=request.get("path"), **_context(jedi, request))
        names = {c.name for c in _complete(script, probe_text, len(probe))}
        if not names or names <= OBJECT_MEMBERS or DYNAMIC & names:
            return None
        found |= names
    return found


def _project(jedi: Any, path: str | None, roots: list[str]) -> Any:
    """The jedi project for ``path``: the workspace root that holds it, else its folder."""
    where = Path(path).resolve() if path else None
    for root in roots:
        base = Path(root).resolve()
        if where is None or base in where.parents:
            return _project_at(jedi, base)
    return _project_at(jedi, where.parent if where else Path.cwd())


_PROJECTS: dict[Path, Any] = {}


def _project_at(jedi: Any, base: Path) -> Any:
    """One jedi project per folder, with the folder's own virtual environment if it has one."""
    if base not in _PROJECTS:
        environment = None
        for name in (".venv", "venv"):
            if (base / name / "pyvenv.cfg").is_file():
                try:
                    environment = jedi.create_environment(str(base / name))
                except Exception as exc:
                    print(f"member worker: {base / name}: {exc}", file=sys.stderr)
                break
        if environment is None:
            environment = jedi.api.environment.InterpreterEnvironment()
        _PROJECTS[base] = jedi.Project(str(base), environment_path=None), environment
    return _PROJECTS[base]


def _context(jedi: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Jedi's project and environment for the request's file."""
    project, environment = _project(jedi, request.get("path"), request.get("roots") or [])
    return {"project": project, "environment": environment}


def members(jedi: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Answer one ``members`` request (see the module docstring)."""
    text, offset = request["text"], request["offset"]
    script = jedi.Script(text, path=request.get("path"), **_context(jedi, request))
    found = _complete(script, text, offset)
    names = {c.name for c in found}
    if not names:
        return {"names": None, "reason": "empty"}
    if DYNAMIC & names:
        return {"names": None, "reason": "dynamic"}
    if lambda_parameter(text, offset):
        return {"names": None, "reason": "lambda"}
    classes = narrowed(text, offset)
    if classes is not None:
        extra = _narrowed_members(jedi, request, classes) if classes else None
        if extra is None:
            return {"names": None, "reason": "narrowed"}
        names = extra | (names if not names <= OBJECT_MEMBERS else set())
    elif names <= OBJECT_MEMBERS:
        return {"names": sorted(names), "reason": "object"}
    unsaved = set(request.get("unsaved") or ())
    if unsaved and any(str(c.module_path) in unsaved for c in found if c.module_path):
        return {"names": None, "reason": "unsaved"}
    return {"names": sorted(names), "reason": "known"}


def warm(jedi: Any, request: dict[str, Any]) -> dict[str, Any]:
    """Parse a document and load what it imports (the first query then costs less)."""
    project, environment = _project(jedi, request.get("path"), request.get("roots") or [])
    script = jedi.Script(
        request["text"], path=request.get("path"), project=project, environment=environment
    )
    for name in script.get_names():
        if name.type == "module":
            name.infer()
    return {}


def serve(stdin: TextIO, stdout: TextIO) -> None:
    """Answer requests until stdin closes."""
    import jedi

    ops = {"members": members, "warm": warm}
    for line in stdin:
        t = time.perf_counter()
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            answer = ops[request["op"]](jedi, request)
        except Exception as exc:  # one bad request never ends the worker
            answer = {"names": None, "reason": "error", "error": f"{type(exc).__name__}: {exc}"}
        answer["id"] = request.get("id")
        answer["ms"] = round((time.perf_counter() - t) * 1000, 2)
        stdout.write(json.dumps(answer) + "\n")
        stdout.flush()


def main() -> None:
    """Entry point: answers on the original stdout, everything else to stderr."""
    if hasattr(os, "nice"):
        os.nice(10)  # the model's forwards come first: analysis takes what they leave
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints (fd 1) go to stderr
    sys.stdout = sys.stderr
    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
