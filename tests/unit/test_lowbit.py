"""Low-bit linear layers: what they compute, which layers they replace, exactness."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from completion import lowbit
from completion.lowbit import GROUP, LowBitLinear
from completion.verify import measure_drift

pytestmark = pytest.mark.skipif(not lowbit.available(), reason="no weight-only CPU kernels")


def bf16_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as the kernels see it."""
    return x.bfloat16().float()


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_layer_computes_with_its_dequantized_weights(kind: str) -> None:
    torch.manual_seed(0)
    weight, bias = torch.randn(48, 64), torch.randn(48)
    layer = LowBitLinear.int8(weight, bias) if kind == "int8" else LowBitLinear.int4(weight, bias)
    x = torch.randn(2, 3, 64)
    w = layer.dequantized()
    expected = F.linear(bf16_rows(x), w, bias)
    out = layer(x)
    assert out.shape == (2, 3, 48) and out.dtype == torch.float32
    # bf16 outputs: a relative rounding of 2**-8.
    assert torch.allclose(out, expected, rtol=2**-7, atol=1e-2 * float(expected.abs().max()))
    # The rounding to low bits is close to the weights: int8 within half a step per channel,
    # int4 within half a step per group.
    if kind == "int8":
        step = weight.abs().amax(1, keepdim=True) / 127
        assert bool(((w - weight).abs() <= step * 0.5 + 2**-7 * weight.abs()).all())
        return
    groups = weight.view(48, 64 // GROUP, GROUP)
    span = (groups.amax(-1) - groups.amin(-1)) / 15
    err = (w - weight).view(48, 64 // GROUP, GROUP).abs().amax(-1)
    assert bool((err <= span * 0.5 + 2**-7 * weight.abs().amax()).all())


def test_int4_blocks_with_bf16_exact_scales_are_represented_exactly() -> None:
    # GGUF Q4_1 blocks: w = q * d + m; with d and m exact in bf16, so is every weight.
    torch.manual_seed(1)
    q = torch.randint(0, 16, (32, 64), dtype=torch.int32)
    scale = torch.tensor([[1.0, 0.5]]).repeat(32, 1)  # [32, 2]: per row, per group
    low = torch.tensor([[-0.5, -0.25]]).repeat(32, 1)
    layer = LowBitLinear.from_int4(q, scale, low)
    expected = q.float() * scale.repeat_interleave(GROUP, 1) + low.repeat_interleave(GROUP, 1)
    assert torch.equal(layer.dequantized(), expected)


def test_quantize_replaces_the_layers_the_kernels_take(tiny_llama) -> None:
    model = tiny_llama(40, 64, 0)  # the head's 40 outputs are no multiple of 16
    assert lowbit.quantize(model, "none") == 0
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    replaced = lowbit.quantize(model, "int4")
    kept = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert replaced == len(linears) - 1 and kept == [model.lm_head]
    with pytest.raises(ValueError, match="unknown quantize"):
        lowbit.quantize(model, "int3")


def test_a_quantized_model_decodes_greedily_like_itself_speculating(tiny_llama) -> None:
    # The lossless guarantee on the new numbers: speculation with the re-check margin
    # measured for this model gives plain greedy decoding's tokens.
    from completion.verify import SpecStats, near_tie_margin
    from tests.unit.test_speculative import plain, prompt_cache, spec

    model = tiny_llama(24, 512, 0)
    lowbit.quantize(model, "int8")
    prompt = [1, 2, 3, 4, 5, 6, 7, 8] * 3
    reference = plain(model, prompt, 30)
    cache, logits = prompt_cache(model, prompt)
    drift = measure_drift(model, cache, len(prompt), reference[:12])
    tie = near_tie_margin(drift, torch.float32, logits)
    out, _ = spec(model, prompt, 30, [prompt[-4:] + reference], SpecStats(), tie_margin=tie)
    assert out == reference


def row_exact_model(kind: str) -> Any:
    """A fully low-bit Llama with 64-wide heads, row-exact: at 1,100 cached tokens,
    attending all rows at once rounds differently from one row at a time there (a
    tinier model hides it)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from completion import fastpath

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=256,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    model = LlamaForCausalLM(config).eval()
    lowbit.quantize(model, kind)
    fastpath.install(model)
    assert fastpath.row_exact(model)
    return model


def cached(model: Any, prompt: list[int]) -> Any:
    from cache.growing import growing_cache
    from completion.decode import prefill

    cache = growing_cache(model.config)
    prefill(model, prompt, cache, 0)
    return cache


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_fully_low_bit_model_verifies_exactly_what_one_token_steps_compute(kind: str) -> None:
    # Row-exact: every linear layer low-bit and a verify step's attention row by row, so
    # a forward of several tokens gives the one-token steps' logits bit for bit.
    from completion.verify import forward_all

    model = row_exact_model(kind)
    prompt, more = torch.randint(0, 64, (1100,)).tolist(), [5, 9, 2, 30, 7, 11]
    with torch.inference_mode():
        cache = cached(model, prompt)
        at = len(prompt)
        one = torch.stack([forward_all(model, [t], cache, at + i)[0] for i, t in enumerate(more)])
        cache.crop(-len(more))
        many = forward_all(model, more, cache, at)
    assert torch.equal(many, one)
    assert measure_drift(model, cache, at, more) == 0.0


@pytest.mark.parametrize("span", [1, 7])
def test_a_draft_fed_after_a_span_gets_plain_decodings_numbers_for_both(span: int) -> None:
    # The span's rows as a cache update of the span alone computes them (logits and the
    # keys and values cached), the draft's rows as one-token steps after it.
    from completion.decode import prefill
    from completion.verify import forward_all, forward_with_draft

    model = row_exact_model("int4")
    prompt, ids, draft = torch.randint(0, 64, (1100,)).tolist(), [3, 8, 1, 6, 4, 2, 9], [5, 9, 2]
    ids, at = ids[:span], 1100
    with torch.inference_mode():
        cache = cached(model, prompt)
        last = prefill(model, ids, cache, at)
        steps = [forward_all(model, [t], cache, at + span + i)[0] for i, t in enumerate(draft)]
        keys = [layer.keys.clone() for layer in cache.layers]
        cache.crop(-span - len(draft))
        merged = forward_with_draft(model, ids, draft, cache, at)
    assert torch.equal(merged.last, last)
    assert torch.equal(merged.rows.logits, torch.stack(steps))
    assert all(torch.equal(layer.keys, k) for layer, k in zip(cache.layers, keys, strict=True))


def test_a_cache_update_attends_all_its_rows_at_once(monkeypatch) -> None:
    # Only verify steps and drafts pay the row-by-row attention; a cache update of a few
    # tokens (the re-encoded tokens after an edit) takes one call per layer.
    from completion import fastpath
    from completion.decode import prefill

    model = row_exact_model("int4")
    calls: list[int] = []
    original = fastpath.row_exact_attention

    def counted(query: torch.Tensor, *args: Any) -> torch.Tensor:
        calls.append(query.shape[2])
        return original(query, *args)

    monkeypatch.setattr(fastpath, "row_exact_attention", counted)
    with torch.inference_mode():
        cache = cached(model, torch.randint(0, 64, (300,)).tolist())
        prefill(model, [4, 5, 6, 7, 8], cache, 300)
        assert calls == []
        prefill(model, [9], cache, 305)  # a one-token step: the verify steps' form
        assert calls == [1, 1]


def test_a_model_with_a_library_linear_left_is_not_row_exact(tiny_llama) -> None:
    from completion import fastpath

    kept = tiny_llama(40, 64, 0)  # int4 keeps the 40-output head
    lowbit.quantize(kept, "int4")
    fastpath.install(kept)
    plain = tiny_llama(48, 64, 0)
    fastpath.install(plain)
    assert not fastpath.row_exact(kept) and not fastpath.row_exact(plain)


def test_a_row_exact_model_speculates_losslessly_without_near_tie_rechecks(tiny_llama) -> None:
    from completion import fastpath
    from completion.drafting_policy import CostModel
    from completion.verify import SpecStats, speculative_generate
    from tests.unit.test_speculative import drafter, plain, prompt_cache

    model = tiny_llama(48, 512, 1)
    lowbit.quantize(model, "int4")
    fastpath.install(model)
    prompt = [1, 2, 3, 4, 5, 6, 7, 8] * 3
    reference = plain(model, prompt, 30)
    d = drafter(prompt, [prompt[-4:] + reference])
    # A huge drift on record: were the model not taken as row-exact, every pick from a
    # verify step would be a near tie, decided again one token at a time.
    d.costs = CostModel({n: 1.0 for n in range(1, 40)}, drift=100.0, learn=False)
    stats = SpecStats()
    cache, logits = prompt_cache(model, prompt)
    out = list(speculative_generate(model, cache, logits, len(prompt), 30, d, stats))
    assert out == reference
    assert stats.acceptedTokens > 0 and stats.nearTies == 0


def gridded(out: int, width: int, levels: int, seed: int) -> torch.Tensor:
    """Weights whose groups of 32 lie on ``levels`` steps from their minimum to maximum."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, levels, (out, width // 32, 32), generator=gen).float()
    q[..., 0], q[..., 1] = 0, levels - 1  # every group spans its whole grid, as Q4_1's do
    scale = torch.rand(out, width // 32, 1, generator=gen) * 0.01 + 1e-3
    low = -torch.rand(out, width // 32, 1, generator=gen) * 0.05
    return (q * scale + low).view(out, width)


def test_weights_on_4_bit_grids_are_told_from_others() -> None:
    assert lowbit.on_int4_grid(gridded(48, 64, 16, 0))
    assert not lowbit.on_int4_grid(gridded(48, 64, 32, 0))  # 5-bit blocks (Q5_0-like)
    assert not lowbit.on_int4_grid(torch.randn(48, 64))
    assert not lowbit.on_int4_grid(gridded(48, 64, 16, 0)[:, :48])  # no whole groups


@pytest.mark.parametrize(("levels", "kind"), [(16, "int4"), (32, "int8")])
def test_auto_keeps_a_gguf_models_own_4_bit_weights_else_takes_int8(
    tiny_llama, levels: int, kind: str
) -> None:
    model = tiny_llama(48, 64, 0)
    with torch.no_grad():
        for i, m in enumerate(model.modules()):
            if isinstance(m, torch.nn.Linear) and m is not model.lm_head:
                m.weight.copy_(gridded(*m.weight.shape, levels, i))
    # The head is the embedding matrix (Q8_0 in GGUF files): it does not decide.
    assert lowbit.auto_kind(model) == kind
    with pytest.raises(ValueError, match="unknown quantize"):
        lowbit.quantize(model, "auto")  # the loader resolves it first
