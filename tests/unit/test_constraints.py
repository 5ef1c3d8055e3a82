"""Constraints with hand-made vocabularies: what each allows, accept, rollback, fork."""

from __future__ import annotations

from completion.constraints import NoLeadingBreak, TokenTexts, new_bitmask, unpack

VOCAB = ["a", "\n", " \n", "b\n", " ", "x", "\r\n", "\n\n  ", "é", "\r", "  "]
BREAKING = {1, 2, 6, 7, 9}  # a line break before anything visible


def allowed(constraint: NoLeadingBreak) -> set[int]:
    mask = new_bitmask(1, len(VOCAB))
    constraint.fill_mask(mask, 0)
    return {i for i, ok in enumerate(unpack(mask, len(VOCAB))[0].tolist()) if ok}


def test_no_break_before_the_first_visible_character() -> None:
    c = NoLeadingBreak(TokenTexts(VOCAB))
    assert allowed(c) == set(range(len(VOCAB))) - BREAKING
    for token in BREAKING:
        assert not c.fork().accept(token)
    assert c.accept(4)  # a space: still nothing visible
    assert allowed(c) == set(range(len(VOCAB))) - BREAKING
    assert c.accept(3)  # "b\n": visible text, then the break that ends the line
    assert allowed(c) == set(range(len(VOCAB)))
    assert c.accept(1)


def test_healed_text_is_not_visible() -> None:
    c = NoLeadingBreak(TokenTexts(VOCAB), healed="  ")
    assert c.accept(10)  # re-creates the healed indentation
    assert allowed(c) == set(range(len(VOCAB))) - BREAKING
    assert c.accept(0)
    assert allowed(c) == set(range(len(VOCAB)))


def test_rollback_and_fork_restore_the_state() -> None:
    c = NoLeadingBreak(TokenTexts(VOCAB))
    assert c.accept(5)
    twin = c.fork()
    c.rollback(1)
    assert allowed(c) == set(range(len(VOCAB))) - BREAKING
    assert allowed(twin) == set(range(len(VOCAB)))
    assert twin.accepted == [5] and c.accepted == []
