"""The member monitor on hand-made vocabularies, and inside the (speculative) decode loop."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_speculative import prompt_cache, spec

from completion.constraints import AllOf, TextPrefix, TokenTexts, new_bitmask, unpack
from completion.decode import generate, prefill
from completion.members import MemberContext, MemberMonitor, Names, Scan, site_at
from completion.verify import SpecStats

VOCAB = [
    "os", ".", "path", "pa", "th", "join", "joinpath", ".join", ".jo", "(", ")", "x",
    " ", "\n", "self", " =", '"', "1", "_", "jo", "(x", ".path", "#", ".p",
]  # fmt: skip
"""24 tokens, as many as the tiny random model's vocabulary."""

MEMBERS = {
    "os": {"path", "sep", "name"},
    "os.path": {"join", "exists", "pathsep"},
    "x": {"pa", "path"},
    "_": {"pa", "path"},
}
"""Receiver text -> its members (what the fake oracle knows); others: unknown."""
OBJECT_ONLY = {"_"}
"""Receivers the fake oracle knows only as ``object`` (``pa``, ``path``: its members)."""


class FakeOracle:
    """Answers from :data:`MEMBERS` by the receiver's text; records the queries."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.pending: set[str] = set()

    def __call__(self, text: str, offset: int, ask: bool) -> Names | bool | None:
        assert text[offset - 1] == "."
        receiver = re.search(r"[\w.]*$", text[: offset - 1]).group()  # type: ignore[union-attr]
        if receiver in self.pending and not ask:
            return False
        self.asked.append(receiver)
        names = MEMBERS.get(receiver)
        return Names(frozenset(names), receiver in OBJECT_ONLY) if names else None


def monitor(
    before: str = "", after: str = "", oracle: FakeOracle | None = None, vocab: list[str] = VOCAB
) -> MemberMonitor:
    texts = TokenTexts(vocab)
    ctx = MemberContext(
        before=before,
        after=after,
        python=True,
        in_code=True,
        lookup=oracle or FakeOracle(),
        encode=lambda s: [VOCAB.index(s)] if s in VOCAB else [],
    )
    return MemberMonitor(texts, ctx)


def run(m: MemberMonitor, *pieces: str) -> MemberMonitor:
    for piece in pieces:
        m.accept(VOCAB.index(piece))
    return m


def allowed(m: MemberMonitor) -> set[str]:
    return {VOCAB[t] for t in range(len(VOCAB)) if m.allows(t)}


def masked(m: MemberMonitor) -> set[str]:
    mask = new_bitmask(1, len(VOCAB))
    m.fill_mask(mask, 0)
    return {VOCAB[t] for t in unpack(mask, len(VOCAB))[0].nonzero().flatten().tolist()}


def test_a_name_after_the_dot_must_stay_a_member_or_a_beginning_of_one() -> None:
    m = run(monitor("import os\ny = "), "os", ".")
    ok = allowed(m)
    # "pa" and "path" begin or are members of os; "joinpath", "join", "x" are not.
    assert {"pa", "path"} <= ok and not {"join", "joinpath", "x", "jo", "th"} & ok
    # Tokens that are not names write no member: refused too (MGD's rule).
    assert not {"(", ")", " =", "(x", "1", "."} & ok
    run(m, "pa")
    ok = allowed(m)
    assert "th" in ok and "(" not in ok  # "pa" is no member of os: it must go on
    run(m, "th")
    ok = allowed(m)
    # "path" is a member: now anything that ends the name, and ".join" opens the next site.
    assert {"(", ")", ".", ".join", ".jo", ".p", " ="} <= ok
    assert "joinpath" not in ok and "x" not in ok  # os has no "pathjoinpath", "pathx"
    assert ".path" in ok  # "path" begins os.path's "pathsep"


def test_tokens_that_span_the_end_of_a_name_are_judged_whole() -> None:
    m = run(monitor("x = "), "x", ".", "jo")
    assert "(x" not in allowed(m)  # "jo" is no member of x
    m = run(monitor("x = "), "x", ".", "pa")
    assert {"(x", "th"} <= allowed(m)  # "pa" is a member of x, then "(" ends it; or "path"
    m = run(monitor("y = "), "os", ".", "pa")
    assert "(x" not in allowed(m) and "th" in allowed(m)  # os has "path", not "pa"


def test_merged_dot_tokens_are_checked_against_the_receiver() -> None:
    m = run(monitor("y = "), "os", ".path")
    assert {".join", ".jo", ".p", ".path"} <= allowed(m)  # join; "path" begins "pathsep"
    assert "joinpath" not in allowed(m)  # "pathjoinpath" is no member of os
    fresh = run(monitor("y = "), "os")
    assert ".path" in allowed(fresh) and ".join" not in allowed(fresh)


def test_mask_and_allows_agree_on_every_token_in_every_state() -> None:
    for pieces in (
        [],
        ["os"],
        ["os", "."],
        ["os", ".", "pa"],
        ["os", ".path"],
        ["os", ".path", ".jo"],
        ["x", ".", "path", "("],
        ['"', "os", "."],
        ["1", "."],
    ):
        m = run(monitor("y = "), *pieces)
        assert masked(m) == allowed(m), pieces


piece_lists = st.lists(st.sampled_from(VOCAB), max_size=8)


@settings(max_examples=150, deadline=None)
@given(pieces=piece_lists, before=st.sampled_from(["", "y = ", "os.", "x.pa", "self.", "# c\n"]))
def test_mask_and_allows_agree_hypothesis(pieces: list[str], before: str) -> None:
    m = run(monitor(before), *pieces)
    assert masked(m) == allowed(m)


def test_strings_comments_and_numbers_are_not_member_accesses() -> None:
    assert allowed(run(monitor("s = "), '"', "os", ".")) == set(VOCAB)
    assert allowed(run(monitor(""), "#", "os", ".")) == set(VOCAB)
    assert allowed(run(monitor("n = "), "1", ".")) == set(VOCAB)
    assert site_at("n = 1.5", 5) is None and site_at("a.b", 1) is not None
    state, dots = Scan().feed('x = "a.b" + y.z  # q.r', python=True)
    assert dots == [13] and state.open == "#"
    state, dots = Scan().feed("x = `a.${b}` // c.d\ne.f", python=False)
    assert dots == [21] and not state.open


def test_self_at_a_statement_start_may_create_a_member() -> None:
    m = run(monitor("    def f(self):\n        "), "self", ".")
    assert allowed(m) == set(VOCAB)  # self.anything = ... defines it


def test_unknown_receivers_and_late_answers_are_not_constrained() -> None:
    oracle = FakeOracle()
    m = run(monitor("z = ", oracle=oracle), "x", "_", ".")  # receiver x_ unknown
    assert allowed(m) == set(VOCAB)
    oracle.pending.add("os")
    m = run(monitor("z = ", oracle=oracle), "os", ".")
    assert m.allows(VOCAB.index("join"), ask=False)  # not known yet: not refused
    assert not m.allows(VOCAB.index("join"), ask=True)


def test_rollback_and_fork() -> None:
    m = run(monitor("y = "), "os", ".")
    before = allowed(m)
    twin = m.fork()
    run(m, "path", ".")
    assert allowed(m) != before
    m.rollback(2)
    assert allowed(m) == before == allowed(twin)
    run(twin, "pa")
    assert allowed(m) == before and allowed(twin) != before


def test_the_rest_of_the_only_member_left_is_forced() -> None:
    m = run(monitor("y = "), "os", ".path", ".jo")
    assert m.forced_tokens() == []  # "join" is left, but "in" is no token here
    m = run(monitor("y = "), "os", ".", "pa")
    assert m.forced_tokens() == [VOCAB.index("th")]
    m = run(monitor("y = "), "os", ".")
    assert m.forced_tokens() == []  # three members left


def test_review_cuts_a_finished_suggestion_before_an_invented_member() -> None:
    m = monitor("import os\nv = ")
    assert m.review("os.path.joinpath(a)") == len("os.path")
    assert m.review("os.path.join(a)") == len("os.path.join(a)")
    m = monitor("    def f(self):\n        ")
    assert m.review("self.x = 1\n        os.nope") == len("self.x = 1\n        os")


def test_a_receiver_known_only_as_object_is_free_until_the_review() -> None:
    """Narrowed after the access or not at all: its member must be narrowed on its line."""
    m = run(monitor("v = "), "_", ".")
    assert {"join", "jo", "th"} <= allowed(m) and {"join", "jo"} <= masked(m)
    m = monitor("def f(_: object):\n    return ")
    assert m.review("_.join(1)") == len("_")
    assert m.review("_.pa") == len("_.pa")  # one of object's members
    narrowed = "_.join if isinstance(_, str) else _"
    assert m.review(narrowed) == len(narrowed)
    assert m.review("_.join if isinstance(y, str) else _") == len("_")
    assert m.review("_.join\nisinstance(_, str)") == len("_")


def test_pieces_of_a_character_do_not_escape_an_unfinished_name() -> None:
    vocab = [*VOCAB[:-1], "\ufffd"]  # a byte of a multi-byte character (text "")
    m = run(monitor("y = ", vocab=vocab), "os", ".", "pa")
    byte = len(vocab) - 1
    assert not m.allows(byte)
    mask = new_bitmask(1, len(vocab))
    m.fill_mask(mask, 0)
    assert not unpack(mask, len(vocab))[0][byte]
    assert m.allows(VOCAB.index("th"))


def test_counts_refused_picks() -> None:
    m = run(monitor("y = "), "os", ".")
    m.allows(VOCAB.index("join"))
    m.allows(VOCAB.index("path"))
    m.allows(VOCAB.index("join"), ask=False)
    assert m.ctx.stats.memberMasked == 1


##### Inside the decode loop (tiny random model) #####

MODEL_VOCAB = len(VOCAB)


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama(MODEL_VOCAB, 512, 3)


def constrained_plain(model, prompt: list[int], n: int, make) -> list[int]:
    cache, logits = prompt_cache(model, prompt)
    return list(generate(model, cache, logits, len(prompt), n, constraint=make()))


def masked_reference(model, prompt: list[int], n: int, make) -> list[int]:
    """Plain greedy decoding with the whole mask applied at every step (no shortcut)."""
    cache, logits = prompt_cache(model, prompt)
    c, mask, out, pos = make(), new_bitmask(1, MODEL_VOCAB), [], len(prompt)
    for _ in range(n):
        c.fill_mask(mask, 0)
        allowed_ = unpack(mask, MODEL_VOCAB)[0]
        if not allowed_.any():
            allowed_[:] = True  # no token can go on: unconstrained (restrict's rule)
        tok = int(torch.argmax(logits.masked_fill(~allowed_, float("-inf"))))
        out.append(tok)
        c.accept(tok)
        logits = prefill(model, [tok], cache, pos)
        pos += 1
    return out


prompts = st.lists(st.integers(0, MODEL_VOCAB - 1), min_size=2, max_size=30)


@settings(max_examples=30, deadline=None)
@given(prompt=prompts, n=st.integers(1, 24), before=st.sampled_from(["y = os", "y = os.", "z = x"]))
def test_constrained_speculative_equals_constrained_plain(model, prompt, n, before) -> None:
    def make():
        return monitor(before)

    reference = masked_reference(model, prompt, n, make)
    assert constrained_plain(model, prompt, n, make) == reference
    out, _ = spec(model, prompt, n, [prompt[-4:] + reference], SpecStats(), constraint=make())
    assert out == reference
    assert len(out) == n


def test_the_monitor_combines_with_token_healing(model) -> None:
    texts = TokenTexts(VOCAB)

    def make():
        return AllOf([TextPrefix(texts, ".p"), monitor("y = os")])

    out = constrained_plain(model, [3, 4, 5, 6], 6, make)
    text = "".join(VOCAB[t] for t in out)
    assert text.startswith((".path", ".p")), text
