"""Oracle tests for the PIE strategy: incremental must equal from-scratch where it can.

- With a one-layer model every key and value depends only on its token and position, so
  a PIE-updated cache must equal a fresh prefill exactly (to float tolerance).
- With deeper models layer 0 must still match; deeper layers drift (that is the
  approximation), and refreshing the stale tokens removes the drift.
- Rotation composes and inverts, and re-rotated keys equal keys computed at the new
  positions.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PhiConfig,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from cache import PromptCache, Rerotator, diff_ids, find_rotary, rerotation_support
from cache.alignment import force_encode_tail
from cache.growing import growing_cache
from cache.rope import STATIC_ROPE_TYPES, apply_rotation, rotate_half
from completion.decode import prefill


def tiny_llama(layers: int, rope_parameters: dict | None = None) -> LlamaForCausalLM:
    torch.manual_seed(layers)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_parameters=rope_parameters or {"rope_type": "default", "rope_theta": 10000.0},
    )
    return LlamaForCausalLM(config).eval()


def fresh(model, ids: list[int]) -> tuple[DynamicCache, torch.Tensor]:
    kv = DynamicCache(config=model.config)
    logits = prefill(model, ids, kv, 0)
    return kv, logits


def assert_keys_like_fresh(pc: PromptCache, kv: DynamicCache, upto: int) -> None:
    """The first ``upto`` cached keys equal a fresh prefill's, in every layer."""
    for got, want in zip(pc.kv.layers, kv.layers, strict=True):
        torch.testing.assert_close(
            got.keys[..., :upto, :], want.keys[..., :upto, :], atol=2e-5, rtol=1e-4
        )


def assert_like_fresh(pc: PromptCache, kv: DynamicCache, logits: torch.Tensor) -> None:
    """Every key, value and the last logits equal a fresh prefill's."""
    for got, want in zip(pc.kv.layers, kv.layers, strict=True):
        torch.testing.assert_close(got.keys, want.keys, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(got.values, want.values, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(pc.last_logits, logits, atol=1e-4, rtol=1e-4)


def pie_cache(model) -> PromptCache:
    # The engine's cache: appends in place, so these oracles also check that a PIE sync
    # never overwrites kept keys before copying them (cache/growing.py).
    return PromptCache(lambda: growing_cache(model.config))


def encoder(model):
    return lambda ids, kv, start: prefill(model, ids, kv, start, chunk=7)


def random_edit(rng: random.Random, ids: list[int], vocab: int) -> list[int]:
    out = list(ids)
    for _ in range(rng.randint(1, 3)):  # multi-place edits too
        kind = rng.choice(["insert", "delete", "replace"])
        at = rng.randrange(0, len(out) + 1)
        n = rng.randint(1, 6)
        if kind == "insert" or len(out) < 10:
            out[at:at] = [rng.randrange(vocab) for _ in range(n)]
        elif kind == "delete":
            del out[at : at + n]
        else:
            out[at : at + n] = [rng.randrange(vocab) for _ in range(rng.randint(1, 6))]
    return out or [1]


@pytest.mark.parametrize("seed", range(6))
def test_one_layer_pie_cache_equals_fresh_prefill(seed: int) -> None:
    model = tiny_llama(1)
    rot = Rerotator(find_rotary(model))
    rng = random.Random(seed)
    ids = [rng.randrange(97) for _ in range(rng.randint(20, 120))]
    pc = pie_cache(model)
    pc.sync(ids, encoder(model), "pie", rerotator=rot)
    for _ in range(8):
        ids = random_edit(rng, ids, 97)
        result = pc.sync(ids, encoder(model), "pie", rerotator=rot, tail=1)
        kv, logits = fresh(model, ids)
        assert pc.ids == ids
        assert pc.kv.get_seq_length() == len(ids)
        got, want = pc.kv.layers[0], kv.layers[0]
        torch.testing.assert_close(got.keys, want.keys, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(got.values, want.values, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(pc.last_logits, logits, atol=1e-4, rtol=1e-4)
        assert result.encoded + result.reused == len(ids)


@pytest.mark.parametrize("seed", range(4))
def test_deep_model_layer0_matches_and_refresh_removes_drift(seed: int) -> None:
    model = tiny_llama(3)
    rot = Rerotator(find_rotary(model))
    rng = random.Random(100 + seed)
    ids = [rng.randrange(97) for _ in range(80)]
    pc = pie_cache(model)
    pc.sync(ids, encoder(model), "pie", rerotator=rot)
    for _ in range(4):
        ids = random_edit(rng, ids, 97)
        pc.sync(ids, encoder(model), "pie", rerotator=rot, tail=1)
        kv, _ = fresh(model, ids)
        torch.testing.assert_close(pc.kv.layers[0].keys, kv.layers[0].keys, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(
            pc.kv.layers[0].values, kv.layers[0].values, atol=2e-5, rtol=1e-4
        )
    # Tokens before the first stale one are exact in every layer; a refresh makes all exact.
    first = pc.stale.find(1)
    assert first > 0  # these edits leave an exact head and a stale rest (checked just below)
    kv, logits = fresh(model, ids)
    assert_keys_like_fresh(pc, kv, first)
    pc.refresh(encoder(model))
    assert pc.stale_tokens == 0
    assert_like_fresh(pc, kv, logits)


def test_stale_flags_mark_kept_tokens_after_the_first_change() -> None:
    model = tiny_llama(2)
    rot = Rerotator(find_rotary(model))
    ids = list(range(1, 61))
    pc = pie_cache(model)
    pc.sync(ids, encoder(model), "pie", rerotator=rot)
    assert pc.stale_tokens == 0
    new = ids[:20] + [90, 91] + ids[20:]  # insert 2 tokens at 20
    result = pc.sync(new, encoder(model), "pie", rerotator=rot, tail=4)
    assert result.encoded == 2 + 4
    assert list(pc.stale[:22]) == [0] * 22
    assert list(pc.stale[22:-4]) == [1] * (len(new) - 26)
    assert list(pc.stale[-4:]) == [0] * 4
    assert result.shifted == len(new) - 22 - 4


class Stop(Exception):
    """Raised by :func:`failing`: an encoder cancelled before it feeds anything."""


def failing(ids: list[int], kv: DynamicCache, start: int) -> torch.Tensor:
    raise Stop


def stale_after_insert() -> PromptCache:
    """A cache of 60 tokens after one token was inserted at the start: stale but for the
    inserted token and the last one."""
    model = tiny_llama(2)
    rot = Rerotator(find_rotary(model))
    ids = list(range(1, 61))
    pc = pie_cache(model)
    pc.sync(ids, encoder(model), "pie", rerotator=rot)
    pc.sync([5, *ids], encoder(model), "pie", rerotator=rot, tail=1)
    return pc


def test_refresh_cancelled_leaves_cache_untouched() -> None:
    pc = stale_after_insert()
    before = (list(pc.ids), pc.kv, bytearray(pc.stale))
    with pytest.raises(Stop):
        pc.refresh(failing)
    assert (pc.ids, pc.kv, pc.stale) == before


def test_cancelled_pie_sync_leaves_consistent_state() -> None:
    model = tiny_llama(1)
    rot = Rerotator(find_rotary(model))
    ids = list(range(1, 80))
    pc = pie_cache(model)
    pc.sync(ids, encoder(model), "pie", rerotator=rot)
    calls = {"n": 0}

    def flaky(ids_, kv, start):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return prefill(model, ids_, kv, start)

    edited = [*ids[:10], 3, 3, 3, *ids[10:50], 4, 4, *ids[50:]]
    with pytest.raises(KeyboardInterrupt):
        pc.sync(edited, flaky, "pie", rerotator=rot, tail=1)
    assert pc.kv.get_seq_length() >= len(pc.ids)
    pc.sync(edited, encoder(model), "pie", rerotator=rot, tail=1)
    kv, logits = fresh(model, edited)
    torch.testing.assert_close(pc.kv.layers[0].keys, kv.layers[0].keys, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(pc.last_logits, logits, atol=1e-4, rtol=1e-4)


##### Rotation maths #####


@given(
    a=st.integers(-600, 600),
    b=st.integers(-600, 600),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_rotation_composes_and_inverts(a: int, b: int, seed: int) -> None:
    model = tiny_llama(1)
    rot = Rerotator(find_rotary(model))
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(1, 2, 5, 16, generator=g)
    torch.testing.assert_close(
        rot.rotate(rot.rotate(k, a), b), rot.rotate(k, a + b), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(rot.rotate(rot.rotate(k, a), -a), k, atol=1e-4, rtol=1e-4)
    assert rot.rotate(k, 0) is k


STATIC_ROPES = [
    {"rope_type": "default", "rope_theta": 10000.0},
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0},
    {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256,
    },
    {
        "rope_type": "yarn",
        "rope_theta": 10000.0,
        "factor": 4.0,
        "original_max_position_embeddings": 256,
    },
    {"rope_type": "proportional", "rope_theta": 10000.0},
    {"rope_type": "proportional", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
]


def test_every_static_rope_type_is_proven() -> None:
    """A type joins STATIC_ROPE_TYPES only with a case in the equality test below."""
    assert {r["rope_type"] for r in STATIC_ROPES} == STATIC_ROPE_TYPES


def shifted_keys(model, rot: Rerotator, ids: list[int], start: int, d: int):
    """Layer-0 keys of ``ids`` prefilled at ``start`` then moved by ``d``, and at ``start + d``."""
    kv0 = DynamicCache(config=model.config)
    prefill(model, ids, kv0, start)
    kv1 = DynamicCache(config=model.config)
    prefill(model, ids, kv1, start + d)  # the same tokens at the new place
    return rot.rotate(kv0.layers[0].keys, d), kv1.layers[0].keys


@pytest.mark.parametrize("d", [37, 5, -20])
@pytest.mark.parametrize("rope", STATIC_ROPES, ids=lambda r: "-".join(map(str, r.values())))
def test_rerotated_keys_equal_keys_at_new_positions(rope: dict, d: int) -> None:
    """Shift a whole sequence by d: re-rotated layer-0 keys equal a prefill at the new place."""
    model = tiny_llama(1, rope)
    ok, why = rerotation_support(model.config)
    assert ok, why
    rot = Rerotator(find_rotary(model))
    moved, want = shifted_keys(model, rot, list(range(3, 40)), 20, d)
    torch.testing.assert_close(moved, want, atol=1e-4, rtol=1e-4)


def longrope_phi3() -> Phi3ForCausalLM:
    """Tiny Phi-3 with LongRoPE: short factors up to 32 positions, long ones past them."""
    torch.manual_seed(1)
    config = Phi3Config(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        max_position_embeddings=128,
        original_max_position_embeddings=32,  # where Phi-3 keeps it (it wins over the dict)
        rope_parameters={
            "rope_type": "longrope",
            "rope_theta": 10000.0,
            "short_factor": [1.0] * 8,
            "long_factor": [4.0] * 8,
        },
    )
    return Phi3ForCausalLM(config).eval()


def dynamic_llama() -> LlamaForCausalLM:
    """Tiny Llama with dynamic NTK scaling past 32 positions."""
    torch.manual_seed(1)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        rope_parameters={"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0},
    )
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("make", [longrope_phi3, dynamic_llama], ids=["longrope", "dynamic"])
def test_length_dependent_rope_is_refused_because_rerotation_is_wrong(make) -> None:
    """Keys cached by a long pass, moved by a small delta, are not keys at the new place:
    transformers picks the table by the pass's length, so the refusal is needed."""
    model = make()
    rope_type = model.config.rope_parameters["rope_type"]
    ok, why = rerotation_support(model.config)
    assert not ok and repr(rope_type) in why and "sequence length" in why
    moved, want = shifted_keys(model, Rerotator(find_rotary(model)), list(range(3, 40)), 0, 5)
    assert (moved - want).abs().max() > 0.1


@pytest.mark.parametrize(
    "config",
    [
        LlamaConfig(rope_parameters={"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}),
        SimpleNamespace(rope_parameters={"rope_type": "longrope"}),
        SimpleNamespace(rope_scaling={"type": "dynamic", "factor": 2.0}),
        SimpleNamespace(rope_parameters={"rope_type": "ntk_alpha"}),
        SimpleNamespace(rope_parameters={"rope_type": "xdrope"}),
    ],
    ids=["dynamic", "longrope", "legacy-dynamic", "ntk_alpha", "unknown"],
)
def test_non_static_rope_types_are_refused_naming_the_type(config) -> None:
    params = getattr(config, "rope_parameters", None) or config.rope_scaling
    rope_type = params.get("rope_type", params.get("type"))
    ok, why = rerotation_support(config)
    assert not ok and why.startswith(f"rope type {rope_type!r} ")


def test_apply_rotation_is_norm_preserving_and_rotate_half() -> None:
    x = torch.arange(8, dtype=torch.float32).view(1, 1, 1, 8)
    assert rotate_half(x).flatten().tolist() == [-4, -5, -6, -7, 0, 1, 2, 3]
    k = torch.randn(1, 2, 3, 8)
    theta = torch.rand(3, 4)
    cos = torch.cat([theta.cos(), theta.cos()], -1)
    sin = torch.cat([theta.sin(), theta.sin()], -1)
    out = apply_rotation(k, cos, sin)
    torch.testing.assert_close(out.norm(dim=-1), k.norm(dim=-1))


def test_unsupported_rope_and_sliding_window_fall_back() -> None:
    sw = Qwen2Config(
        use_sliding_window=True, sliding_window=64, num_hidden_layers=2, max_window_layers=0
    )
    assert rerotation_support(sw)[0] is False
    plain = Qwen2Config(num_hidden_layers=2)
    assert rerotation_support(plain)[0] is True
    # transformers 5 keeps partial_rotary_factor in rope_parameters only, for some models
    partial = PhiConfig(partial_rotary_factor=0.5)
    assert rerotation_support(partial) == (False, "partial rotary embedding")
    assert (
        find_rotary(
            Qwen2ForCausalLM(
                Qwen2Config(
                    num_hidden_layers=1,
                    hidden_size=32,
                    intermediate_size=32,
                    num_attention_heads=2,
                    num_key_value_heads=1,
                    vocab_size=50,
                )
            )
        )
        is not None
    )


##### Diff #####


@given(
    old=st.lists(st.integers(0, 9), max_size=60),
    new=st.lists(st.integers(0, 9), min_size=1, max_size=60),
    tail=st.integers(0, 10),
)
@settings(max_examples=200, deadline=None)
def test_diff_covers_new_and_kept_runs_match(old: list[int], new: list[int], tail: int) -> None:
    segs = force_encode_tail(diff_ids(old, new, min_keep=2), len(new) - tail, len(new))
    pos = 0
    for seg in segs:
        assert seg.new_start == pos and len(seg) > 0
        if seg.keep:
            assert new[seg.new_start : seg.new_end] == old[seg.old_start : seg.old_start + len(seg)]
        pos = seg.new_end
    assert pos == len(new)
    if tail:
        assert not segs[-1].keep and len(segs[-1]) >= min(tail, len(new))


def test_window_slide_is_a_pure_rerotation_not_staleness() -> None:
    model = tiny_llama(1)
    rot = Rerotator(find_rotary(model))
    ids = list(range(1, 81))
    pc = pie_cache(model)
    pc.sync(ids, encoder(model), "pie", rerotator=rot)
    slid = ids[20:]
    result = pc.sync(slid, encoder(model), "pie", rerotator=rot, tail=1)
    assert result.encoded == 1 and result.shifted == len(slid) - 1
    assert pc.stale_tokens == 0
    kv, _ = fresh(model, slid)
    torch.testing.assert_close(pc.kv.layers[0].keys, kv.layers[0].keys, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_zero_stale_budget_is_exact_and_budget_bounds_staleness(seed: int) -> None:
    model = tiny_llama(3)
    rot = Rerotator(find_rotary(model))
    rng = random.Random(7 + seed)
    ids = [rng.randrange(97) for _ in range(90)]
    exact, bounded = pie_cache(model), pie_cache(model)
    for pc in (exact, bounded):
        pc.sync(ids, encoder(model), "pie", rerotator=rot)
    for _ in range(4):
        ids = random_edit(rng, ids, 97)
        exact.sync(ids, encoder(model), "pie", rerotator=rot, stale_budget=0)
        bounded.sync(ids, encoder(model), "pie", rerotator=rot, stale_budget=10)
        assert exact.stale_tokens == 0 and bounded.stale_tokens <= 10
        kv, logits = fresh(model, ids)
        for got, want in zip(exact.kv.layers, kv.layers, strict=True):
            torch.testing.assert_close(got.keys, want.keys, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(exact.last_logits, logits, atol=1e-4, rtol=1e-4)


def test_memory_budget_evicts_least_recently_used() -> None:
    from cache import CacheStore

    model = tiny_llama(1)
    store = CacheStore(lambda: DynamicCache(config=model.config), max_entries=10)
    for key in ("a", "b", "c"):
        store.get(key).sync(list(range(1, 50)), encoder(model), "prefix")
    one = store.peek("a").nbytes()
    assert one > 0 and store.nbytes() == 3 * one
    store.max_bytes = 2 * one + 1
    store.get("a")  # most recently used now; "b" is the oldest
    assert store.peek("b") is None and store.peek("a") is not None and store.peek("c") is not None
    assert store.evictions == 1
    store.discard("a")
    assert store.nbytes() == one


@pytest.mark.parametrize("limit", [1, 7, 25, 1000])
def test_refresh_in_steps_ends_equal_to_from_scratch(limit: int) -> None:
    # Oracle: steps of any size from the first stale token, resumed until nothing is
    # stale, give a fresh prefill's keys, values and logits; after each step the tokens
    # before the first stale one are exact.
    model = tiny_llama(3)
    rot = Rerotator(find_rotary(model))
    rng = random.Random(7)
    ids = [rng.randrange(97) for _ in range(90)]
    pc = pie_cache(model)
    pc.sync(ids, encoder(model), "pie", rerotator=rot)
    for _ in range(3):
        ids = random_edit(rng, ids, 97)
        pc.sync(ids, encoder(model), "pie", rerotator=rot, tail=1)
    kv, logits = fresh(model, ids)
    assert pc.stale_tokens > limit or limit == 1000
    steps = 0
    while pc.stale_tokens:
        first = pc.stale.find(1)
        n = pc.refresh_some(encoder(model), limit)
        steps += 1
        assert 0 < n <= limit and pc.ids == ids and pc.kv.get_seq_length() == len(ids)
        exact = pc.stale.find(1) if pc.stale_tokens else len(ids)
        assert exact == first + n
        assert_keys_like_fresh(pc, kv, exact)
    assert steps >= (2 if limit < 25 else 1)
    assert_like_fresh(pc, kv, logits)


def test_a_cancelled_refresh_step_keeps_the_cache_whole_and_stale() -> None:
    pc = stale_after_insert()
    ids_before, stale_before = list(pc.ids), bytearray(pc.stale)
    tail = pc.kv.layers[1].keys[..., 40:, :].clone()
    with pytest.raises(Stop):
        pc.refresh_some(failing, 8)
    assert (pc.ids, pc.stale) == (ids_before, stale_before)
    assert pc.kv.get_seq_length() == len(ids_before)
    assert torch.equal(pc.kv.layers[1].keys[..., 40:, :], tail)
