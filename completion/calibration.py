"""The verify-cost measurement, in slices that never hold the model worker for long.

Speculative decoding drafts only where a k-token verify step pays, which depends on the
device: :class:`Calibration` times forwards of each size on a cache of ``context``
tokens (the fastest of ``repeats`` rounds) and builds the
:class:`~completion.drafting_policy.CostModel` from them. It runs one forward per
:meth:`Calibration.step`, so a server can run it a few steps at a time between requests
and stop at a cap (:meth:`Calibration.result` then builds the curve from what was timed);
:meth:`Calibration.run` measures it all at once. Last, with the linear paths chosen, it
measures how far such forwards' logits are from one-token steps' (``CostModel.drift``:
the bound under which verification decides a near tie with one-token steps).

On a CPU with a :class:`~completion.fastpath.FastLinear` switch, both linear paths are
timed for each size (interleaved, so load changes hit both) and the faster is chosen.
The switch is put back after every forward: a completion that runs between two slices
sees the model as it was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch

from .fastpath import exact_rows, fast_linear
from .verify import drift_steps

if TYPE_CHECKING:
    from .drafting_policy import CostModel

SIZES = (1, 2, 3, 4, 6, 8, 16)
"""Tokens fed per timed forward."""
CONTEXT = 768
"""Cache length the forwards are timed on: near where completions run."""
REPEATS = 3
"""Timed rounds over every size (after one warm-up round)."""
PREFILL_STEP = 32
"""Tokens per forward while filling the calibration cache: a step is then no dearer than
a 16-token verify step, and a request waits at most that behind it."""
DRIFT_TOKENS = 16
"""Tokens whose logits are compared, fed one at a time and in chunks."""


class Calibration:
    """One verify-cost measurement of a model on its device, run step by step."""

    def __init__(
        self,
        model: Any,
        make_cache: Callable[[], Any],
        sizes: tuple[int, ...] = SIZES,
        context: int = CONTEXT,
        repeats: int = REPEATS,
    ) -> None:
        self.model = model
        self.sizes = sizes
        self.samples: dict[tuple[int, bool], list[float]] = {}
        """(tokens fed, transposed linear path) -> forward times in seconds."""
        self.drift: float | None = None
        """How far forwards of several tokens' logits are from one-token steps', measured
        last with the linear paths chosen (:func:`~completion.verify.drift_steps`)."""
        self.done = False
        self._steps = self._forwards(make_cache, context, repeats)

    def step(self) -> bool:
        """Run the next forward; returns whether the measurement is complete."""
        if not self.done:
            try:
                next(self._steps)
            except StopIteration:
                self.done = True
        return self.done

    def steps_for(self, seconds: float) -> bool:
        """Run forwards for about ``seconds`` (at least one); returns :attr:`done`."""
        end = time.perf_counter() + seconds
        while not self.step() and time.perf_counter() < end:
            pass
        return self.done

    def run(self) -> CostModel:
        """Measure everything now and return the curve."""
        while not self.step():
            pass
        return self.result()

    def result(self) -> CostModel:
        """The curve from the forwards timed so far (complete once :attr:`done`).

        Sizes not timed yet are left out (the cost model interpolates); with no plain
        step timed at all, the curve is linear (drafting never pays).
        """
        from .drafting_policy import CostModel

        switch = fast_linear(self.model)
        best = {key: min(v) for key, v in self.samples.items() if v}
        library = {n: t for (n, tr), t in best.items() if not tr}
        if 1 not in library:
            return CostModel()
        fast_rows: frozenset[int] = frozenset()
        if switch is not None:
            transposed = {n: t for (n, tr), t in best.items() if tr and n in library}
            saved = switch.rows
            switch.choose(library, transposed)
            fast_rows, switch.rows = switch.rows, saved
        times = {
            n: min(t, best.get((n, True), t)) if n in fast_rows else t for n, t in library.items()
        }
        # Costs never fall with more tokens: smooth the timing noise into a running max.
        relative, top = {}, 1.0
        for n in sorted(times):
            top = max(top, times[n] / times[1])
            relative[n] = top
        return CostModel(relative, fast_rows, self.drift)

    @torch.inference_mode()
    def _forwards(
        self, make_cache: Callable[[], Any], context: int, repeats: int
    ) -> Iterator[None]:
        """Fill a cache of random tokens, then time rounds over all sizes.

        One yield per forward. Rounds over all sizes (not all rounds of one size, then
        the next): a slow spell on a shared machine then hits every size alike, and the
        fastest round of each size is kept (noise only ever adds time).
        """
        model, device = self.model, self.model.device
        vocab = int(model.config.vocab_size)
        gen = torch.Generator().manual_seed(0)
        base = torch.randint(0, vocab, (1, context), generator=gen).to(device)
        cache = make_cache()
        for i in range(0, context, PREFILL_STEP):
            j = min(i + PREFILL_STEP, context)
            positions = torch.arange(i, j, device=device).unsqueeze(0)
            model(
                input_ids=base[:, i:j],
                past_key_values=cache,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )
            yield
        inputs = {
            n: (
                torch.randint(0, vocab, (1, n), generator=gen).to(device),
                torch.arange(context, context + n, device=device).unsqueeze(0),
            )
            for n in self.sizes
        }
        switch = fast_linear(model)
        variants = (False, True) if switch is not None else (False,)
        for rep in range(repeats + 1):  # the first round warms up
            for n in self.sizes:
                for transposed in variants if n > 1 else (False,):
                    seconds = self._timed(cache, *inputs[n], transposed)
                    if rep:
                        self.samples.setdefault((n, transposed), []).append(seconds)
                    yield
        # Last, with the linear paths these timings choose: the near-tie bound.
        ids = torch.randint(0, vocab, (DRIFT_TOKENS,), generator=gen).tolist()
        chosen = self.result().fast_rows
        self.drift = yield from drift_steps(model, cache, context, ids, chosen)

    def _timed(
        self, cache: Any, ids: torch.Tensor, positions: torch.Tensor, transposed: bool
    ) -> float:
        """One forward of ``ids`` on ``cache`` (cropped back after), in seconds."""
        n = ids.shape[-1]
        switch = fast_linear(self.model)
        saved = switch.rows if switch is not None else frozenset()
        if switch is not None:
            switch.set_rows([n] if transposed else [])
        try:
            t = time.perf_counter()
            with exact_rows(self.model):  # timed as a verify step runs
                self.model(
                    input_ids=ids,
                    past_key_values=cache,
                    position_ids=positions,
                    use_cache=True,
                    logits_to_keep=n,
                )
            if self.model.device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t
        finally:
            if switch is not None:
                switch.rows = saved
            cache.crop(-n)
