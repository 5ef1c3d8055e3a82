"""CPU fast paths for short multi-token forwards (verify steps, small cache updates).

On a CPU, one forward over a single token takes fast matrix-vector paths; a forward over
2-16 tokens cost far more (docs/speculative.md has the measurements), which made
speculative verification barely pay. Two causes, both fixed here without changing the
maths:

- **Grouped-query attention with a mask.** transformers' SDPA path copies the whole
  key/value cache once per layer to repeat the key/value heads (``repeat_kv``) whenever a
  mask is needed (several query tokens on top of a cache). :func:`packed_gqa_attention`
  folds the query heads that share a key/value head into extra query rows instead
  (``[B, H, q, D] -> [B, Hkv, G*q, D]``, the mask repeated per group): no copy.
- **Linear layers with a few rows.** The BLAS kernel behind ``F.linear`` (``x @ W.T``)
  is slow for 2-4 rows on this CPU, slower than for one row; ``(W @ x.T).T`` reads the
  weights once and costs about one matrix-vector product. Which row counts gain is a
  property of the CPU and its BLAS: :meth:`FastLinear.choose` is given measurements
  (:meth:`completion.drafting_policy.CostModel.measure` times both) and keeps the
  transposed path only for the row counts where it was faster.

Both are installed on CPU models only (:func:`install`); CUDA and MPS keep the library
paths. Results equal the library paths up to float summation order.

A model whose linear layers all compute each row alone (the low-bit layers of
:mod:`completion.lowbit`: their kernels give a row the same bits whatever rows come with
it) is made **row-exact**: its one-token steps, and the rows a forward marks with
:func:`exact_rows` (verify steps, a draft fed after the prompt), attend one query row at a
time, each on the keys a one-token step at that position sees
(:func:`row_exact_attention`). A verify step then computes, bit for bit, what plain
decoding's one-token steps compute, so speculation needs no near-tie re-checks
(:func:`row_exact`). Cache updates attend all their rows at once. This matters for low-bit
weights: their bf16 activations turn the last-bit differences of a batched attention into
logit differences of a few tenths (docs/decode-step.md).
"""

from __future__ import annotations

import itertools
import logging
import types
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

ATTENTION_NAME = "pie_sdpa"
"""The name the packed attention is registered under in transformers."""
MAX_FAST_ROWS = 64
"""Row counts above this always take the library path (prefill chunks)."""


@dataclass
class RowExact:
    """A row-exact model's switch, shared by its attention modules (:func:`exact_rows`)."""

    first: int | None = None
    """The first row of the running forward that attends alone (None: none do)."""


##### Attention #####


def packed_gqa_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """SDPA attention that never repeats key/value heads for a masked multi-token query.

    On a row-exact model (:func:`row_exact`), a one-token step and the rows a forward
    runs under :func:`exact_rows` attend one row at a time (:func:`row_exact_attention`);
    the rows before those attend as a forward of them alone would. Everything else goes
    to :func:`batched_attention`.
    """
    rows: RowExact | None = getattr(module, "_pie_rows", None)
    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    q_len = query.shape[2]
    if (
        rows is not None
        and query.shape[0] == 1
        and not _special(kwargs)
        and not dropout
        and key.shape[1] * groups == query.shape[1]
    ):
        first = q_len if rows.first is None else min(rows.first, q_len)
        if q_len == 1 or first == 0:
            return row_exact_attention(query, key, value, scaling), None
        if first < q_len:
            head = _head_rows(module, query, key, value, attention_mask, first, scaling, kwargs)
            tail = row_exact_attention(query[:, :, first:], key, value, scaling)
            return torch.cat([head, tail], dim=1), None
    return batched_attention(
        module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
    )


def _special(kwargs: dict[str, Any]) -> bool:
    """Whether the attention call asks for something only transformers' SDPA does."""
    return any(
        kwargs.get(name) is not None
        for name in ("position_bias", "softcap", "s_aux", "sinks", "cache", "sliding_window")
    )


def _head_rows(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    first: int,
    scaling: float | None,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """The first ``first`` query rows, attended as a forward of those rows alone would."""
    kv = key.shape[2] - query.shape[2] + first
    query, key, value = query[:, :, :first], key[:, :, :kv], value[:, :, :kv]
    if first == 1:
        return row_exact_attention(query, key, value, scaling)
    if attention_mask is not None:
        attention_mask = attention_mask[..., :first, :kv].contiguous()
    out, _ = batched_attention(
        module, query, key, value, attention_mask, 0.0, scaling, None, **kwargs
    )
    return out


def batched_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """All query rows at once: transformers' SDPA, or the packed form under a mask.

    Query head ``h`` uses key/value head ``h // G``; reshaping ``[B, H, q, D]`` to
    ``[B, Hkv, G*q, D]`` puts head ``kv*G + g``'s row ``i`` at row ``g*q + i`` of its
    key/value head, so the ``[q, kv]`` mask repeated ``G`` times along the rows is right.
    Everything else (one query token, no mask, head-specific masks, position biases,
    soft-capping, attention sinks, paged caches) goes to transformers' own SDPA.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    q_len = query.shape[2]
    special = _special(kwargs)
    if (
        groups == 1
        or q_len == 1
        or attention_mask is None
        or special
        or attention_mask.dim() != 4
        or attention_mask.shape[1] != 1
        or dropout
        or key.shape[1] * groups != query.shape[1]
    ):
        return sdpa_attention_forward(
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    batch, heads, _, dim = query.shape
    kv_heads = heads // groups
    packed = query.reshape(batch, kv_heads, groups * q_len, dim)
    mask = attention_mask.expand(batch, 1, q_len, attention_mask.shape[-1]).repeat(1, 1, groups, 1)
    out = F.scaled_dot_product_attention(packed, key, value, attn_mask=mask, scale=scaling)
    out = out.reshape(batch, heads, q_len, value.shape[-1]).transpose(1, 2).contiguous()
    return out, None


def row_exact_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None
) -> torch.Tensor:
    """Causal attention of the last ``q`` positions, one query row at a time.

    Row ``i`` attends to the first ``kv - q + i + 1`` keys with no mask, the call a
    one-token step at that position makes: the same bits whatever rows come with it.
    Query heads sharing a key/value head are folded into rows of it (no copy of the
    cache). Returns ``[B, q, H, D]`` as transformers' attention functions do.
    """
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    rows = []
    for i in range(q_len):
        end = kv_len - q_len + i + 1
        packed = query[:, :, i, :].reshape(batch, kv_heads, groups, dim)
        out = F.scaled_dot_product_attention(
            packed, key[:, :, :end], value[:, :, :end], scale=scaling
        )
        rows.append(out.reshape(batch, 1, heads, value.shape[-1]))
    return rows[0] if q_len == 1 else torch.cat(rows, dim=1)


def row_exact(model: Any) -> bool:
    """Whether :func:`install` made ``model`` row-exact (see the module doc)."""
    return isinstance(getattr(model, "_pie_rows", None), RowExact)


@contextmanager
def exact_rows(model: Any, first: int = 0) -> Iterator[None]:
    """Forwards run inside compute their rows from ``first`` on as one-token steps do.

    On a row-exact model those rows attend one at a time (verify steps: ``first`` 0; a
    draft fed after a prompt's span: the span's length), and the rows before them as a
    forward of them alone would, so every row's bits are plain decoding's. Forwards
    outside attend all rows at once (cache updates: cheaper, and nothing compares them
    with one-token steps). Elsewhere this does nothing.
    """
    rows: RowExact | None = getattr(model, "_pie_rows", None)
    if rows is None:
        yield
        return
    saved, rows.first = rows.first, first
    try:
        yield
    finally:
        rows.first = saved


_registered = False


def register_attention() -> None:
    """Register :func:`packed_gqa_attention` (and SDPA's masks) with transformers."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, packed_gqa_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    _registered = True


##### Linear layers #####


class FastLinear:
    """Per-model switch: which row counts take ``(W @ x.T).T`` instead of ``F.linear``."""

    def __init__(self) -> None:
        self.rows: frozenset[int] = frozenset()
        """Row counts that take the transposed path (none until chosen)."""

    def forward(self, layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """The layer's forward: the transposed product for the chosen row counts."""
        width = x.shape[-1]
        rows = x.numel() // width if width else 0
        if rows in self.rows:
            y = (layer.weight @ x.reshape(rows, width).T).T
            if layer.bias is not None:
                y = y + layer.bias
            return y.reshape(*x.shape[:-1], y.shape[-1])
        return F.linear(x, layer.weight, layer.bias)

    def choose(self, library_ms: dict[int, float], transposed_ms: dict[int, float]) -> None:
        """Keep the transposed path for the measured row counts where it was faster.

        A row count between two measured ones takes the path both agree on, else the
        library path.
        """
        faster = {n for n, t in transposed_ms.items() if n > 1 and t < library_ms.get(n, t)}
        measured = sorted(set(library_ms) & set(transposed_ms))
        rows = set(faster)
        for lo, hi in itertools.pairwise(measured):
            if lo in faster and hi in faster:
                rows.update(range(lo, hi + 1))
        self.rows = frozenset(n for n in rows if 1 < n <= MAX_FAST_ROWS)
        log.info("transposed linear path for row counts %s", sorted(self.rows) or "none")

    def set_rows(self, rows: Iterable[int]) -> None:
        """Set the row counts directly (tests, cached measurements)."""
        self.rows = frozenset(n for n in rows if 1 < n <= MAX_FAST_ROWS)


def _make_row_exact(model: Any) -> None:
    """Mark ``model`` row-exact when its attention is ours and no library linear is left.

    The library's ``F.linear`` takes other kernels for one row than for several; the
    low-bit layers that replace it do not (tested).
    """
    if getattr(model.config, "_attn_implementation", None) != ATTENTION_NAME:
        return
    modules = list(model.modules())
    if any(isinstance(m, torch.nn.Linear) for m in modules):
        return
    rows = RowExact()
    for m in modules:
        if hasattr(m, "num_key_value_groups"):
            m._pie_rows = rows
    model._pie_rows = rows
    log.info("row-exact attention: verify steps compute what one-token steps do")


def fast_linear(model: Any) -> FastLinear | None:
    """The model's :class:`FastLinear`, if :func:`install` gave it one."""
    return getattr(model, "_pie_fast_linear", None)


def install(model: Any) -> FastLinear | None:
    """Install the fast paths on a CPU model; returns its linear switch (None elsewhere).

    The packed attention is used only where the model runs transformers' SDPA; the
    linear switch starts with no row counts (library behaviour) until measured; Llama
    and Qwen2 models then run :mod:`completion.lean_forward`.
    """
    if model.device.type != "cpu":
        return None
    existing = fast_linear(model)
    if existing is not None:
        return existing
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        register_attention()
        try:
            model.set_attn_implementation(ATTENTION_NAME)
        except Exception as exc:  # an architecture that refuses custom attention
            log.info("packed GQA attention not installed: %s", exc)
    _make_row_exact(model)
    switch = FastLinear()
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.forward = types.MethodType(switch.forward, layer)  # type: ignore[method-assign]
    model._pie_fast_linear = switch
    from .lean_forward import install as install_lean  # it builds on this module

    install_lean(model)
    return switch
