"""The lean forward computes what transformers' forward does, where it is installed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from cache.growing import growing_cache
from completion import fastpath, lean_forward
from completion.decode import prefill
from completion.verify import forward_all


def tiny_qwen2(seed: int) -> Any:
    """A random two-layer Qwen2 (biases on q, k, v) with grouped heads."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=80,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    return Qwen2ForCausalLM(config).eval()


def both(model: Any) -> tuple[Any, Any]:
    """The model's library forward and its lean one (installed)."""
    fastpath.install(model)
    assert lean_forward.installed(model)
    return model._pie_library_forward, model.forward


def logits_of(model: Any, forward: Any, prompt: list[int], more: list[int]) -> torch.Tensor:
    """Prefill ``prompt`` in chunks of 7, then ``more`` in one forward: its logits."""
    model.forward = forward
    with torch.inference_mode():
        cache = growing_cache(model.config)
        prefill(model, prompt, cache, 0, chunk=7)
        out = forward_all(model, more, cache, len(prompt))
        assert cache.get_seq_length() == len(prompt) + len(more)
        return out


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_the_lean_forward_computes_the_library_forwards_logits(tiny_llama, arch: str) -> None:
    model = tiny_llama(80, 512, 3) if arch == "llama" else tiny_qwen2(3)
    library, lean = both(model)
    prompt, more = list(range(1, 40)), [5, 9, 2, 30]
    expected = logits_of(model, library, prompt, more)
    got = logits_of(model, lean, prompt, more)
    assert got.shape == expected.shape == (4, 80)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_the_lean_forward_keeps_the_last_positions_asked_for(tiny_llama) -> None:
    model = tiny_llama(80, 512, 4)
    fastpath.install(model)
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.inference_mode():
        for keep, rows in ((1, 1), (3, 3), (0, 5)):
            out = model(
                input_ids=ids,
                past_key_values=growing_cache(model.config),
                position_ids=torch.arange(5)[None],
                use_cache=True,
                logits_to_keep=keep,
            )
            assert out.logits.shape == (1, rows, 80)


def test_calls_it_does_not_take_go_to_the_library_forward(tiny_llama) -> None:
    model = tiny_llama(80, 512, 5)
    fastpath.install(model)
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([[3, 4, 5]]), output_hidden_states=True)
    assert out.hidden_states is not None and len(out.hidden_states) == 3


def test_models_it_cannot_reproduce_keep_the_library_forward(tiny_llama) -> None:
    hooked = tiny_llama(80, 512, 6)
    hooked.model.layers[0].mlp.register_forward_hook(lambda module, args, out: out * 2)
    eager = tiny_llama(80, 512, 6)
    eager.set_attn_implementation("eager")
    for model, why in ((hooked, "hooks"), (eager, "attention")):
        fastpath.install(model)
        assert not lean_forward.installed(model)
        assert why in lean_forward.supported(model)
