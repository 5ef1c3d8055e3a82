"""The edit-stream oracle, short (``pie-lsp bench oracle`` runs it at 10,000 edits).

Random edits per position encoding over three documents (emoji, CJK, combining marks,
CRLF, lone CR), completions and cancelled completions in between, with a tiny random
model on the real tokenizer: after every step the text equals an independent replay,
the tree a fresh parse, and the prompt cache's ids the prompt built from scratch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from completion.engine import Engine
from completion.models import load_model
from lsp_server.positions import ENCODINGS, Encoding
from tooling.edit_oracle import run_stream
from tooling.tiny_model import make_tiny_model


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    tiny = make_tiny_model(tmp_path_factory.mktemp("tiny"))
    return Engine(load_model(str(tiny), "cpu", "auto"))


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_incremental_state_equals_a_rebuild_after_every_step(
    engine: Engine, encoding: Encoding, tmp_path: Path
) -> None:
    counts = run_stream(engine, encoding, 1000, seed=ENCODINGS.index(encoding))
    assert counts.divergences == 0, counts.examples
    assert counts.completions > 40 and counts.cancelled > 10
