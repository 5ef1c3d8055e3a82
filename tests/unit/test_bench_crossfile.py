"""bench crossfile's call sites (tooling/bench_crossfile.py): the pure parts."""

from __future__ import annotations

from pathlib import Path

from completion.workspace_context import ContextIndex
from tooling.bench_crossfile import Outcome, _sites, project_packages, summarise


def test_sites_are_calls_of_functions_other_files_define(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "events.py").write_text("def get_loop(policy=None):\n    pass\n\nclass Loop: ...\n")
    (pkg / "util.py").write_text("def helper(x):\n    return x\n")
    text = (
        "from . import events\n"
        "from .util import helper\n"
        "\n"
        "def run(x):\n"
        "    loop = events.get_loop(x)\n"
        "    value = helper(x) + helper(1)\n"
        "    other = events.Loop()\n"
        "    return loop(x\n"
        "               )\n"
    )
    (pkg / "main.py").write_text(text)
    sites = _sites(ContextIndex(), tmp_path, pkg / "main.py", text)
    got = [(s.name, s.expected) for s in sites]
    assert got == [
        ("get_loop", "get_loop(x)"),
        ("helper", "helper(x) + helper(1)"),
        ("helper", "helper(1)"),
    ]
    first = sites[0]
    assert first.text[: first.cursor].endswith("    loop = events.")
    assert first.text[first.cursor :].startswith("\n    value = helper")  # rest removed


def test_hits_need_the_name_and_the_line() -> None:
    rows = [
        Outcome("a.py", "f", "f(x)", True, "f(x)", "g(x)", 40, 900.0, 300.0, 30, 12, True),
        Outcome("a.py", "f", "f(x, y)", False, "f(x)", "f(x, y)", 40, 800.0, 850.0, 0, 50, False),
    ]
    s = summarise(rows)
    assert s["withContext"] == {"nameRight": 2, "exactLine": 1}
    assert s["without"] == {"nameRight": 1, "exactLine": 1}
    assert s["switching"]["taken"] == 30
    assert s["switching"]["headerTokens"] == 80
    assert s["switching"]["sameSuggestion"] == 1
    assert s["unseen"] == {"positions": 1, "withContextNameRight": 1, "withoutNameRight": 0}


def test_a_project_folder_gives_its_packages_and_unseen_names(tmp_path: Path) -> None:
    for folder in ("pkg", "pkg/sub", ".venv/lib", "node_modules/x", "build"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "m.py").write_text("")
    (tmp_path / "top.py").write_text("")
    assert project_packages(tmp_path) == [".", "pkg", "pkg/sub"]
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "util.py").write_text("def helper(x):\n    return x\n")
    text = "from pkg import util\n\n\ndef run(x):\n    return util.helper(x)\n"
    (site,) = _sites(ContextIndex(), tmp_path, tmp_path / "top.py", text)
    assert site.unseen
    again = "from pkg import util\n# helper does it\n\n\ndef run(x):\n    return util.helper(x)\n"
    (site,) = _sites(ContextIndex(), tmp_path, tmp_path / "top.py", again)
    assert not site.unseen
