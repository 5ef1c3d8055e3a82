"""The main job: start the real server, open a file, type into it, show completions.

Everything goes through LSP over stdio, as from an editor: ``didOpen``, keystroke-sized
``didChange`` edits, ``textDocument/inlineCompletion``, then ``pie/stats``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from .client import PieClient

SAMPLE = '''"""Shapes and their measurements. 形状 📐"""

import math
from dataclasses import dataclass


@dataclass
class Rectangle:
    """An axis-aligned rectangle."""

    width: float
    height: float

    def area(self) -> float:
        return self.width * self.height

    def perimeter(self) -> float:
        return 2 * (self.width + self.height)


@dataclass
class Square(Rectangle):
    """A rectangle whose sides are equal. 正方形"""

    def __init__(self, side: float) -> None:
        super().__init__(side, side)


def total_area(shapes: list[Rectangle]) -> float:
    """Sum of the areas of ``shapes``."""
    return sum(shape.area() for shape in shapes)

'''

# (text typed, keystroke by keystroke) then a completion is asked for.
TYPING = [
    "\ndef circle_area(radius: float) -> float:\n    return ",
    "\n\n\ndef largest(shapes: list[Rectangle]) -> Rectangle:\n    return max(shapes, key=lambda s: s.",
]


def _say(message: str) -> None:
    print(message, flush=True)


class _Progress:
    def __init__(self) -> None:
        self.last = ""

    def __call__(self, message: str, percent: int | None) -> None:
        if message != self.last:
            self.last = message
            pct = f" {percent:3d}%" if percent is not None else ""
            print(f"  [progress{pct}] {message}", file=sys.stderr, flush=True)


def _end(text: str) -> tuple[int, int]:
    """LSP position (utf-16) of the end of ``text``."""
    lines = text.split("\n")
    return len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2


async def _run(path: Path, text: str, options: dict[str, Any]) -> int:
    client = PieClient(on_progress=_Progress(), on_message=lambda m: _say(f"  [server] {m}"))
    _say("Starting the server: python -m lsp_server (stdio)")
    await client.start(options, encodings=("utf-16",))
    try:
        uri = client.open(path, text)
        _say(f"Opened {path.name} ({len(text)} characters); the model loads in the background")
        for n, typed in enumerate(TYPING, 1):
            for ch in typed:  # one didChange per keystroke, as an editor sends them
                pos = _end(text)
                client.change(uri, pos, pos, ch)
                text += ch
            line, col = _end(text)
            completion, seconds = await client.inline(uri, line, col)
            shown = text.rsplit("\n", 1)[-1]
            _say(f"\n[{n}] typed {len(typed)} keystrokes; cursor at {line}:{col}")
            _say(f"    {shown}\u2502{completion}")
            _say(
                f"    completion in {seconds * 1000:.0f} ms{' (includes model load)' if n == 1 else ''}"
            )
            if not completion:
                _say("    (the model suggested nothing here)")
            client.change(uri, (line, col), (line, col), completion)
            text += completion

        # An edit in the middle of the file, then a completion at the end again.
        lines = text.split("\n")
        row = min(3, len(lines) - 1)
        at = sum(len(x) + 1 for x in lines[:row])
        client.change(uri, (row, 0), (row, 0), "import statistics\n")
        text = text[:at] + "import statistics\n" + text[at:]
        tail = "\n\n\ndef mean_area(shapes: list[Rectangle]) -> float:\n    return "
        pos = _end(text)
        client.change(uri, pos, pos, tail)
        text += tail
        line, col = _end(text)
        completion, seconds = await client.inline(uri, line, col)
        _say("\n[3] inserted a line near the top, then typed a new function")
        _say(f"    {text.rsplit(chr(10), 1)[-1]}\u2502{completion}")
        _say(f"    completion in {seconds * 1000:.0f} ms")

        stats = await client.stats()
        model = stats.get("model", {})
        totals = stats.get("totals", {})
        _say(
            f"\nModel {model.get('id')} on {model.get('device')} ({model.get('dtype')}, "
            f"{model.get('promptFormat')} prompts); {totals.get('completions')} completions, "
            f"{totals.get('promptTokens')} prompt tokens, {totals.get('generatedTokens')} generated"
        )
        return 0
    finally:
        await client.stop()


def run_demo(file: Path | None, overrides: dict[str, Any]) -> int:
    """Run the demo; returns an exit code."""
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"pie-lsp: cannot read {file}: {exc}", file=sys.stderr)
            return 2
        return asyncio.run(_run(file, text, overrides))
    with tempfile.TemporaryDirectory(prefix="pie-lsp-demo-") as tmp:
        path = Path(tmp) / "shapes.py"
        path.write_text(SAMPLE, encoding="utf-8")
        return asyncio.run(_run(path, SAMPLE, overrides))
