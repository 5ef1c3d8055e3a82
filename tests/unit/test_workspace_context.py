"""Cross-file context (completion/workspace_context.py): imports, stubs, files, headers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from completion.fim import PromptFormat, build_prompt, context_header
from completion.workspace_context import (
    ContextIndex,
    CrossFile,
    Imported,
    Snippet,
    definitions,
    imports,
    module_file,
)


class Chars:
    """A stand-in tokenizer: one token per character (special tokens by name)."""

    def __call__(self, text: str, **_: Any) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}

    def get_vocab(self) -> dict[str, int]:
        return {}


PLAIN = PromptFormat(template=None)
REPO = PromptFormat(template=None, repo_ids=(-1, -2))


def test_imports_of_every_form() -> None:
    text = (
        "import os, pkg.util as pu\n"
        "from .sibling import helper as h, other\n"
        "from ..parent import mod\n"
        "from pkg.sub import (a,\n    b)\n"
        "def f():\n    import late\n"
    )
    assert imports(text) == [
        Imported("os", 0, (), "os"),
        Imported("pkg.util", 0, (), "pu"),
        Imported("sibling", 1, ("helper", "other"), ""),
        Imported("parent", 2, ("mod",), ""),
        Imported("pkg.sub", 0, ("a", "b"), ""),
        Imported("late", 0, (), "late"),
    ]


def test_definitions_are_signatures_docstring_lines_and_methods() -> None:
    text = '''import x

CONSTANT = 3


@decorator
def scale(values: list[float],
          factor: float = 2.0) -> list[float]:
    """Multiply every value by factor.

    Longer text that is not kept.
    """
    return [v * factor for v in values]


async def fetch(url):
    return url


class Store(Base):
    r"""Remembers things."""

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def size(self) -> int:
        return 0
'''
    defs = definitions(text)
    assert list(defs) == ["scale", "fetch", "Store"]
    assert defs["scale"] == (
        "def scale(values: list[float], factor: float = 2.0) -> list[float]:\n"
        '    """Multiply every value by factor."""\n'
        "    ..."
    )
    assert defs["fetch"] == "async def fetch(url):\n    ..."
    assert defs["Store"] == (
        "class Store(Base):\n"
        '    """Remembers things."""\n'
        "    def __init__(self, path: str) -> None: ...\n"
        "    def size(self) -> int: ..."
    )


def project(root: Path) -> None:
    files = {
        "pkg/__init__.py": "def top(): ...\n",
        "pkg/util.py": "def helper(x: int) -> int:\n    return x\n\n\ndef unused():\n    pass\n",
        "src/lib/core.py": "class Engine:\n    def run(self): ...\n",
        "app/main.py": "",
        "app/sibling.py": "def near(): ...\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_imports_resolve_to_workspace_files(tmp_path: Path) -> None:
    project(tmp_path)
    roots = [tmp_path]
    main = tmp_path / "app" / "main.py"
    assert module_file(Imported("pkg.util", 0, (), ""), main, roots) == tmp_path / "pkg/util.py"
    assert module_file(Imported("pkg", 0, (), ""), main, roots) == tmp_path / "pkg/__init__.py"
    assert module_file(Imported("lib.core", 0, (), ""), main, roots) == tmp_path / "src/lib/core.py"
    assert module_file(Imported("sibling", 1, (), ""), main, roots) == tmp_path / "app/sibling.py"
    assert module_file(Imported("os", 0, (), ""), main, roots) is None
    assert module_file(Imported("sibling", 1, (), ""), None, roots) is None


def test_snippets_rank_used_names_and_fit_the_budget(tmp_path: Path) -> None:
    project(tmp_path)
    text = (
        "import pkg.util as u\nfrom lib.core import Engine\nfrom .sibling import near\n"
        "u.helper(1)\nu.helper(2)\nEngine().run()\n"
    )
    main = tmp_path / "app" / "main.py"
    index = ContextIndex()
    snippets = index.snippets(text, main, [tmp_path], 10_000)
    assert [s.path for s in snippets] == ["pkg/util.py", "src/lib/core.py", "app/sibling.py"]
    # Used names first; the module's other definitions after them (the cursor may be
    # right after "u.").
    assert snippets[0].text == "def helper(x: int) -> int:\n    ...\ndef unused():\n    ..."
    small = index.snippets(text, main, [tmp_path], 40)
    assert [s.path for s in small] == ["pkg/util.py"]
    # A file changed on disk is read again.
    util = tmp_path / "pkg" / "util.py"
    util.write_text("def helper(x: int, y: int = 0) -> int:\n    return x\n")
    os.utime(util, ns=(1, 1))
    again = index.snippets(text, main, [tmp_path], 10_000)
    assert again[0].text.startswith("def helper(x: int, y: int = 0)")


def test_snippets_keep_import_and_definition_order_whatever_the_ranks(tmp_path: Path) -> None:
    """Documents that quote a file quote it alike; the ranks choose what goes in."""
    project(tmp_path)
    text = "from .sibling import near\nimport pkg.util as u\nu.unused()\nu.unused()\n"
    main = tmp_path / "app" / "main.py"
    index = ContextIndex()
    snippets = index.snippets(text, main, [tmp_path], 10_000)
    assert [s.path for s in snippets] == ["app/sibling.py", "pkg/util.py"]
    # "unused" ranks first (used twice), yet the file's own order stays.
    assert snippets[1].text == "def helper(x: int) -> int:\n    ...\ndef unused():\n    ..."
    assert snippets[1].rank < snippets[0].rank
    # With room for one stub only, the best ranked is the one kept.
    small = index.snippets(text, main, [tmp_path], 25)
    assert [(s.path, s.text) for s in small] == [("pkg/util.py", "def unused():\n    ...")]


def test_headers_in_both_layouts() -> None:
    snippets = [Snippet("pkg/util.py", "def helper(x): ...", Path("/w/pkg/util.py"))]
    tok = Chars()
    plain = "".join(map(chr, context_header(tok, PLAIN, snippets, "w", "app/main.py")))
    assert plain == (
        "# Context: definitions this file uses from other files of the workspace.\n"
        "# --- pkg/util.py ---\ndef helper(x): ...\n# --- app/main.py ---\n"
    )
    ids = context_header(tok, REPO, snippets, "w", "app/main.py")
    assert ids[0] == -1 and ids.count(-2) == 2
    assert "".join(chr(i) if i > 0 else "|" for i in ids) == (
        "|w\n|pkg/util.py\ndef helper(x): ...\n|app/main.py\n"
    )
    assert context_header(tok, PLAIN, [], "w", "a.py") == []
    # In the prompt: first, and taken from the budget.
    prompt = build_prompt(tok, PLAIN, "x = 1\ny = 2\n", 12, 200, header=ids)
    assert prompt.ids[: len(ids)] == ids and len(prompt.ids) == len(ids) + 12


def test_a_document_header_stays_while_typing_and_follows_its_imports(tmp_path: Path) -> None:
    project(tmp_path)
    cross = CrossFile(Chars(), PLAIN)
    cross.roots = [tmp_path]
    main = str(tmp_path / "app" / "main.py")
    text = "import pkg.util as u\n\nu.helper(1)\n"
    first = cross.header("k", text, main, 0.25, 4000)
    assert first and "def helper" in "".join(map(chr, first))
    typed = text + "value = u.helper(3) + 1\nmore = 2\n"
    assert cross.header("k", typed, main, 0.25, 4000) is first  # the same list: cached
    imported = "from .sibling import near\n" + typed
    assert "def near" in "".join(map(chr, cross.header("k", imported, main, 0.25, 4000)))
    assert cross.header("k", text, main, 0.0, 4000) == []  # off
    assert cross.header("k", text, None, 0.25, 4000) == []  # no file
    assert cross.header("k", text, main + "x", 0.25, 4000) == []  # not Python
    assert len(cross.header("k", text, main, 0.25, 200)) <= 50  # cut to its share


def test_definitions_of_recently_used_open_files_that_the_document_uses(tmp_path: Path) -> None:
    project(tmp_path)
    cross = CrossFile(Chars(), PLAIN)
    cross.roots = [tmp_path]
    main = str(tmp_path / "app" / "main.py")
    draft = str(tmp_path / "app" / "draft.py")  # open, not imported (written alongside)
    draft_text = (
        "def shape_area(w: float, h: float) -> float:\n    return w * h\n\n\ndef unused(): ...\n"
    )
    text = "total = shape_area(2, 3) + 1\n"
    header = "".join(map(chr, cross.header("k", text, main, 0.25, 4000, ((draft, draft_text),))))
    assert "# --- app/draft.py ---\ndef shape_area(w: float, h: float) -> float:" in header
    assert "unused" not in header  # not used here
    # A name this document defines itself is not quoted from elsewhere.
    own = "def shape_area(): ...\n" + text
    assert cross.header("k2", own, main, 0.25, 4000, ((draft, draft_text),)) == []
    # Outside the workspace, or the document itself: nothing.
    outside = str(tmp_path.parent / "elsewhere.py")
    assert cross.header("k3", text, main, 0.25, 4000, ((outside, draft_text),)) == []
    # The draft's signature changes: the header follows.
    changed = draft_text.replace("h: float", "h: float = 1.0")
    again = "".join(map(chr, cross.header("k", text, main, 0.25, 4000, ((draft, changed),))))
    assert "h: float = 1.0" in again
