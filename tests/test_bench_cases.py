"""The edit traces behind `pie-lsp bench edits` are what they claim to be."""

from __future__ import annotations

import random
import sysconfig
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from completion.models import converted_dir_for, default_gguf_path
from tooling.bench_drift import edit_stream
from tooling.bench_edits import KINDS, edit_similarity, make_case

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(converted_dir_for(default_gguf_path())))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("region", ["first", "second"])
def test_cases_are_real_edits_of_real_files(tokenizer, kind: str, region: str) -> None:
    path = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"
    case = make_case(random.Random(3), path, tokenizer, 512, kind, region)
    assert case is not None
    source = path.read_text(encoding="utf-8")
    head = case.before[: case.cursor_before]
    assert head in source  # the window is a real slice of the file
    assert (
        case.before[case.cursor_before :] == case.after[case.cursor_after :]
    )  # same text after the cursor
    old, new = head.split("\n"), case.after[: case.cursor_after].split("\n")
    delta = {"insert": 1, "delete": -1, "multi": 1}[kind]
    assert len(new) - len(old) == delta
    assert case.before[case.cursor_before - 1] != "\n"  # the cursor is inside a line
    n = len(tokenizer(head, add_special_tokens=False)["input_ids"])
    assert 400 <= n <= 560
    lo, hi = (0.05, 0.5) if region == "first" else (0.5, 0.95)
    assert lo - 0.02 <= case.edit_fraction <= hi + 0.02


def test_edit_similarity() -> None:
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity("", "abc") == 0.0
    assert edit_similarity("abcd", "abce") == pytest.approx(0.75)


def test_drift_sessions_edit_one_line_above_the_cursor_each_step() -> None:
    path = Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"
    lines = path.read_text(encoding="utf-8").split("\n")
    text = "\n".join(lines[:200]) + "\n    x = "
    cursor = len(text)
    text += "1\n" + "\n".join(lines[200:220])
    pool = [ln for ln in lines if ln.strip()]
    states = edit_stream(random.Random(5), text, cursor, pool, 12)
    assert len(states) == 12
    prev_text, prev_cursor = text, cursor
    for new_text, new_cursor in states:
        assert new_text[new_cursor:] == text[cursor:]  # nothing after the cursor changes
        assert new_text[new_cursor - 8 : new_cursor] == text[cursor - 8 : cursor]
        old_lines = prev_text[:prev_cursor].split("\n")
        new_lines = new_text[:new_cursor].split("\n")
        assert abs(len(new_lines) - len(old_lines)) == 1  # one line inserted or deleted
        assert new_text != prev_text
        prev_text, prev_cursor = new_text, new_cursor
    assert states == edit_stream(random.Random(5), text, cursor, pool, 12)  # replayable
