"""Protocol fuzzing over stdio (the short version of ``pie-lsp bench fuzz``).

A seeded stream of valid and hostile messages (tooling/fuzz_protocol.py) against the
real server: every request answered, no crash, ``exit`` ends it with 0, and the
documents it holds equal the client's replay of the valid edits. With a tiny random
model for speed in every position encoding, then a shorter run with the real default
model (its completions decode for real between the edits).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tooling.fuzz_protocol import ENCODINGS, Counts, run_session
from tooling.tiny_model import make_tiny_model

pytestmark = [pytest.mark.e2e]

COMMAND = [sys.executable, "-m", "lsp_server"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny")))


def check(counts: Counts) -> None:
    assert counts.crashed is None, counts.divergences
    assert counts.unanswered == []
    assert counts.divergences == []
    assert counts.exit_code == 0
    assert counts.answered == counts.requests
    # Errors where due (bad params, unknown methods, documents not open), none internal.
    internal = [k for k in counts.error_kinds if k.startswith(("-32603", "-32803"))]
    assert internal == []
    assert counts.edits > 0 and counts.hostile > 0


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_hostile_and_valid_messages_with_a_tiny_model(
    encoding: str, tiny: str, tmp_path: Path
) -> None:
    options = {"model": tiny, "completion": {"maxTokens": 4}}
    counts = run_session(COMMAND, options, encoding, 7, 1500, tmp_path)
    check(counts)
    assert counts.completions > 50 and counts.cancels > 20


@pytest.mark.model
def test_hostile_and_valid_messages_with_the_default_model(tmp_path: Path) -> None:
    options = {"model": "default", "completion": {"maxTokens": 4}}
    counts = run_session(COMMAND, options, "utf-16", 11, 300, tmp_path)
    check(counts)
