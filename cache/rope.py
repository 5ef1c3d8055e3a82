"""RoPE re-rotation of cached keys: the positional half of Positional Integrity Encoding.

transformers caches keys *after* rotary embedding: ``k_p = R(p) k``. Moving a token from
position ``p`` to ``p + d`` only needs ``R(d) k_p`` because rotations compose:
``R(p + d) = R(d) R(p)``. Values carry no position and stay as they are.

All maths here is fp32, in pure functions over tensors:

- ``keys``: ``[batch, kv_heads, seq, head_dim]`` (a transformers cache layer's layout);
- ``cos`` / ``sin``: ``[seq, head_dim]``, the model's own tables for the deltas, with any
  ``attention_scaling`` (YaRN) divided back out so they are a pure rotation.

The half-split pairing (``rotate_half``) is the one transformers' Llama-family models use.

This only holds while ``R`` is one fixed table for every position. transformers' RoPE
types ``dynamic`` (NTK) and ``longrope`` change their frequencies with the length of the
forward pass (``dynamic_rope_update`` in ``transformers.modeling_rope_utils``), so keys
cached by an earlier pass are not ``R(p) k`` for the table a delta would use:
:func:`rerotation_support` refuses them, and every type not proven static.
"""

from __future__ import annotations

from typing import Any

import torch

STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn", "proportional"})
"""transformers rope types whose frequency table is computed once, independent of the
sequence length, and for which a unit test shows re-rotated keys equal keys computed at
the new positions (tests/unit/test_pie_cache.py). Every other type is refused."""

LENGTH_DEPENDENT_ROPE_TYPES = {
    "dynamic": "rescales its frequencies with the sequence length (dynamic NTK)",
    "longrope": "switches between short and long frequency factors by sequence length",
}
"""Why the rope types transformers re-tables by length are refused (any type containing
"dynamic" is treated as dynamic there, so here too)."""


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` over the last dimension (transformers' convention)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotation(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``keys`` ``[B, H, S, D]`` by ``cos``/``sin`` ``[S, D]``; returns keys' dtype."""
    k = keys.float()
    c = cos.float()[None, None]  # [1, 1, S, D]
    s = sin.float()[None, None]
    return (k * c + rotate_half(k) * s).to(keys.dtype)


def _rope_parameters(config: Any) -> dict[str, Any]:
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None)
    if isinstance(params, dict) and "full_attention" in params and "rope_type" not in params:
        # Per-layer-type parameters (e.g. Gemma 3): take the full-attention entry.
        params = params["full_attention"]
    return dict(params or {})


def _not_static(rope_type: str) -> str:
    """Why ``rope_type`` (not in :data:`STATIC_ROPE_TYPES`) is refused; names the type."""
    kind = "dynamic" if "dynamic" in rope_type else rope_type
    why = LENGTH_DEPENDENT_ROPE_TYPES.get(kind, "is not known to be a static rotation")
    return f"rope type {rope_type!r} {why}"


def rerotation_support(config: Any) -> tuple[bool, str]:
    """Whether re-rotating cached keys is valid for this model, and why not if it is not.

    Valid only for a rope type in :data:`STATIC_ROPE_TYPES`, one rotation axis, no
    sliding-window layers and rotation over the whole head; the reason otherwise is one
    line for the log (it names the rope type when that is the cause).
    """
    params = _rope_parameters(config)
    rope_type = str(params.get("rope_type", params.get("type", "default")))
    if rope_type not in STATIC_ROPE_TYPES:
        return False, _not_static(rope_type)
    if params.get("mrope_section") or getattr(config, "mrope_section", None):
        return False, "multi-axis RoPE"
    layer_types = getattr(config, "layer_types", None) or []
    if any("sliding" in str(t) for t in layer_types):
        return False, "sliding-window attention layers"
    if getattr(config, "use_sliding_window", False) and getattr(config, "sliding_window", None):
        return False, "sliding-window attention"
    partial = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    # "proportional" spans the whole head with zero frequencies past the rotary part, so its
    # tables still rotate every dimension; other types' tables would be too short.
    if partial not in (None, 1.0) and rope_type != "proportional":
        return False, "partial rotary embedding"
    return True, ""


def find_rotary(model: Any) -> Any | None:
    """The model's shared rotary-embedding module (``rotary_emb``), if it has one."""
    base = getattr(model, "model", None)
    rotary = getattr(base, "rotary_emb", None)
    if rotary is not None:
        return rotary
    for name, module in model.named_modules():
        if name.endswith("rotary_emb"):
            return module
    return None


class Rerotator:
    """Delta rotations from a model's own rotary tables."""

    def __init__(self, rotary: Any) -> None:
        self.rotary = rotary
        self.scaling = float(getattr(rotary, "attention_scaling", 1.0) or 1.0)

    @torch.inference_mode()
    def tables(self, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos``/``sin`` ``[S, D]`` (fp32) for integer position ``deltas`` ``[S]``."""
        device = next(iter(self.rotary.buffers())).device
        dummy = torch.zeros(1, dtype=torch.float32, device=device)
        cos, sin = self.rotary(dummy, deltas.to(device).view(1, -1))  # [1, S, D]
        return cos[0].float() / self.scaling, sin[0].float() / self.scaling

    def rotate(self, keys: torch.Tensor, delta: int) -> torch.Tensor:
        """Move every key in ``keys`` ``[B, H, S, D]`` by the same position ``delta``."""
        if delta == 0 or keys.shape[-2] == 0:
            return keys
        cos, sin = self.tables(torch.tensor([delta]))
        return apply_rotation(keys, cos.expand(keys.shape[-2], -1), sin.expand(keys.shape[-2], -1))
