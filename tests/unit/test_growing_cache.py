"""The in-place cache (cache/growing.py) against transformers' DynamicCache, bit for bit."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import DynamicCache, LlamaForCausalLM

from cache import PromptCache, Rerotator, find_rotary
from cache.growing import GrowingLayer, growing_cache
from completion.decode import prefill

VOCAB = 64


@pytest.fixture(scope="module")
def model(tiny_llama) -> LlamaForCausalLM:
    return tiny_llama(VOCAB, 2048, 7)


def feed(model: LlamaForCausalLM, cache, ids: list[int], start: int) -> torch.Tensor:
    with torch.inference_mode():
        out = model(
            input_ids=torch.tensor([ids]),
            past_key_values=cache,
            position_ids=torch.arange(start, start + len(ids)).unsqueeze(0),
            use_cache=True,
            logits_to_keep=len(ids),
        )
    return out.logits


def test_layers_are_growing_and_appends_reuse_the_buffer(model) -> None:
    cache = growing_cache(model.config)
    assert all(type(layer) is GrowingLayer for layer in cache.layers)
    feed(model, cache, [1, 2, 3], 0)
    layer = cache.layers[0]
    buf = layer.keys.data_ptr()
    feed(model, cache, [4], 3)
    assert layer.keys.data_ptr() == buf  # written in place, not concatenated
    assert cache.get_seq_length() == 4 == layer.keys.shape[-2]
    assert layer.nbytes() >= 2 * layer.keys.numel() * layer.keys.element_size()


@pytest.mark.parametrize("seed", range(6))
def test_random_appends_and_crops_equal_the_library_cache(model, seed: int) -> None:
    rng = random.Random(seed)
    ours, ref = growing_cache(model.config), DynamicCache(config=model.config)
    length = 0
    # Long enough to grow the buffers several times (MIN_ROOM spare positions each).
    for _ in range(40):
        if length and rng.random() < 0.35:
            n = rng.randint(1, min(length, 20))
            ours.crop(-n)
            ref.crop(-n)
            length -= n
        else:
            ids = [rng.randrange(VOCAB) for _ in range(rng.choice([1, 2, 5, 17, 130]))]
            a, b = feed(model, ours, ids, length), feed(model, ref, ids, length)
            assert torch.equal(a, b)
            length += len(ids)
        assert ours.get_seq_length() == ref.get_seq_length() == length
        for x, y in zip(ours.layers, ref.layers, strict=True):
            assert torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)


def test_crop_takes_a_negative_count_and_reset_empties(model) -> None:
    cache = growing_cache(model.config)
    feed(model, cache, [1, 2, 3, 4], 0)
    with pytest.raises(ValueError, match="negative"):
        cache.layers[0].crop(2)
    cache.crop(-10)  # more than held: empty, still usable
    assert cache.get_seq_length() == 0
    feed(model, cache, [5, 6], 0)
    assert cache.get_seq_length() == 2
    cache.reset()
    assert cache.get_seq_length() == 0


def test_library_methods_that_replace_the_tensors_are_adopted(model) -> None:
    ours, ref = growing_cache(model.config), DynamicCache(config=model.config)
    for c in (ours, ref):
        feed(model, c, [1, 2, 3], 0)
        c.batch_repeat_interleave(2)
    batch = torch.tensor([[7, 8], [9, 10]])
    with torch.inference_mode():
        a, b = (
            model(
                input_ids=batch,
                past_key_values=c,
                position_ids=torch.tensor([[3, 4], [3, 4]]),
                use_cache=True,
            ).logits
            for c in (ours, ref)
        )
    assert torch.equal(a, b)
    assert ours.get_seq_length() == 5
    assert ours.layers[0].keys.shape[0] == 2


@pytest.mark.parametrize("seed", range(4))
def test_pie_sync_after_an_insertion_equals_the_library_cache(model, seed: int) -> None:
    """A sync cuts the cache and appends kept runs: they must be read before the cut."""
    rng = random.Random(seed)
    rot = Rerotator(find_rotary(model))

    def encode(ids: list[int], kv, start: int) -> torch.Tensor:
        return prefill(model, ids, kv, start, chunk=16)

    caches = [
        PromptCache(lambda: growing_cache(model.config)),
        PromptCache(lambda: DynamicCache(config=model.config)),
    ]
    ids = [rng.randrange(VOCAB) for _ in range(300)]
    for _ in range(4):
        at = rng.randrange(1, len(ids) - 20)
        if rng.random() < 0.5:
            ids = ids[:at] + [rng.randrange(VOCAB) for _ in range(rng.randint(1, 9))] + ids[at:]
        else:
            ids = ids[:at] + ids[at + rng.randint(1, 9) :]
        for pc in caches:
            pc.sync(ids, encode, "pie", rerotator=rot, tail=4)
        ours, ref = (pc.kv for pc in caches)
        for x, y in zip(ours.layers, ref.layers, strict=True):
            assert torch.equal(x.keys, y.keys) and torch.equal(x.values, y.values)
