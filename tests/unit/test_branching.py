"""Drafts decoded as one batch on a shared prompt cache (completion/branching.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from cache.growing import growing_cache
from completion import branching, fastpath
from completion.branching import Draft, decode_drafts, picks, shared_prefix_attention
from completion.cancel import Cancelled
from completion.decode import prefill
from completion.verify import forward_all

VOCAB = 48
PROMPT = [3, 17, 5, 9, 22, 41, 8, 30, 2, 11, 6, 19] * 3


@pytest.fixture(scope="module")
def model(tiny_llama) -> Any:
    m = tiny_llama(VOCAB, 512, 7)
    with torch.no_grad():
        m.lm_head.weight.mul_(16)  # peaked enough that second choices pass the fork floor
    fastpath.install(m)
    assert branching.supported(m)
    return m


def prompt_cache(model: Any) -> tuple[Any, torch.Tensor]:
    cache = growing_cache(model.config)
    return cache, prefill(model, PROMPT, cache, 0)


def plain(model: Any, forced: list[int], max_tokens: int, stop_ids: set[int]) -> list[int]:
    """``forced`` fed one token at a time, then greedy one-token steps (plain decoding)."""
    cache, logits = prompt_cache(model)
    out: list[int] = []
    while len(out) < max_tokens:
        token = forced[len(out)] if len(out) < len(forced) else int(logits.argmax())
        if token in stop_ids:
            break
        out.append(token)
        logits = forward_all(model, [token], cache, len(PROMPT) + len(out) - 1)[0]
    return out


def test_the_attention_over_a_shared_prefix_equals_attention_over_each_rows_keys() -> None:
    gen = torch.Generator().manual_seed(0)
    rows, heads, kv_heads, dim, prefix, own = 3, 4, 2, 16, 50, 5
    query = torch.randn(rows, heads, 1, dim, generator=gen)
    pk, pv = (torch.randn(1, kv_heads, prefix, dim, generator=gen) for _ in range(2))
    ok, ov = (torch.randn(rows, kv_heads, own, dim, generator=gen) for _ in range(2))
    got = shared_prefix_attention(query, pk, pv, ok, ov, 0.25)
    keys = torch.cat([pk.expand(rows, -1, -1, -1), ok], dim=2).repeat_interleave(2, dim=1)
    values = torch.cat([pv.expand(rows, -1, -1, -1), ov], dim=2).repeat_interleave(2, dim=1)
    expected = F.scaled_dot_product_attention(query, keys, values, scale=0.25)
    torch.testing.assert_close(got, expected.transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_rows_fork_on_likely_second_choices_while_there_is_room() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.9, 0.04, 0.06], [0.6, 0.1, 0.3]])
    logprobs = probs.log()
    chosen = picks(logprobs, room=1)
    assert [(p.row, p.token, p.fork) for p in chosen] == [
        (0, 0, False),
        (0, 1, True),
        (1, 0, False),
        (2, 0, False),
    ]
    chosen = picks(logprobs, room=5)
    assert [(p.row, p.token) for p in chosen if p.fork] == [(0, 1), (1, 2), (2, 2)]
    assert not any(p.fork for p in picks(logprobs, room=0))
    assert math.isclose(chosen[0].logprob, math.log(0.5), rel_tol=1e-6)


def test_the_greedy_draft_is_plain_greedy_decoding_and_each_fork_follows_plain_decoding(
    model: Any,
) -> None:
    stop = {1}
    cache, logits = prompt_cache(model)
    drafts = decode_drafts(model, cache, logits, count=5, max_tokens=12, stop_ids=stop).drafts
    assert len(drafts) == 5 and drafts[0].branched_at == -1
    assert drafts[0].ids == plain(model, [], 12, stop)
    for draft in drafts[1:]:
        at = draft.branched_at
        assert at >= 0
        # Up to its fork a row is its parent; the fork is plain decoding's second choice
        # there; after it, plain greedy decoding of what it forced.
        assert draft.ids == plain(model, draft.ids[: at + 1], 12, stop)
        forced_logits = prompt_cache_logits_after(model, draft.ids[:at])
        assert draft.ids[at] == int(torch.topk(forced_logits, 2).indices[1])
    assert len({tuple(d.ids) for d in drafts}) == 5


def prompt_cache_logits_after(model: Any, ids: list[int]) -> torch.Tensor:
    cache, logits = prompt_cache(model)
    for i, token in enumerate(ids):
        logits = forward_all(model, [token], cache, len(PROMPT) + i)[0]
    return logits


def test_drafts_never_copy_or_write_the_prompt_cache(model: Any) -> None:
    cache, logits = prompt_cache(model)
    before = [(layer.keys.data_ptr(), layer.keys.clone()) for layer in cache.layers]
    decode_drafts(model, cache, logits, count=4, max_tokens=8, stop_ids=[])
    assert cache.get_seq_length() == len(PROMPT)
    for layer, (ptr, keys) in zip(cache.layers, before, strict=True):
        assert layer.keys.data_ptr() == ptr and torch.equal(layer.keys, keys)


def test_a_cancel_mid_batch_leaves_the_prompt_cache_as_it_was(model: Any) -> None:
    cache, logits = prompt_cache(model)
    keys = [layer.keys.clone() for layer in cache.layers]
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        decode_drafts(model, cache, logits, 4, 10, [], check=check)
    assert cache.get_seq_length() == len(PROMPT)
    assert all(torch.equal(x.keys, k) for x, k in zip(cache.layers, keys, strict=True))
    again = decode_drafts(model, cache, logits, 4, 10, []).drafts
    assert again[0].ids == plain(model, [], 10, set())


def test_a_stop_rule_ends_a_draft_with_its_token_and_a_stop_token_without_it(model: Any) -> None:
    cache, logits = prompt_cache(model)
    greedy = plain(model, [], 6, set())
    drafts = decode_drafts(model, cache, logits, 1, 6, [], stops=lambda ids: len(ids) == 3).drafts
    assert drafts == [Draft(greedy[:3], drafts[0].logprob, True, -1)]
    drafts = decode_drafts(model, cache, logits, 1, 6, [greedy[2]]).drafts
    assert drafts[0].ids == greedy[:2] and drafts[0].stopped
    drafts = decode_drafts(model, cache, logits, 1, 6, []).drafts
    assert drafts[0].ids == greedy and not drafts[0].stopped


def test_in_place_the_greedy_row_computes_plain_decodings_logits_bit_for_bit() -> None:
    # On a row-exact model (low-bit weights) the greedy row decodes in the document's
    # cache as one-token steps do: its logits can stand for plain decoding's.
    from tests.unit.test_lowbit import cached, row_exact_model

    model = row_exact_model("int4")
    prompt = torch.randint(0, 64, (1100,)).tolist()
    with torch.inference_mode():
        cache = cached(model, prompt)
        last = prefill(model, [7], cache, 1100)
        steps, token = [], int(last.argmax())
        for i in range(6):
            steps.append(forward_all(model, [token], cache, 1101 + i)[0])
            token = int(steps[-1].argmax())
        cache.crop(-6)
        batch = decode_drafts(model, cache, last, 4, 7, [], greedy_in_place=True)
    greedy = batch.drafts[0]
    assert greedy.branched_at == -1 and len(batch.greedy_logits) == 6
    assert all(torch.equal(a, b) for a, b in zip(batch.greedy_logits, steps, strict=True))
    assert cache.get_seq_length() == 1101 + 6  # the fed greedy tokens; the caller crops


def test_a_tie_goes_to_the_token_plain_decoding_picks() -> None:
    logprobs = torch.tensor([[-1.0, -0.5, -0.5, -3.0]])
    chosen = picks(logprobs, room=1, floor=0.01)
    assert [(p.token, p.fork) for p in chosen] == [(int(logprobs.argmax()), False), (2, True)]


def test_other_rows_end_soon_after_the_greedy_row(model: Any) -> None:
    cache, logits = prompt_cache(model)
    greedy = plain(model, [], 3, set())
    drafts = decode_drafts(model, cache, logits, 5, 30, [greedy[2]]).drafts
    assert drafts[0].ids == greedy[:2] and len(drafts) > 1
    assert all(len(d.ids) <= 2 + branching.MIN_OVERRUN for d in drafts[1:])
    assert any(len(d.ids) == 2 + branching.MIN_OVERRUN and not d.stopped for d in drafts[1:])
