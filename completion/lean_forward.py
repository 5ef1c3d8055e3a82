"""A Llama/Qwen2 forward without transformers' per-call machinery, for CPU decode steps.

A one-token step on a CPU spends part of its time outside the arithmetic: transformers'
forward builds a causal mask, resolves output options, wraps every module call in hooks
and kwargs handling, and returns nested output records, for each of 30 layers. On a
low-bit model (:mod:`completion.lowbit`), where the arithmetic is small, that share is
large (docs/decode-step.md). :func:`install` replaces ``model.forward`` with
:func:`lean_forward`, which runs the same modules' weights through the same operations
in a straight line: embedding, then per layer RMS norm, the projections, rotary
embedding (the model's own rotary module), the cache's ``update``, the attention of
:mod:`completion.fastpath` (row-exact rules included), the output projection, the gated
MLP; then the final norm and the head over the last ``logits_to_keep`` positions.

Only what the engine calls is taken: batch 1, ``input_ids``, ``position_ids``, a
``Cache``, ``logits_to_keep``; any other call goes to the library's forward. Only
architectures whose layers are exactly that are taken (:func:`supported`): Llama and
Qwen2 with full attention, SiLU MLPs, no tensor-parallel slices, and no forward hooks
on the modules when it is installed (it calls the modules' ``forward`` directly: hooks
added later are skipped).
"""

from __future__ import annotations

import logging
import types
from typing import Any

import torch
import torch.nn.functional as F

from .fastpath import ATTENTION_NAME, packed_gqa_attention

log = logging.getLogger(__name__)

ARCHITECTURES = frozenset({"llama", "qwen2"})
"""``config.model_type`` values whose decoder layers :func:`lean_forward` reproduces."""
_TAKEN = frozenset({"input_ids", "position_ids", "past_key_values", "cache", "use_cache"})
"""Keyword arguments the lean forward understands (besides ``logits_to_keep``)."""


def supported(model: Any) -> str:
    """Why ``model`` cannot take the lean forward ("" when it can)."""
    config = model.config
    if config.model_type not in ARCHITECTURES:
        return f"architecture {config.model_type!r}"
    if getattr(config, "_attn_implementation", None) != ATTENTION_NAME:
        return "attention is not pie's"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r}"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "tensor-parallel slices"
    if getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
        return "layers other than full attention"
    if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return "forward hooks on its modules (the lean forward would skip them)"
    inner = getattr(model, "model", None)
    if not all(hasattr(inner, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "an unexpected module layout"
    return ""


def install(model: Any) -> bool:
    """Give a CPU model :func:`lean_forward` where :func:`supported`; True if it did."""
    if model.device.type != "cpu" or installed(model):
        return False
    why = supported(model)
    if why:
        log.info("lean forward not installed: %s", why)
        return False
    model._pie_library_forward = model.forward
    model.forward = types.MethodType(lean_forward, model)
    return True


def installed(model: Any) -> bool:
    """Whether :func:`install` gave ``model`` the lean forward."""
    return getattr(model, "_pie_library_forward", None) is not None


def lean_forward(model: Any, *args: Any, logits_to_keep: int = 0, **kwargs: Any) -> Any:
    """The model's forward for the engine's calls; anything else goes to the library's.

    Feeds ``input_ids`` ``[1, q]`` at ``position_ids`` on top of the cache (which
    ``update`` appends to, as the library's forward does) and returns a
    ``CausalLMOutputWithPast`` with the logits of the last ``logits_to_keep`` positions
    (0: all), in the head's dtype.
    """
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    ids, positions = kwargs.get("input_ids"), kwargs.get("position_ids")
    if (
        args
        or set(kwargs) - _TAKEN
        or cache is None
        or ids is None
        or positions is None
        or ids.shape[0] != 1
        or torch.is_grad_enabled()
    ):
        return model._pie_library_forward(*args, logits_to_keep=logits_to_keep, **kwargs)
    from transformers.modeling_outputs import CausalLMOutputWithPast

    inner = model.model
    q_len, past = ids.shape[1], cache.get_seq_length()
    hidden = F.embedding(ids, inner.embed_tokens.weight)
    rotary = inner.rotary_emb(hidden, positions)
    mask = _causal_mask(q_len, past + q_len, hidden.device)
    for index, layer in enumerate(inner.layers):
        hidden = _layer(layer, index, hidden, rotary, mask, cache)
    kept = hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]
    logits = head(model, kept)
    return CausalLMOutputWithPast(logits=logits, cache=cache)


def _layer(
    layer: Any,
    index: int,
    hidden: torch.Tensor,
    rotary: tuple[torch.Tensor, torch.Tensor],
    mask: torch.Tensor | None,
    cache: Any,
) -> torch.Tensor:
    """One decoder layer: attention and MLP, each added to the residual stream."""
    attn = layer.self_attn
    query, key, value = project(layer, hidden, rotary)
    keys, values = cache.update(key, value, index)
    out, _ = packed_gqa_attention(attn, query, keys, values, mask, scaling=attn.scaling)
    return finish(layer, hidden, out)


def project(
    layer: Any, hidden: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A layer's rotated queries and keys and its values, ``[B, heads, q, D]`` each."""
    attn = layer.self_attn
    x = _rms_norm(layer.input_layernorm, hidden)
    shape = (*x.shape[:-1], -1, attn.head_dim)
    query = attn.q_proj.forward(x).view(shape).transpose(1, 2)
    key = attn.k_proj.forward(x).view(shape).transpose(1, 2)
    value = attn.v_proj.forward(x).view(shape).transpose(1, 2)
    query, key = _rotate(query, key, *rotary)
    return query, key, value


def finish(layer: Any, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
    """A layer after its attention: output projection and MLP, added to the residual.

    ``attended``: the attention's output, ``[B, q, heads, D]``.
    """
    attn, mlp = layer.self_attn, layer.mlp
    hidden = hidden + attn.o_proj.forward(attended.reshape(*hidden.shape[:-1], -1))
    x = _rms_norm(layer.post_attention_layernorm, hidden)
    gated = F.silu(mlp.gate_proj.forward(x)) * mlp.up_proj.forward(x)
    return hidden + mlp.down_proj.forward(gated)


def head(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The final norm and the output head."""
    return model.lm_head(_rms_norm(model.model.norm, hidden))


def _rms_norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """The library's RMS norm, computed in fp32 as it does."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def _rotate(
    query: torch.Tensor, key: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding of ``[B, H, q, D]`` queries and keys (cos/sin ``[B, q, D]``)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return query * cos + _half_turn(query) * sin, key * cos + _half_turn(key) * sin


def _half_turn(x: torch.Tensor) -> torch.Tensor:
    """``[-x2, x1]`` for the halves ``x1, x2`` of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _causal_mask(q_len: int, kv_len: int, device: torch.device) -> torch.Tensor | None:
    """``[1, 1, q, kv]`` booleans: row ``i`` sees keys up to ``kv - q + i``.

    None where SDPA's own causal flag says the same (one row, or no cached keys).
    """
    if q_len == 1 or q_len == kv_len:
        return None
    allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
    return allowed.tril(diagonal=kv_len - q_len)[None, None]
