"""CPU fast paths: packed grouped-query attention and the transposed linear path give
the library's results (to float tolerance), in isolation and through a whole model with
a cache, and the row-count choice follows the measurements."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from completion import fastpath
from completion.decode import prefill
from completion.drafting_policy import CostModel


class _Module(torch.nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


@pytest.mark.parametrize(
    ("heads", "kv_heads", "q_len"), [(4, 2, 3), (9, 3, 5), (14, 2, 1), (4, 4, 6)]
)
def test_packed_attention_equals_sdpa(heads: int, kv_heads: int, q_len: int) -> None:
    torch.manual_seed(0)
    past, dim = 11, 16
    kv_len = past + q_len
    query = torch.randn(1, heads, q_len, dim)
    key = torch.randn(1, kv_heads, kv_len, dim)
    value = torch.randn(1, kv_heads, kv_len, dim)
    # Causal mask for q_len new tokens on top of ``past`` cached ones.
    mask = (torch.arange(kv_len)[None, :] <= torch.arange(past, kv_len)[:, None])[None, None]
    module = _Module(heads // kv_heads)
    want, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.25)
    got, _ = fastpath.packed_gqa_attention(module, query, key, value, mask, scaling=0.25)
    assert got.shape == want.shape == (1, q_len, heads, dim)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 16])
def test_fast_linear_equals_library(rows: int) -> None:
    torch.manual_seed(1)
    layer = torch.nn.Linear(24, 40)
    switch = fastpath.FastLinear()
    switch.set_rows(range(2, 17))
    x = torch.randn(1, rows, 24)
    torch.testing.assert_close(switch.forward(layer, x), layer(x), rtol=1e-5, atol=1e-5)
    no_bias = torch.nn.Linear(24, 40, bias=False)
    torch.testing.assert_close(switch.forward(no_bias, x), no_bias(x), rtol=1e-5, atol=1e-5)


def test_choose_keeps_measured_wins_and_fills_between_agreeing_sizes() -> None:
    switch = fastpath.FastLinear()
    library = {1: 10.0, 2: 20.0, 4: 20.0, 8: 20.0, 16: 30.0}
    transposed = {2: 10.0, 4: 11.0, 8: 25.0, 16: 20.0}
    switch.choose(library, transposed)
    assert switch.rows == frozenset({2, 3, 4, 16})  # 5-7 lie between a win and a loss
    switch.choose(library, {n: t * 2 for n, t in transposed.items()})
    assert switch.rows == frozenset()
    switch.set_rows([1, 2, 500])
    assert switch.rows == frozenset({2})  # one row is always the library's, big never


def _model(kv_heads: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
    )
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("kv_heads", [2, 6])
def test_installed_model_matches_library_with_a_cache(kv_heads: int) -> None:
    reference = _model(kv_heads)
    fast = copy.deepcopy(reference)
    switch = fastpath.install(fast)
    assert switch is not None and fastpath.install(fast) is switch  # idempotent
    switch.set_rows(range(2, 17))
    assert fast.config._attn_implementation == fastpath.ATTENTION_NAME
    ids = torch.randint(0, 50, (40,), generator=torch.Generator().manual_seed(3)).tolist()
    for split in (20, 33, 39):  # a cache, then 20 / 7 / 1 tokens on top
        caches = [DynamicCache(config=m.config) for m in (reference, fast)]
        for m, c in zip((reference, fast), caches, strict=True):
            prefill(m, ids[:split], c, 0)
        with torch.inference_mode():
            pos = torch.arange(split, 40).unsqueeze(0)
            outs = [
                m(
                    input_ids=torch.tensor([ids[split:]]),
                    past_key_values=c,
                    position_ids=pos,
                    use_cache=True,
                    logits_to_keep=40 - split,
                ).logits
                for m, c in zip((reference, fast), caches, strict=True)
            ]
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-4)
        for layer in range(2):
            torch.testing.assert_close(
                caches[1].layers[layer].keys, caches[0].layers[layer].keys, rtol=1e-5, atol=1e-5
            )


def test_measure_chooses_paths_and_cached_costs_apply_to_a_new_model() -> None:
    model = _model(2)
    switch = fastpath.install(model)
    assert switch is not None
    costs = CostModel.measure(
        model, lambda: DynamicCache(config=model.config), sizes=(1, 2, 4), context=32, repeats=1
    )
    assert set(costs.relative) == {1, 2, 4}
    assert costs.relative[1] == 1.0 <= costs.relative[2] <= costs.relative[4]
    assert costs.fast_rows == switch.rows
    assert costs.drift is not None  # measured last, with the paths chosen
    other = _model(2)
    other_switch = fastpath.install(other)
    assert other_switch is not None
    CostModel(costs.relative, frozenset({2, 3})).apply(other)
    assert other_switch.rows == frozenset({2, 3})


def test_not_installed_off_cpu_models() -> None:
    class Meta:
        device = torch.device("meta")

    assert fastpath.install(Meta()) is None
