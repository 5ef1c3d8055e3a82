"""Speculative decoding and typing-through reuse on the real models."""

from __future__ import annotations

import random
import sysconfig
from dataclasses import replace
from pathlib import Path

import pytest

from completion.engine import CompletionOptions, CompletionRequest, Engine
from completion.models import is_converted, load_model, qwen_dir
from lsp_server.bench_decode import make_position
from lsp_server.bench_edits import SOURCES

pytestmark = pytest.mark.model

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def positions(n: int, seed: int) -> list:
    rng = random.Random(seed)
    files = [STDLIB / s for s in SOURCES if (STDLIB / s).is_file()]
    out = []
    for attempt in range(n * 20):
        if len(out) >= n:
            break
        p = make_position(rng, files[attempt % len(files)], ("line", "block")[len(out) % 2], 2500)
        if p is not None:
            out.append(p)
    return out


def check_identical(on: Engine, off: Engine, n: int, seed: int) -> int:
    """Cold request, a re-ask after an edit above, the same again; returns accepted drafts."""
    base = CompletionOptions(max_tokens=32, context_tokens=768)
    for i, p in enumerate(positions(n, seed)):
        key = f"doc{i}"
        edited = "# edited\n" + p.text
        for text, cursor in ((p.text, p.cursor), (edited, p.cursor + 9), (edited, p.cursor + 9)):
            a = on.complete(CompletionRequest(key, text, cursor, base))
            b = off.complete(CompletionRequest(key, text, cursor, replace(base, speculative=False)))
            assert a.text == b.text, (p.source, p.kind)
            assert a.generated_tokens == b.generated_tokens
    return on.totals.acceptedTokens


@pytest.fixture(scope="module")
def loaded_default():
    return load_model("default", "cpu", "auto")


def test_default_model_identical_with_and_without_speculation(loaded_default) -> None:
    on, off = Engine(loaded_default), Engine(loaded_default)
    assert on.costs  # measured up front (a server does it in the background after loading)
    accepted = check_identical(on, off, 4, seed=3)
    assert on.totals.verifySteps > 0 and accepted > 0  # the drafts did hit
    assert off.totals.verifySteps == 0


def test_typing_through_a_suggestion_reuses_it(loaded_default) -> None:
    eng = Engine(loaded_default)
    text = "def greet(name):\n    return 'Hello, ' + "
    first = eng.complete(CompletionRequest("t.py", text, len(text)))
    assert len(first.text) >= 3, first.text
    typed = first.text[:2]
    second = eng.complete(CompletionRequest("t.py", text + typed, len(text) + 2))
    assert second.stop_reason == "reused" and second.text == first.text[2:]
    assert eng.totals.reusedCompletions == 1 and second.generated_tokens == 0
    # Typing something else runs the model again.
    third = eng.complete(CompletionRequest("t.py", text + typed + "#", len(text) + 3))
    assert third.stop_reason != "reused"
    assert eng.totals.reusedCompletions == 1


@pytest.mark.qwen
@pytest.mark.skipif(
    not is_converted(qwen_dir()), reason="the opt-in Qwen2.5-Coder model is not installed"
)
def test_qwen_fim_identical_with_and_without_speculation() -> None:
    loaded = load_model("qwen2.5-coder-0.5b", "cpu", "auto")
    on, off = Engine(loaded), Engine(loaded)
    assert on.format.fim and on.costs
    check_identical(on, off, 2, seed=5)
    assert on.totals.verifySteps > 0
