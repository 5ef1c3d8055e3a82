"""Low-bit weights on a CPU: linear layers that run torch's weight-only int8/int4 kernels.

A CPU decode step is memory-bound: each token reads every weight once (SmolLM2 in fp32:
about 540 MB a token), so the step's time follows the weights' bytes, not the framework
(docs/decode-step.md has the measurements). :class:`LowBitLinear` keeps a linear layer's
weights in 8 or 4 bits and multiplies with torch's CPU kernels for weight-only
quantization, which take bf16 activations:

- ``int8``: one scale per output channel, ``w = q * scale`` with ``q`` in [-128, 127]
  (``aten._weight_int8pack_mm``);
- ``int4``: groups of :data:`GROUP` input values per output channel with a scale and an
  offset, ``w = q * scale + low`` with ``q`` in [0, 15] (the shape of GGUF's Q4_0/Q4_1
  blocks; ``aten._weight_int4pack_mm_for_cpu``, whose tables hold
  ``w = (q - 8) * scale + zero``).

Inputs are rounded to bf16 on the way in and outputs come back in the input's dtype, so
the rest of the model, and the keys and values the cache keeps, stay fp32. Shapes the
kernels do not take (an input width not a multiple of :data:`GROUP`; for int4, an output
width not a multiple of 16) keep their layer as it was. CPU only.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

log = logging.getLogger(__name__)

Kind = Literal["int8", "int4"]
QUANTIZE = ("auto", "none", "int8", "int4")
"""The values of the ``quantize`` setting (``auto``: :func:`auto_kind` decides)."""
GROUP = 32
"""Input values per int4 group (a GGUF block's size)."""
_INT4_COLUMNS = 16
"""The int4 kernel packs output channels by 16."""


class LowBitLinear(torch.nn.Module):
    """A linear layer with int8 or int4 weights (see the module doc)."""

    def __init__(
        self,
        kind: Kind,
        packed: torch.Tensor,
        scales: torch.Tensor,
        shape: tuple[int, int],
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__()
        self.kind: Kind = kind
        self.out_features, self.in_features = shape
        self.register_buffer("packed", packed)
        self.register_buffer("scales", scales)
        """int8: ``[out]`` bf16; int4: ``[in / GROUP, out, 2]`` bf16 (scale, zero)."""
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)

    @classmethod
    def int8(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> LowBitLinear:
        """Round ``weight`` ``[out, in]`` to int8 with a scale per output channel."""
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        q = (w / scale[:, None]).round().clamp(-128, 127).to(torch.int8)
        return cls("int8", q, scale.bfloat16(), tuple(w.shape), _bias(bias))  # type: ignore[arg-type]

    @classmethod
    def int4(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> LowBitLinear:
        """Round ``weight`` ``[out, in]`` to int4 in groups of :data:`GROUP` (min to max)."""
        steps, scale, low = _int4_steps(weight)
        out, width = weight.shape
        q = steps.round().clamp(0, 15)
        return cls.from_int4(q.to(torch.int32).view(out, width), scale, low, bias)

    @classmethod
    def from_int4(
        cls,
        q: torch.Tensor,
        scale: torch.Tensor,
        low: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> LowBitLinear:
        """From int4 values and their groups' scales and offsets: ``w = q * scale + low``.

        ``q``: ``[out, in]`` in [0, 15]; ``scale``, ``low``: ``[out, in / GROUP]``.
        """
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32), 1)
        zero = low + 8 * scale
        table = torch.stack([scale.t(), zero.t()], dim=-1).contiguous().bfloat16()
        return cls("int4", packed, table, tuple(q.shape), _bias(bias))  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + bias``, ``x`` rounded to bf16 for the kernel; in ``x``'s dtype."""
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
        if self.kind == "int8":
            y = torch.ops.aten._weight_int8pack_mm(rows, self.packed, self.scales)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, GROUP, self.scales)
        y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def dequantized(self) -> torch.Tensor:
        """The weights ``[out, in]`` this layer computes with, in fp32.

        As the kernel returns them: rounded to bf16.
        """
        bias, self.bias = self.bias, None
        try:
            return self.forward(torch.eye(self.in_features)).t().contiguous()
        finally:
            self.bias = bias

    def extra_repr(self) -> str:
        """Shown in the model's printout."""
        return f"{self.kind}, in_features={self.in_features}, out_features={self.out_features}"


def _int4_steps(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each weight in steps of its group's grid, and the grids.

    ``(w - low) / scale`` as ``[out, in / GROUP, GROUP]``, 15 steps from each group's
    minimum ``low`` to its maximum; ``scale`` and ``low`` as ``[out, in / GROUP]``.
    """
    w = weight.detach().float()
    out, width = w.shape
    groups = w.view(out, width // GROUP, GROUP)
    low = groups.amin(dim=-1)
    scale = (groups.amax(dim=-1) - low).clamp(min=1e-12) / 15
    return (groups - low[..., None]) / scale[..., None], scale, low


def _bias(bias: torch.Tensor | None) -> torch.Tensor | None:
    return None if bias is None else bias.detach().float().clone()


def fits(kind: Kind, layer: torch.nn.Linear) -> bool:
    """Whether the kernels take ``layer``'s shape."""
    out, width = layer.weight.shape
    return width % GROUP == 0 and (kind == "int8" or out % _INT4_COLUMNS == 0)


def on_int4_grid(weight: torch.Tensor) -> bool:
    """Whether every group of :data:`GROUP` inputs lies on its own 16-level min-to-max grid.

    That is how GGUF's Q4_1 blocks were made (and what :meth:`LowBitLinear.int4` rounds
    to): such weights, dequantized, are held exactly by the int4 layer.
    """
    if weight.shape[-1] % GROUP:
        return False
    steps, _, _ = _int4_steps(weight)
    return bool(((steps - steps.round()).abs() <= 1e-3).all())


def auto_kind(model: torch.nn.Module) -> Kind:
    """The ``quantize`` kind that keeps a GGUF file's weights: ``int4`` or ``int8``.

    ``int4`` when the linear layers other than the output head lie on 4-bit grids
    (:func:`on_int4_grid`: a Q4_1 file, such as the embedded default), so the int4
    layers compute with the file's own values; else ``int8`` (the closest kernel to
    5-, 6- and 8-bit blocks: Qwen2.5-Coder-0.5B's "Q4_K_M" file is mostly Q5_0, as its
    896-wide rows do not fit K-quants' 256-blocks; docs/decode-step.md).
    """
    head = getattr(model, "lm_head", None)
    layers = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not head and fits("int4", m)
    ]
    return "int4" if layers and all(on_int4_grid(m.weight) for m in layers) else "int8"


def available() -> bool:
    """Whether this torch has the CPU kernels."""
    ops = torch.ops.aten
    return all(
        hasattr(ops, name)
        for name in (
            "_weight_int8pack_mm",
            "_weight_int4pack_mm_for_cpu",
            "_convert_weight_to_int4pack_for_cpu",
        )
    )


def quantize(model: torch.nn.Module, kind: str) -> int:
    """Replace the linear layers of ``model`` (a CPU model) by :class:`LowBitLinear`.

    ``kind``: ``none`` (changes nothing), ``int8`` or ``int4`` (``auto`` is the
    loader's to resolve). Returns how many layers were replaced; layers whose shape the
    kernels do not take are kept. Raises ValueError for an unknown kind, a model off the
    CPU, or a torch without the kernels.
    """
    if kind not in QUANTIZE or kind == "auto":
        raise ValueError(f"unknown quantize setting {kind!r} (use one of {list(QUANTIZE)})")
    if kind == "none":
        return 0
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"quantize={kind} runs on the CPU only (the model is on {device})")
    if not available():
        raise ValueError(f"quantize={kind}: this torch has no weight-only CPU kernels")
    low: Kind = "int8" if kind == "int8" else "int4"
    make = LowBitLinear.int8 if low == "int8" else LowBitLinear.int4
    replaced = kept = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            if fits(low, child):
                setattr(parent, name, make(child.weight, child.bias))
                replaced += 1
            else:
                kept += 1
    _untie(model)
    log.info("quantize=%s: %d linear layers low-bit, %d kept", kind, replaced, kept)
    return replaced


def _untie(model: torch.nn.Module) -> None:
    """Stop ``save``/``tie_weights`` from pointing the new head back at the embeddings."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "tie_word_embeddings", False):
        config.tie_word_embeddings = False
