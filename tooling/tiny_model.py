"""A tiny random checkpoint with the default model's real tokenizer.

For the programs that run the real server many times over (protocol fuzzing, fault
tests): two layers of width 64 load in a second and decode in milliseconds, so a run
tests the protocol, the documents and the cache, not the CPU. Suggestions are noise.
"""

from __future__ import annotations

from pathlib import Path

TINY_LAYERS = 2
TINY_WIDTH = 64


def make_tiny_model(out: Path, seed: int = 0) -> Path:
    """Write the checkpoint (safetensors, config, tokenizer files) to ``out``; ``out``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from completion.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve("default"))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_WIDTH,
        intermediate_size=2 * TINY_WIDTH,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
