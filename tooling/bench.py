"""``pie-lsp bench baseline``: the figures later work is measured against.

Two parts, one run:

1. Over LSP, against the real server started as a subprocess (as an editor would):
   cold start to first completion (server start, model load, prefill of the file),
   first completion after opening a file once the model is loaded, and single-line
   completion latency at many positions inside lines (median, p95).
2. In process, on the same model and file: prefill tokens/s (a fresh full prompt) and
   decode tokens/s (64 greedy tokens after the prompt, no stop rules).

Results are printed as a table and written to ``<out>/baseline.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from .client import PieClient

DEFAULT_SOURCE = "textwrap.py"
TARGET_TOKENS = 2000


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    """Median, p95, min, max and count."""
    return {
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def measure_verify_cost(engine: Any) -> dict[int, float]:
    """Measure the verify cost as the server does once the model is ready.

    This also picks the CPU fast paths for short forwards (completion/fastpath.py),
    which speed up verify steps and small cache updates alike. Returns the curve.
    """
    print("measuring the verify cost curve...", file=sys.stderr)
    relative: dict[int, float] = engine.costs.relative
    print(f"verify cost (k tokens / 1): {relative}", file=sys.stderr)
    return relative


def load_source(path: Path | None, tokenizer: Any) -> tuple[str, str]:
    """A real Python file cut at a line end to about TARGET_TOKENS tokens."""
    src = path or Path(sysconfig.get_paths()["stdlib"]) / DEFAULT_SOURCE
    text = src.read_text(encoding="utf-8")
    lines = text.split("\n")
    kept: list[str] = []
    for line in lines:
        candidate = "\n".join([*kept, line]) + "\n"
        if len(tokenizer(candidate, add_special_tokens=False)["input_ids"]) > TARGET_TOKENS:
            break
        kept.append(line)
    return str(src), "\n".join(kept) + "\n"


def inside_line_positions(text: str, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """Cursor positions inside code lines of the file's second half (single-line mode)."""
    lines = text.split("\n")
    candidates = []
    for i, line in enumerate(lines):
        if i < len(lines) // 2:
            continue
        body = line.strip()
        if len(body) < 12 or body.startswith(("#", '"', "'")):
            continue
        indent = len(line) - len(line.lstrip())
        # After the first word and the character following it: mid-line, like typing.
        space = line.find(" ", indent)
        col = space + 1 if 0 < space < len(line) - 4 else indent + len(body) // 2
        candidates.append((i, col))
    rng = random.Random(seed)
    rng.shuffle(candidates)
    return candidates[:n]


def _utf16_col(line: str, col: int) -> int:
    return len(line[:col].encode("utf-16-le")) // 2


async def lsp_part(
    text: str, model_opts: dict[str, Any], repeats: int, tmp: Path
) -> dict[str, Any]:
    """Latencies measured by an LSP client against the real server."""
    results: dict[str, Any] = {}
    client = PieClient()
    t0 = time.perf_counter()
    await client.start(model_opts, encodings=("utf-16",))
    cold_uri = client.open(tmp / "cold.py", text)
    lines = text.split("\n")
    last = len(lines) - 1
    await client.inline(cold_uri, last, 0)
    results["coldStartToFirstCompletionMs"] = (time.perf_counter() - t0) * 1000
    try:
        # Model loaded: open a fresh ~2k-token file and time its first completion.
        uri = client.open(tmp / "bench_file.py", text)
        _, seconds = await client.inline(uri, last, 0)
        results["firstCompletionAfterOpenMs"] = seconds * 1000
        latencies = []
        for line_no, col in inside_line_positions(text, repeats):
            _, seconds = await client.inline(uri, line_no, _utf16_col(lines[line_no], col))
            latencies.append(seconds * 1000)
        results["singleLineLatencyMs"] = summary(latencies)
        stats = await client.stats()
        results["serverTotals"] = stats.get("totals", {})
        results["model"] = stats.get("model", {})
    finally:
        await client.stop()
    return results


def engine_part(text: str, loaded: Any, runs: int = 3) -> dict[str, Any]:
    """Prefill and decode throughput in process, on the same prompt.

    With the engine's cache (appends in place, cache/growing.py) and with transformers'
    ``DynamicCache`` (appends by ``torch.cat``), run for run, alternating.
    """
    import torch
    from transformers import DynamicCache

    from cache.growing import growing_cache
    from completion.decode import decode_one_token, prefill
    from completion.fim import build_prompt, detect_format

    fmt = detect_format(loaded.tokenizer)
    prompt = build_prompt(loaded.tokenizer, fmt, text, len(text), 2048)
    ids = prompt.ids
    config = loaded.model.config
    makers = {
        "engine": lambda: growing_cache(config),
        "library": lambda: DynamicCache(config=config),
    }
    prefill_rates: dict[str, list[float]] = {name: [] for name in makers}
    decode_rates: dict[str, list[float]] = {name: [] for name in makers}
    for run in range(runs):
        for name in sorted(makers, reverse=bool(run % 2)):
            cache = makers[name]()
            t = time.perf_counter()
            logits = prefill(loaded.model, ids, cache, 0)
            prefill_rates[name].append(len(ids) / (time.perf_counter() - t))
            token = int(torch.argmax(logits))
            n = 64
            t = time.perf_counter()
            for i in range(n):
                logits = decode_one_token(loaded.model, token, cache, len(ids) + i)
                token = int(torch.argmax(logits))
            decode_rates[name].append(n / (time.perf_counter() - t))
    return {
        "promptTokens": len(ids),
        "prefillTokensPerSecond": summary(prefill_rates["engine"]),
        "decodeTokensPerSecond": summary(decode_rates["engine"]),
        "libraryCache": {
            "prefillTokensPerSecond": summary(prefill_rates["library"]),
            "decodeTokensPerSecond": summary(decode_rates["library"]),
        },
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "torchThreads": torch.get_num_threads(),
    }


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def run_baseline(args: argparse.Namespace) -> int:
    """Run the baseline benchmark; returns an exit code."""
    import tempfile

    from lsp_server.loading import load_with_progress, model_overrides

    model_opts = model_overrides(args)
    print("pie-lsp bench baseline: preparing the model and the source file...", file=sys.stderr)
    loaded = load_with_progress(**model_opts)
    tokenizer = loaded.tokenizer
    source, text = load_source(args.file, tokenizer)
    n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    print(f"  source: {source} cut to {n_tokens} tokens", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="pie-bench-") as tmp:
        print(
            f"  [1/2] LSP: cold start, first completion, {args.repeats} single-line completions",
            file=sys.stderr,
        )
        lsp = asyncio.run(lsp_part(text, model_opts, args.repeats, Path(tmp)))
    print("  [2/2] in process: prefill and decode throughput", file=sys.stderr)
    eng = engine_part(text, loaded)
    result = {
        "benchmark": "baseline",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _machine(),
        "source": {"file": source, "tokens": n_tokens},
        "lsp": lsp,
        "engine": eng,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "baseline.json"
    out.write_text(json.dumps(result, indent=2))
    print(_table(_baseline_rows(lsp, eng, source, n_tokens)))
    print(f"written: {out}")
    return 0


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def _baseline_rows(
    lsp: dict[str, Any], eng: dict[str, Any], source: str, n_tokens: int
) -> list[tuple[str, str]]:
    """The table's (label, figure) rows from the LSP and in-process parts' results."""
    lat = lsp["singleLineLatencyMs"]
    lib = eng["libraryCache"]
    return [
        (
            "model",
            f"{lsp['model'].get('id')} on {eng['device']} ({eng['dtype']}, {eng['torchThreads']} threads)",
        ),
        ("file", f"{Path(source).name}, {n_tokens} tokens"),
        ("cold start -> first completion", f"{lsp['coldStartToFirstCompletionMs']:.0f} ms"),
        ("first completion after open", f"{lsp['firstCompletionAfterOpenMs']:.0f} ms"),
        (
            "single-line latency",
            f"median {lat['median']:.0f} ms, p95 {lat['p95']:.0f} ms (n={lat['n']})",
        ),
        (
            "prefill",
            f"{eng['prefillTokensPerSecond']['median']:.0f} tokens/s ({eng['promptTokens']}-token prompt)",
        ),
        (
            "decode",
            f"{eng['decodeTokensPerSecond']['median']:.1f} tokens/s (64 tokens after the prompt)",
        ),
        (
            "same, library DynamicCache",
            f"prefill {lib['prefillTokensPerSecond']['median']:.0f} tokens/s, decode"
            f" {lib['decodeTokensPerSecond']['median']:.1f} tokens/s",
        ),
    ]


def axes(width: float, height: float) -> tuple[Any, Any]:
    """A matplotlib figure and its axes, drawn off-screen (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def report_header(benchmark: str, loaded: Any) -> dict[str, Any]:
    """The fields every benchmark report starts with."""
    return {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": loaded.id,
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "quantize": loaded.quantize,
    }
