"""Prompt caches and the decode loop, on a tiny random Llama built in code."""

from __future__ import annotations

import random
import time

import pytest
import torch
from transformers import DynamicCache

from cache import CacheStore, PromptCache, common_prefix
from cache.growing import MIN_ROOM, GrowingLayer, growing_cache
from cache.prompt_cache import truncate
from completion.decode import decode_one_token, forward, generate, prefill, sample

VOCAB = 64
ATOL = 1e-4


@pytest.fixture(scope="module")
def model(tiny_llama):
    return tiny_llama(VOCAB, 256, 1234)


@pytest.fixture(scope="module")
def config(model):
    return model.config


@pytest.fixture(params=["growing", "dynamic"])
def make_cache(config, request):
    # The engine's cache (appends in place) and the library's (appends by torch.cat).
    if request.param == "growing":
        return lambda: growing_cache(config)
    return lambda: DynamicCache(config=config)


@pytest.fixture
def encode(model):
    def enc(ids, kv, start):
        return prefill(model, ids, kv, start, chunk=16)

    return enc


def fresh_logits(model, config, ids):
    kv = DynamicCache(config=config)
    logits = prefill(model, ids, kv, 0)
    assert kv.get_seq_length() == len(ids)
    return logits


def expected_reuse(old, new, strategy, had_cache):
    if strategy == "recompute" or not had_cache:
        return 0
    keep = common_prefix(old, new)
    if keep == len(new) == len(old):
        return keep
    return min(keep, len(new) - 1)


def random_change(rng: random.Random, ids: list[int]) -> list[int]:
    op = rng.choice(["append", "truncate", "middle", "insert", "delete", "same", "first"])
    ids = list(ids)
    if op == "append":
        ids += [rng.randrange(VOCAB) for _ in range(rng.randint(1, 12))]
    elif op == "truncate" and len(ids) > 1:
        ids = ids[: rng.randint(1, len(ids) - 1)]
    elif op == "middle":
        i = rng.randrange(len(ids))
        ids[i] = (ids[i] + rng.randint(1, VOCAB - 1)) % VOCAB
    elif op == "insert":
        i = rng.randrange(len(ids) + 1)
        ids[i:i] = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 5))]
    elif op == "delete" and len(ids) > 2:
        i = rng.randrange(len(ids) - 1)
        del ids[i : i + rng.randint(1, 3)]
    elif op == "first":
        ids[0] = (ids[0] + 1) % VOCAB
    return ids[:200] or [1]


def test_common_prefix():
    assert common_prefix([], []) == 0
    assert common_prefix([1, 2, 3], [1, 2, 3]) == 3
    assert common_prefix([1, 2, 3], [1, 2]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([1, 2, 3], [1, 9, 3]) == 1
    assert common_prefix([0], [1]) == 0


def test_chunked_prefill_matches_single_forward(model, config):
    ids = [random.Random(0).randrange(VOCAB) for _ in range(40)]
    kv = DynamicCache(config=config)
    chunked = prefill(model, ids, kv, 0, chunk=7)
    assert kv.get_seq_length() == len(ids)
    kv2 = DynamicCache(config=config)
    whole = forward(model, ids, kv2, 0)
    assert chunked.shape == (VOCAB,)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, whole, atol=ATOL, rtol=0)
    with pytest.raises(ValueError):
        prefill(model, [], kv, 0)


def test_prefill_check_can_cancel(model, config):
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prefill(model, list(range(20)), DynamicCache(config=config), 0, check=check, chunk=8)
    assert len(calls) == 2


def test_truncate(model, config):
    kv = DynamicCache(config=config)
    prefill(model, list(range(10)), kv, 0)
    truncate(kv, 12)
    assert kv.get_seq_length() == 10
    truncate(kv, 10)
    assert kv.get_seq_length() == 10
    truncate(kv, 4)
    assert kv.get_seq_length() == 4


@pytest.mark.parametrize("strategy", ["prefix", "recompute"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sync_matches_fresh_prefill(model, config, make_cache, encode, strategy, seed):
    rng = random.Random(seed)
    pc = PromptCache(make_cache)
    ids = [rng.randrange(VOCAB) for _ in range(rng.randint(1, 30))]
    previous: list[int] = []
    for _ in range(8):
        had_cache = pc.kv is not None
        t0 = time.perf_counter()
        result = pc.sync(ids, encode, strategy)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        assert result.reused == expected_reuse(previous, ids, strategy, had_cache)
        assert result.encoded == len(ids) - result.reused
        assert 0 < result.ms <= elapsed_ms  # the sync's own time, in milliseconds
        assert pc.ids == ids
        assert len(pc) == len(ids)
        assert pc.kv.get_seq_length() == len(ids)
        assert pc.last_logits is not None
        torch.testing.assert_close(
            pc.last_logits, fresh_logits(model, config, ids), atol=ATOL, rtol=0
        )
        previous = ids
        ids = random_change(rng, ids)


def test_prefix_reuse_examples(model, config, make_cache, encode):
    pc = PromptCache(make_cache)
    base = list(range(1, 21))
    assert pc.sync(base, encode, "prefix").reused == 0
    # Same ids: nothing to do.
    result = pc.sync(list(base), encode, "prefix")
    assert (result.reused, result.encoded) == (20, 0)
    # Append.
    assert pc.sync([*base, 30, 31], encode, "prefix").reused == 20
    # Truncate: the last kept token is re-encoded to get fresh logits.
    result = pc.sync(base[:10], encode, "prefix")
    assert (result.reused, result.encoded) == (9, 1)
    assert pc.kv.get_seq_length() == 10
    torch.testing.assert_close(
        pc.last_logits, fresh_logits(model, config, base[:10]), atol=ATOL, rtol=0
    )
    # Change in the middle.
    changed = [*base[:4], 60, *base[5:10]]
    result = pc.sync(changed, encode, "prefix")
    assert (result.reused, result.encoded) == (4, 6)
    # Change of the first token: start over.
    result = pc.sync([7, *changed[1:]], encode, "prefix")
    assert result.reused == 0
    torch.testing.assert_close(
        pc.last_logits, fresh_logits(model, config, [7, *changed[1:]]), atol=ATOL, rtol=0
    )


def test_recompute_never_reuses(make_cache, encode):
    pc = PromptCache(make_cache)
    ids = list(range(10))
    pc.sync(ids, encode, "recompute")
    result = pc.sync(ids, encode, "recompute")
    assert (result.reused, result.encoded) == (0, 10)
    assert pc.kv.get_seq_length() == 10


def test_strategy_switch(model, config, make_cache, encode):
    pc = PromptCache(make_cache)
    ids = list(range(12))
    pc.sync(ids, encode, "recompute")
    result = pc.sync([*ids, 5], encode, "prefix")
    assert result.reused == 12
    torch.testing.assert_close(
        pc.last_logits, fresh_logits(model, config, [*ids, 5]), atol=ATOL, rtol=0
    )


def test_sync_empty_prompt_raises(make_cache, encode):
    pc = PromptCache(make_cache)
    with pytest.raises(ValueError):
        pc.sync([], encode, "prefix")


def test_failed_encode_then_recovers(model, config, make_cache, encode):
    pc = PromptCache(make_cache)
    ids = list(range(20))
    pc.sync(ids, encode, "prefix")

    def failing(new_ids, kv, start):
        prefill(model, new_ids[:3], kv, start)  # part of the work, then cancelled
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        pc.sync([*ids, 40, 41, 42, 43, 44], failing, "prefix")
    assert pc.last_logits is None
    new = [*ids, 40, 41, 42, 43, 44]
    pc.sync(new, encode, "prefix")
    assert pc.kv.get_seq_length() == len(new)
    torch.testing.assert_close(pc.last_logits, fresh_logits(model, config, new), atol=ATOL, rtol=0)


##### session #####


def feed_tokens(model, pc, tokens):
    with pc.session() as kv:
        assert kv is pc.kv
        position = len(pc.ids)
        for token in tokens:
            decode_one_token(model, token, kv, position)
            position += 1
        assert kv.get_seq_length() == len(pc.ids) + len(tokens)


def test_session_crops_generated_tokens(model, config, make_cache, encode):
    pc = PromptCache(make_cache)
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    pc.sync(ids, encode, "prefix")
    logits = pc.last_logits.clone()
    feed_tokens(model, pc, [7, 8, 9, 10])
    assert pc.kv.get_seq_length() == len(ids)
    assert pc.ids == ids
    result = pc.sync(list(ids), encode, "prefix")
    assert (result.reused, result.encoded) == (len(ids), 0)
    torch.testing.assert_close(pc.last_logits, logits, atol=0, rtol=0)
    # The generated keys/values are really gone: extending gives fresh-prefill logits.
    result = pc.sync([*ids, 11], encode, "prefix")
    assert result.reused == len(ids)
    torch.testing.assert_close(
        pc.last_logits, fresh_logits(model, config, [*ids, 11]), atol=ATOL, rtol=0
    )


def test_session_crops_on_exception(model, make_cache, encode):
    pc = PromptCache(make_cache)
    ids = list(range(8))
    pc.sync(ids, encode, "prefix")
    with pytest.raises(RuntimeError, match="boom"), pc.session() as kv:
        decode_one_token(model, 1, kv, len(ids))
        decode_one_token(model, 2, kv, len(ids) + 1)
        raise RuntimeError("boom")
    assert pc.kv.get_seq_length() == len(ids)
    assert pc.sync(ids, encode, "prefix").encoded == 0


def test_session_with_generate(model, config, make_cache, encode):
    pc = PromptCache(make_cache)
    ids = list(range(5, 25))
    pc.sync(ids, encode, "prefix")
    with pc.session() as kv:
        tokens = list(generate(model, kv, pc.last_logits, len(ids), max_new_tokens=6))
    assert len(tokens) == 6
    assert pc.kv.get_seq_length() == len(ids)
    pc.sync([*ids, tokens[0]], encode, "prefix")
    torch.testing.assert_close(
        pc.last_logits, fresh_logits(model, config, [*ids, tokens[0]]), atol=ATOL, rtol=0
    )


def test_session_without_cache():
    pc = PromptCache(lambda: None)
    with pc.session() as kv:
        assert kv is None


##### CacheStore #####


def synced(store, key, encode, ids=(1, 2, 3)):
    entry = store.get(key)
    entry.sync(list(ids), encode, "prefix")
    return entry


def test_store_lru_eviction(make_cache, encode):
    store = CacheStore(make_cache, max_entries=2)
    a = synced(store, "a", encode)
    b = synced(store, "b", encode)
    assert store.get("a") is a  # "a" is now the most recently used
    c = synced(store, "c", encode)
    assert store.peek("b") is None
    assert (b.ids, b.kv, b.last_logits) == ([], None, None)  # evicted entries are freed
    assert [k for k, _ in store.items()] == ["a", "c"]
    assert store.peek("a") is a and store.peek("c") is c
    assert a.kv is not None
    # peek does not change the order: "a" is still the oldest.
    store.peek("a")
    synced(store, "d", encode)
    assert store.peek("a") is None
    assert [k for k, _ in store.items()] == ["c", "d"]
    assert a.kv is None


def test_store_get_creates_empty(make_cache):
    store = CacheStore(make_cache, max_entries=3)
    entry = store.get("x")
    assert len(entry) == 0 and entry.kv is None
    assert store.get("x") is entry
    assert store.peek("nope") is None
    assert store.nbytes() == 0


def test_store_discard_and_clear(make_cache, encode):
    store = CacheStore(make_cache, max_entries=4)
    a = synced(store, "a", encode)
    b = synced(store, "b", encode)
    assert store.nbytes() > 0
    store.discard("a")
    assert a.kv is None and a.ids == []
    assert store.peek("a") is None
    store.discard("a")  # twice is harmless
    store.discard("never-opened")
    assert [k for k, _ in store.items()] == ["b"]
    store.clear()
    assert b.kv is None
    assert store.items() == []
    assert store.nbytes() == 0


def test_nbytes_counts_keys_and_values(config, make_cache, encode):
    pc = PromptCache(make_cache)
    assert pc.nbytes() == 0
    ids = list(range(13))
    pc.sync(ids, encode, "prefix")
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4
    held = len(ids)
    if isinstance(pc.kv.layers[0], GrowingLayer):
        held += MIN_ROOM  # the spare room is memory held too
    assert pc.nbytes() == per_token * held
    pc.drop()
    assert pc.nbytes() == 0


##### generate #####


def greedy_reference(model, config, ids, n):
    kv = DynamicCache(config=config)
    logits = prefill(model, ids, kv, 0)
    out = []
    position = len(ids)
    for _ in range(n):
        token = int(torch.argmax(logits))
        out.append(token)
        logits = forward(model, [token], kv, position)
        position += 1
    return out


def test_generate_greedy_matches_manual_loop(model, config):
    ids = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]
    expected = greedy_reference(model, config, ids, 12)
    kv = DynamicCache(config=config)
    logits = prefill(model, ids, kv, 0)
    tokens = list(generate(model, kv, logits, len(ids), max_new_tokens=12))
    assert tokens == expected
    # Every yielded token but the last has been fed.
    assert kv.get_seq_length() == len(ids) + len(tokens) - 1


def test_generate_stops_at_stop_id(model, config):
    ids = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]
    expected = greedy_reference(model, config, ids, 12)
    stop = expected[3]
    first = expected.index(stop)
    kv = DynamicCache(config=config)
    logits = prefill(model, ids, kv, 0)
    tokens = list(
        generate(model, kv, logits, len(ids), max_new_tokens=12, stop_ids=frozenset({stop}))
    )
    assert tokens == expected[: first + 1]
    assert tokens[-1] == stop


@pytest.mark.parametrize("n", [0, 1, 5])
def test_generate_respects_max_new_tokens(model, config, n):
    ids = [4, 4, 4]
    kv = DynamicCache(config=config)
    logits = prefill(model, ids, kv, 0)
    tokens = list(generate(model, kv, logits, len(ids), max_new_tokens=n))
    assert len(tokens) == n
    assert kv.get_seq_length() == len(ids) + max(0, n - 1)


def test_generate_sampling_is_reproducible(model, config):
    ids = [9, 9, 3]

    def run(seed):
        kv = DynamicCache(config=config)
        logits = prefill(model, ids, kv, 0)
        gen = torch.Generator().manual_seed(seed)
        return list(generate(model, kv, logits, len(ids), 8, temperature=1.0, generator=gen))

    first = run(5)
    assert first == run(5)
    assert all(0 <= t < VOCAB for t in first)


def test_sample():
    logits = torch.tensor([0.0, 3.0, 1.0])
    assert sample(logits, 0.0, None) == 1
    assert sample(logits, -1.0, None) == 1
    gen = torch.Generator().manual_seed(0)
    peaked = torch.tensor([0.0, 100.0, 0.0])
    assert all(sample(peaked, 0.5, gen) == 1 for _ in range(10))


def test_snapshot_restore_and_trim(model, make_cache, encode):
    pc = PromptCache(make_cache)
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    pc.sync(ids, encode, "prefix")
    state = pc.snapshot()
    keys = [layer.keys.clone() for layer in pc.kv.layers]
    pc.sync([*ids[:4], 7, 7], encode, "prefix")  # the cache moves on
    for _ in range(2):  # a snapshot can be put back more than once
        pc.restore(state)
        assert pc.ids == ids and pc.kv.get_seq_length() == len(ids)
        for layer, k in zip(pc.kv.layers, keys, strict=True):
            torch.testing.assert_close(layer.keys, k, atol=0, rtol=0)
        decode_one_token(model, 1, pc.kv, len(ids))  # fed after the prompt ...
        assert pc.kv.get_seq_length() == len(ids) + 1
        pc.trim()  # ... and trimmed back out
        assert pc.kv.get_seq_length() == len(ids)
    assert pc.sync(ids, encode, "prefix").encoded == 0
    empty = PromptCache(make_cache)
    empty.restore(empty.snapshot())
    assert empty.kv is None and empty.ids == []
