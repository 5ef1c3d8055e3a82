"""The member monitor with the real default model and the real jedi worker, in process:
the paths that depend on when the oracle answers, made deterministic."""

from __future__ import annotations

import ast
import textwrap
from dataclasses import replace

import pytest

from completion.engine import CompletionOptions, CompletionRequest, Engine
from completion.member_oracle import TIMEOUT, MemberOracle, MemberQuery, Members
from completion.models import load_model

pytestmark = pytest.mark.model

TEXTWRAP = "import textwrap\n\n\ndef fmt(s):\n    return textwrap."


class LateOracle(MemberOracle):
    """The real oracle, but each answer comes just after the decode step that asked."""

    def __init__(self) -> None:
        super().__init__()
        self.released: set[tuple[str, int, int, int]] = set()

    def cached(self, query: MemberQuery) -> Members | None:
        return super().cached(query) if query.key() in self.released else None

    def members(self, query: MemberQuery, budget_s: float | None) -> Members:
        if query.key() in self.released:
            return super().members(query, budget_s)
        if budget_s:  # a decode step waited: the answer comes right after
            super().members(query, None)
            self.released.add(query.key())
        return TIMEOUT


@pytest.fixture(scope="module")
def engine() -> Engine:
    e = Engine(load_model("default", "cpu", "auto"))
    yield e
    e.close()


def complete(engine: Engine, text: str, **options: object) -> str:
    opts = CompletionOptions(max_tokens=16, multiline="never", syntax=False, **options)  # type: ignore[arg-type]
    req = CompletionRequest("file:///tmp/late.py", text, len(text), opts, language="python")
    return engine.complete(req).text


def name(suggestion: str) -> str:
    return suggestion.split("(")[0]


def test_a_late_answer_decodes_again_constrained(engine: Engine) -> None:
    engine.oracle.close()
    engine.oracle = LateOracle()
    assert not hasattr(textwrap, name(complete(engine, TEXTWRAP, members=False)))
    before = engine.totals.memberRedecodes
    out = complete(engine, TEXTWRAP)
    # Decoded unconstrained (the answer was late), it invents a member; the answer has
    # come by the review, so it is decoded again with the members known.
    assert engine.totals.memberRedecodes == before + 1
    assert name(out) and hasattr(textwrap, name(out)), out


def test_alternatives_decode_under_their_own_fork_of_the_constraints(engine: Engine) -> None:
    """Each alternative (the panel's drafts) writes a real member of textwrap."""
    engine.oracle.close()
    engine.oracle = MemberOracle()
    opts = CompletionOptions(max_tokens=8, multiline="never", oracle_budget_ms=10_000)
    req = CompletionRequest("file:///tmp/alts.py", TEXTWRAP, len(TEXTWRAP), opts, language="python")
    off = engine.complete(replace(req, options=replace(opts, members=False)), alternatives=4)
    invented = [a for a in off.alternatives if not hasattr(textwrap, name(a))]
    assert invented, off.alternatives  # the model's next likeliest first tokens invent some
    on = engine.complete(req, alternatives=4)
    assert on.alternatives
    for alt in [on.text, *on.alternatives]:
        member = alt.lstrip().split("(")[0]  # "textwrap. re" is textwrap.re
        assert member.isidentifier() and hasattr(textwrap, member), (on.text, on.alternatives)


TOKENIZER = """class Tokenizer:
    def __init__(self, text):
        self.text = text
        self.pos = 0
        self.tokens = []

    def _emit(self, kind, value):
        self.tokens.append((kind, value))

    def _advance(self, n):
        self.pos += n

    def run(self):
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch.isdigit():
                self."""
TOKENIZER_MEMBERS = {"text", "pos", "tokens", "_emit", "_advance", "run", *dir(object)}


def test_a_self_statement_that_uses_an_invented_member_is_decoded_again(engine: Engine) -> None:
    """``self.`` opening a statement may define a member: free while decoding; a use of
    a member that does not exist is decoded again with the members known."""
    engine.oracle.close()
    engine.oracle = MemberOracle()
    off = complete(engine, TOKENIZER, members=False, oracle_budget_ms=10_000)
    assert name(off) not in TOKENIZER_MEMBERS, off  # checked: "add_token(ch)"
    before = engine.totals.memberRedecodes
    on = complete(engine, TOKENIZER, oracle_budget_ms=10_000)
    assert name(on).split(".")[0] in TOKENIZER_MEMBERS, on
    assert engine.totals.memberRedecodes == before + 1


def test_a_header_written_at_the_end_of_a_line_takes_its_body(engine: Engine) -> None:
    """Line mode: a header alone breaks the file; with the syntax check on the
    suggestion goes on through the body's first line, and the file parses."""
    head, tail = "def total(values):\n    result = 0", "\n    return result\n"
    req = CompletionRequest("file:///tmp/hdr.py", head + tail, len(head), language="python")
    opts = CompletionOptions(max_tokens=32, members=False)
    off = engine.complete(replace(req, options=replace(opts, syntax=False))).text
    assert off.rstrip().endswith(":") and "\n" not in off.strip(), off  # checked: a for header
    on = engine.complete(replace(req, options=opts)).text
    assert on.startswith(off + "\n"), on
    ast.parse(head + on + tail)
