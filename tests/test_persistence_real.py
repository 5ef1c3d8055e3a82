"""Real weights: an engine's prompt cache saved, loaded into a new engine and used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache import DiskStore
from completion.engine import CompletionOptions, CompletionRequest, Engine
from completion.models import load_model
from completion.persistence import Persistence, fingerprint

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def loaded():
    return load_model("default", "cpu", "auto")


def request(text: str, cursor: int) -> CompletionRequest:
    opts = CompletionOptions(max_tokens=16, context_tokens=1024)
    return CompletionRequest("file:///w/decoder.py", text, cursor, opts, language="python")


def source() -> tuple[str, int]:
    text = (Path(json.__file__).parent / "decoder.py").read_text(encoding="utf-8")
    line = "        return obj, end"
    cut = text.index(line) + len("        return obj")
    return text[:cut] + text[text.index("\n", cut) :], cut


def test_a_saved_cache_gives_a_new_engine_the_same_completion(loaded, tmp_path: Path) -> None:
    text, cursor = source()
    live = Engine(loaded)
    first = live.complete(request(text, cursor))
    saved = live.saved_state("file:///w/decoder.py")
    assert saved is not None and saved.cached.ids and not saved.cached.stale.count(1)
    store = Persistence(DiskStore(tmp_path, 1 << 30), fingerprint(loaded))
    assert store.save(saved)

    fresh = Engine(loaded)
    how, back = store.load("file:///w/decoder.py", text)
    assert how == "hit" and back is not None and fresh.adopt_saved(back)
    assert not fresh.adopt_saved(back)  # it has a cache now
    again = fresh.complete(request(text, cursor))
    assert again.text == first.text
    assert again.reused_tokens >= again.prompt_tokens - 32 and again.encoded_tokens <= 32

    # The same edit seen live and applied to the restored cache: the same completion.
    edited = text.replace("import re\n", "import re\nimport sys\n", 1)
    shift = len("import sys\n")
    after_live = live.complete(request(edited, cursor + shift))
    after_restored = fresh.complete(request(edited, cursor + shift))
    assert after_restored.text == after_live.text
    assert after_restored.encoded_tokens < after_restored.prompt_tokens / 4


def test_release_hands_over_the_cache_and_forgets_the_document(loaded) -> None:
    text, cursor = source()
    engine = Engine(loaded)
    engine.complete(request(text, cursor))
    n = engine.cached_tokens("file:///w/decoder.py")
    saved = engine.release("file:///w/decoder.py")
    assert saved is not None and len(saved.cached.ids) == n
    assert "file:///w/decoder.py" not in engine.tracked_keys()
    assert engine.release("file:///w/decoder.py") is None
    assert engine.saved_state("file:///nothing.py") is None
