"""A transformers ``DynamicCache`` whose layers append in place instead of concatenating.

transformers' ``DynamicLayer.update`` appends by ``torch.cat``: every forward copies the
whole cache of every layer into a new tensor, a large share of a CPU decode step
(profiled in docs/cache.md, "Storage"; a cropped cache is a strided view, and copying it is
slower still). Speculative decoding crops and appends on every verify step, so it paid
the most.

:class:`GrowingLayer` keeps keys and values in buffers with spare room along the
sequence; ``keys``/``values`` are views of the filled part, ``update`` writes the new
states into the room (growing the buffer geometrically when full), ``crop`` only
shortens the views. The attention reads the same numbers through strided views, so
outputs are bit-identical to the library cache (tested).

One rule comes with it: a view taken from a layer (``layer.keys[..., a:b, :]``) may be
overwritten by a later ``update`` once the layer has been cropped below ``b``. Code that
crops and then appends what it read before the crop must copy it first
(:meth:`cache.prompt_cache.PromptCache.sync` does).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

MIN_ROOM = 256
"""Spare positions a buffer gets at least when it grows."""
GROWTH = 4
"""A buffer grows by at least 1/GROWTH of its length (amortised copies stay linear)."""


class GrowingLayer(DynamicLayer):
    """A :class:`DynamicLayer` with spare capacity: appends write in place."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Empty buffers (allocated on the first append)."""
        super().lazy_initialization(key_states, value_states)
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._len = 0

    def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._kbuf is not None and self._vbuf is not None
        self.keys = keys = self._kbuf[..., : self._len, :]
        self.values = values = self._vbuf[..., : self._len, :]
        return keys, values

    def _fits(self, buf: torch.Tensor | None, states: torch.Tensor, end: int) -> bool:
        return (
            buf is not None
            and buf.shape[-2] >= end
            and buf.shape[:-2] == states.shape[:-2]
            and buf.shape[-1] == states.shape[-1]
            and buf.dtype == states.dtype
            and buf.device == states.device
            # A buffer made under torch.inference_mode can't be written outside it.
            and (torch.is_inference_mode_enabled() or not buf.is_inference())
        )

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, end: int) -> None:
        room = max(MIN_ROOM, end // GROWTH)
        bufs = []
        for old, new in ((self._kbuf, key_states), (self._vbuf, value_states)):
            shape = (*new.shape[:-2], end + room, new.shape[-1])
            buf = torch.empty(shape, dtype=new.dtype, device=new.device)
            if old is not None and self._len:
                buf[..., : self._len, :].copy_(old[..., : self._len, :])
            bufs.append(buf)
        self._kbuf, self._vbuf = bufs

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new states after the cached ones; returns the views of all of them."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._adopt()
        end = self._len + key_states.shape[-2]
        if not (
            self._fits(self._kbuf, key_states, end) and self._fits(self._vbuf, value_states, end)
        ):
            self._grow(key_states, value_states, end)
        assert self._kbuf is not None and self._vbuf is not None
        self._kbuf[..., self._len : end, :].copy_(key_states)
        self._vbuf[..., self._len : end, :].copy_(value_states)
        self._len = end
        return self._views()

    def get_seq_length(self) -> int:
        """Positions cached."""
        if not self.is_initialized:
            return 0
        self._adopt()
        return self._len

    def crop(self, tokens_to_remove: int) -> None:
        """Drop the last ``-tokens_to_remove`` positions (negative, as the library's)."""
        if tokens_to_remove > 0:
            raise ValueError(
                f"crop takes a negative count of positions to remove, got {tokens_to_remove}"
            )
        if tokens_to_remove == 0 or not self.is_initialized:
            return
        self._adopt()
        if self._kbuf is None:
            return
        self._len = max(0, self._len + tokens_to_remove)
        self._views()

    def restore_length(self, n: int) -> None:
        """Lengthen the views back to ``n`` positions of the same buffers.

        For rewriting positions in place: crop to ``a``, append the new states of
        ``[a, b)``, then restore the length held before (``b <= n``): positions ``[b, n)``
        are the ones written before the crop. Raises ValueError when the buffers do not
        hold ``n`` positions.
        """
        self._adopt()
        if self._kbuf is None or self._kbuf.shape[-2] < n:
            raise ValueError(f"the layer's buffers do not hold {n} positions")
        self._len = n
        self._views()

    def buffer_ptr(self) -> int:
        """The key buffer's address (0 if none): unchanged as long as appends fit in it."""
        self._adopt()
        return 0 if self._kbuf is None else self._kbuf.data_ptr()

    def reset(self) -> None:
        """Drop everything (the buffers too)."""
        super().reset()
        self._kbuf = self._vbuf = None
        self._len = 0

    def _adopt(self) -> None:
        """Take ``keys``/``values`` as the buffers if a library method replaced them.

        Beam reordering, batch selection and offloading assign new tensors to
        ``keys``/``values``; the next append then starts from those.
        """
        k, v = self.keys, self.values
        if (
            self._kbuf is not None
            and k is not None
            and k.data_ptr() == self._kbuf.data_ptr()
            and k.shape[-2] == self._len
        ):
            return
        if k is None or v is None or k.numel() == 0:
            self._kbuf = self._vbuf = None
            self._len = 0
        else:
            self._kbuf, self._vbuf, self._len = k, v, int(k.shape[-2])

    def nbytes(self) -> int:
        """Bytes held, spare room included."""
        if not self.is_initialized or self._kbuf is None or self._vbuf is None:
            return 0
        return sum(b.numel() * b.element_size() for b in (self._kbuf, self._vbuf))


def growing_cache(config: Any) -> DynamicCache:
    """A ``DynamicCache`` for ``config`` whose full-attention layers are :class:`GrowingLayer`.

    Sliding-window and other special layers keep their library classes.
    """
    cache = DynamicCache(config=config)
    if cache.layer_class_to_replicate is DynamicLayer:
        cache.layer_class_to_replicate = GrowingLayer
    cache.layers = [
        GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache
