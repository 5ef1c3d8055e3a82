"""Shared fixtures for the unit tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def make_tiny_llama(vocab: int, max_positions: int, seed: int) -> LlamaForCausalLM:
    """A random two-layer Llama with grouped heads (4 query heads, 2 key/value heads)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_llama() -> Callable[[int, int, int], LlamaForCausalLM]:
    """:func:`make_tiny_llama`, for module-scoped model fixtures."""
    return make_tiny_llama
