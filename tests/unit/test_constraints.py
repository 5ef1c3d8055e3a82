"""Constraints with hand-made vocabularies: what each allows, accept, rollback, fork."""

from __future__ import annotations

import torch

from completion.constraints import (
    TOP_CHECKED,
    ForbidTokens,
    NoLeadingBreak,
    TokenTexts,
    new_bitmask,
    restrict,
    unpack,
)

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


class CountingForbid(ForbidTokens):
    """ForbidTokens that counts its whole masks, and refuses ``unasked`` without an oracle."""

    def __init__(self, tokens: set[int], unasked: set[int] = frozenset()) -> None:
        super().__init__(tokens)
        self.unasked = set(unasked)
        self.masks = 0

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        self.masks += 1
        super().fill_mask(bitmask, row)

    def allows(self, token: int, ask: bool = True) -> bool:
        return super().allows(token) and (ask or token not in self.unasked)


def masked_pick(logits: torch.Tensor, refused: set[int]) -> int:
    full = logits.clone()
    full[sorted(refused)] = float("-inf")
    return int(full.argmax())


def test_a_greedy_pick_refused_takes_the_best_allowed_without_a_whole_mask() -> None:
    logits = torch.tensor([6.5, 9.0, 8.0, 7.0, 1.0, 6.0, 0.5, 0.2, 0.1, 3.0, 2.0])
    c = CountingForbid({1, 2}, unasked={0})  # 3 is the pick, 5 next; 0 needs an oracle
    out = restrict(logits, c, new_bitmask(1, 11), greedy=True, margin=True)
    assert int(out.argmax()) == masked_pick(logits, {1, 2}) == 3 and c.masks == 0
    assert out[5] == 6.0 and out[0] == float("-inf")  # runner-up: 5; 0 is not counted
    assert out[1] == out[2] == float("-inf")
    plain = restrict(logits, c, new_bitmask(1, 11), greedy=True, margin=False)
    assert int(plain.argmax()) == 3 and plain[0] == 6.5


def test_a_whole_mask_when_no_top_pick_is_allowed_or_when_sampling() -> None:
    logits = torch.arange(100, dtype=torch.float32)
    c = CountingForbid(set(range(100 - TOP_CHECKED, 100)))  # the top ones all refused
    out = restrict(logits, c, new_bitmask(1, 100), greedy=True, margin=True)
    assert int(out.argmax()) == 99 - TOP_CHECKED and c.masks == 1
    assert torch.isinf(out[100 - TOP_CHECKED :]).all()
    sampled = restrict(
        logits, CountingForbid({99}), new_bitmask(1, 100), greedy=False, margin=False
    )
    assert torch.isinf(sampled[99]) and int(sampled.argmax()) == 98


def test_a_healed_line_break_is_re_created_but_none_after_it() -> None:
    # A word alone on its line is healed with the break before it: "\n  x".
    vocab = ["\n", "\n  ", "\n  x", "x", "\n  x\n", "\n\n", " ", "y"]
    c = NoLeadingBreak(TokenTexts(vocab), healed="\n  x")

    def agreed() -> set[int]:
        mask = new_bitmask(1, len(vocab))
        c.fill_mask(mask, 0)
        by_mask = {i for i, ok in enumerate(unpack(mask, len(vocab))[0].tolist()) if ok}
        assert by_mask == {i for i in range(len(vocab)) if c.allows(i)}
        return by_mask

    assert agreed() == {0, 1, 2, 3, 6, 7}  # not "\n  x\n" (a break past it), not "\n\n"
    assert c.accept(1)  # "\n  "
    assert agreed() == {3, 6, 7}  # "x" left: a new break is refused
    assert c.accept(3)
    assert agreed() == {3, 6, 7}  # all out, nothing visible past it yet: no break
