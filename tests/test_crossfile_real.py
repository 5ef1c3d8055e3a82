"""Real weights: a completion that needs a function another workspace file defines.

The workspace has ``textkit/normalize.py`` defining a function whose name the model
cannot guess; ``app.py`` imports the module and is about to call it (a case chosen
where the default model gets the name with the context: at 135M parameters it does
not always pick the right stub, docs/cache.md has the measured rates). With workspace
context the prompt carries the module's stubs and the suggestion names the function;
with ``workspace_tokens`` 0 it does not. The member monitor is off, so the context is
the only way the name can reach the suggestion.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from completion.engine import CompletionOptions, CompletionRequest, CompletionResult, Engine
from completion.models import is_converted, load_model, qwen_dir

pytestmark = pytest.mark.model

NORMALIZE = '''"""Text clean-up helpers."""


def collapse_whitespace_runs(text: str) -> str:
    """Replace every run of whitespace in text by a single space."""
    return " ".join(text.split())


def parse_version_tuple(text: str) -> tuple[int, ...]:
    """The numbers of a dotted version string, such as (1, 2, 3) for "1.2.3"."""
    return tuple(int(part) for part in text.split("."))
'''
APP = '''from textkit import normalize


def version_of(package_version: str) -> tuple[int, ...]:
    """The version numbers of a package."""
    return normalize.'''
TAIL = "\n\n\ndef main() -> None:\n    print(version_of(input()))\n"


def workspace(root: Path) -> Path:
    (root / "textkit").mkdir()
    (root / "textkit" / "__init__.py").write_text("")
    (root / "textkit" / "normalize.py").write_text(NORMALIZE)
    app = root / "app.py"
    app.write_text(APP + TAIL)
    return app


def suggestions(engine: Engine, app: Path) -> tuple[str, str, int]:
    """The suggestion with and without workspace context, and the header's size."""
    out = []
    for share in (0.25, 0.0):
        opts = CompletionOptions(max_tokens=16, members=False, workspace_tokens=share)
        req = CompletionRequest(
            app.as_uri(), APP + TAIL, len(APP), opts, language="python", path=str(app)
        )
        out.append(engine.complete(req).text)
        engine.forget(app.as_uri())
    return out[0], out[1], engine.totals.workspaceSnippetTokens


def check(engine: Engine, tmp_path: Path) -> None:
    app = workspace(tmp_path)
    engine.set_workspace([str(tmp_path)])
    with_context, without, header = suggestions(engine, app)
    assert header > 20
    assert with_context.startswith("parse_version_tuple("), with_context
    assert "parse_version_tuple" not in without, without


def test_the_default_model_names_the_other_files_function(tmp_path: Path) -> None:
    check(Engine(load_model("default", "cpu", "auto")), tmp_path)


@pytest.mark.skipif(not is_converted(qwen_dir()), reason="Qwen2.5-Coder not installed")
def test_qwen_names_the_other_files_function(tmp_path: Path) -> None:
    engine = Engine(load_model("qwen2.5-coder-0.5b", "cpu", "auto"))
    assert engine.format.repo_ids is not None  # the repository format
    check(engine, tmp_path)


SHAPES = '''"""Shapes."""


def rectangle_area(width: float, height: float) -> float:
    """The area of a width by height rectangle."""
    return width * height


def circle_circumference(radius: float) -> float:
    """The length of the circle's border."""
    return 6.283185 * radius
'''
REPORT = (
    "from textkit import shapes, normalize\n\n\n"
    "def report(w: float, h: float, v: str) -> str:\n"
    "    area = shapes.rectangle_area(w, h)\n"
    "    return f'{area} {normalize.parse_version_tuple(v)}'\n\n\n"
    "def clean(s: str) -> str:\n"
    "    return normalize."
)


def complete(engine: Engine, path: Path, text: str, strategy: str = "pie") -> CompletionResult:
    opts = CompletionOptions(max_tokens=16, members=False, strategy=strategy)
    req = CompletionRequest(path.as_uri(), text, len(text), opts, language="python", path=str(path))
    return engine.complete(req)


def check_shared_context(engine: Engine, tmp_path: Path) -> None:
    """A second document quoting a file the first quoted, after other files: moved."""
    app = workspace(tmp_path)
    (tmp_path / "textkit" / "shapes.py").write_text(SHAPES)
    report = tmp_path / "report.py"
    report.write_text(REPORT)
    engine.set_workspace([str(tmp_path)])
    complete(engine, report, REPORT)
    assert engine.totals.workspaceChunkTokens == 0
    first = complete(engine, app, APP)
    moved = engine.totals.workspaceChunkTokens
    # normalize.py's block, quoted after shapes.py's in the first prompt, first in this one.
    assert moved >= 60, moved
    assert first.reused_tokens == moved
    engine.forget(app.as_uri())
    cold = complete(engine, app, APP, strategy="recompute")
    assert first.encoded_tokens + first.reused_tokens == cold.encoded_tokens
    assert first.text == cold.text


def test_a_document_takes_the_context_another_quotes_by_rerotation(tmp_path: Path) -> None:
    check_shared_context(Engine(load_model("default", "cpu", "auto")), tmp_path)


@pytest.mark.skipif(not is_converted(qwen_dir()), reason="Qwen2.5-Coder not installed")
def test_qwen_takes_the_context_another_quotes_by_rerotation(tmp_path: Path) -> None:
    check_shared_context(Engine(load_model("qwen2.5-coder-0.5b", "cpu", "auto")), tmp_path)
