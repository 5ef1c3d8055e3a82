"""Model loading for the commands: ``--model/--device/--dtype`` and a progress bar.

The bar goes to stderr (stdout carries the protocol when serving). Shared by the CLI (``serve``, ``complete``, ``models``) and by the tooling it dispatches
to (benchmarks, the demo), so that tooling imports this module and never the CLI: the
CLI imports tooling, lazily, and the imports go one way.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def quiet_transformers() -> None:
    """Silence transformers' progress bars and warnings (the CLI draws its own bar)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # transformers missing is reported when the model loads
        pass


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The --model/--device/--dtype/--quantize options that were given."""
    keys = ("model", "device", "dtype", "quantize")
    return {k: v for k in keys if (v := getattr(args, k, None))}


class CliProgress:
    """A progress bar on stderr fed by the model loader's progress callback."""

    def __init__(self) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=100, file=sys.stderr, bar_format="{desc} {bar} {n:.0f}%", leave=False)

    def __call__(self, message: str, percent: float | None) -> None:
        """Update the bar."""
        self.bar.set_description_str(message[:60].ljust(60))
        if percent is not None:
            self.bar.n = percent
        self.bar.refresh()

    def close(self) -> None:
        """Remove the bar."""
        self.bar.close()


def load_with_progress(
    model: str = "default", device: str = "auto", dtype: str = "auto", quantize: str = "auto"
) -> Any:
    """Load a model for a CLI command, with a progress bar on stderr.

    The arguments take :func:`model_overrides` (``load_with_progress(**overrides)``).
    """
    from completion.models import load_model

    quiet_transformers()
    bar = CliProgress()
    try:
        return load_model(model, device, dtype, quantize=quantize, progress=bar)
    finally:
        bar.close()
