"""``pie-lsp bench step``: the decode step's numeric paths side by side, in one run.

For one model and each path (``fp32``; ``bf16``, the whole model in bf16; ``int8`` and
``int4``, :mod:`completion.lowbit`'s low-bit linear layers), on a real ~2,000-token
file: the time of a one-token decode step (median and p95 over ``--steps`` steps at the
file's end), of a forward over k = 2, 4, 8, 16 tokens on top of it (verify steps), of
the prompt's prefill (512-token chunks), and the greedy tokens of ``--steps`` steps:
how many agree with the fp32 path's, and where the first difference is. Then single-line
completions (greedy, as the server makes them) at ``--agreement`` held-out positions in
other standard-library files: how many equal the fp32 path's exactly. Ratios are against
the fp32 path measured in the same run. Writes ``step-<model>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from typing import Any, NamedTuple

import torch

from .bench import load_source, percentile, report_header

PATHS = ("fp32", "bf16", "int8", "int4")
VERIFY = (2, 4, 8, 16)


class PathRun(NamedTuple):
    """What one numeric path measured."""

    path: str
    step_ms: list[float]
    verify_ms: dict[int, float]
    prefill_s: float
    tokens: list[int]
    completions: list[str]
    """Single-line completions at the held-out positions."""


def load_path(model: str, path: str) -> Any:
    """The model loaded for ``path`` (see the module doc)."""
    from lsp_server.loading import load_with_progress

    if path == "bf16":
        return load_with_progress(model, "cpu", "bfloat16", "none")
    quantize = path if path in ("int8", "int4") else "none"
    return load_with_progress(model, "cpu", "float32", quantize)


def choose_fast_paths(loaded: Any) -> None:
    """Pick the CPU fast paths for short forwards, as the server does once it is ready.

    They are chosen when the verify cost curve is measured (completion/fastpath.py).
    """
    from completion.engine import Engine

    engine = Engine(loaded)
    try:
        _ = engine.costs
    finally:
        engine.close()


@torch.inference_mode()
def measure(loaded: Any, ids: list[int], steps: int, repeats: int) -> PathRun:
    """Prefill ``ids``, decode ``steps`` greedy tokens one at a time, then time forwards.

    The forwards: each size in :data:`VERIFY` on top of the decoded tokens, the fastest
    of ``repeats``, cropped back after each.
    """
    from cache.growing import growing_cache
    from completion.decode import decode_one_token, prefill
    from completion.verify import forward_all

    model = loaded.model
    cache = growing_cache(model.config)
    t = time.perf_counter()
    logits = prefill(model, ids, cache, 0)
    prefill_s = time.perf_counter() - t
    token, tokens, step_ms = int(logits.argmax()), [], []
    for i in range(steps):
        t = time.perf_counter()
        logits = decode_one_token(model, token, cache, len(ids) + i)
        step_ms.append((time.perf_counter() - t) * 1000)
        token = int(logits.argmax())
        tokens.append(token)
    end = len(ids) + steps
    verify_ms = {}
    for k in VERIFY:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            forward_all(model, tokens[:k], cache, end)
            best = min(best, (time.perf_counter() - t) * 1000)
            cache.crop(-k)
        verify_ms[k] = best
    return PathRun("", step_ms, verify_ms, prefill_s, tokens, [])


def complete_lines(loaded: Any, positions: list[Any]) -> list[str]:
    """Single-line greedy completions at ``positions``, as the server makes them."""
    from completion.engine import CompletionOptions, CompletionRequest, Engine

    engine = Engine(loaded)
    opts = CompletionOptions(multiline="never", max_tokens=32)
    try:
        return [
            engine.complete(CompletionRequest(f"p{i}", p.text, p.cursor, opts)).text
            for i, p in enumerate(positions)
        ]
    finally:
        engine.close()


def summarize(run: PathRun, base: PathRun) -> dict[str, Any]:
    """One path's figures, with ratios to ``base`` (fp32) and agreement with its tokens."""
    steady = run.step_ms[3:]  # the first steps warm the kernels and the allocator
    base_steady = base.step_ms[3:]
    median = statistics.median(steady)
    first = next(
        (i for i, (a, b) in enumerate(zip(run.tokens, base.tokens, strict=True)) if a != b),
        None,
    )
    return {
        "path": run.path,
        "stepMs": {"median": median, "p95": percentile(steady, 95)},
        "tokensPerSecond": 1000 / median,
        "speedupVsFp32": statistics.median(base_steady) / median,
        "verifyMs": run.verify_ms,
        "verifyRelative": {k: v / median for k, v in run.verify_ms.items()},
        "prefillSeconds": run.prefill_s,
        "prefillVsFp32": base.prefill_s / run.prefill_s,
        "sameTokensAsFp32": sum(a == b for a, b in zip(run.tokens, base.tokens, strict=True)),
        "firstDifference": first,
        "steps": len(run.tokens),
        "sameCompletionsAsFp32": sum(
            a == b for a, b in zip(run.completions, base.completions, strict=True)
        ),
        "completions": len(run.completions),
    }


def run_step(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code."""
    paths = [p for p in args.paths.split(",") if p]
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths or paths[0] != "fp32":
        print(f"--paths: fp32 first, then any of {PATHS}; got {args.paths}", file=sys.stderr)
        return 2
    from .bench_decode import make_positions

    positions = [p for p in make_positions(args.seed, args.agreement, 6000) if p.kind == "line"]
    runs: list[PathRun] = []
    header: dict[str, Any] = {}
    for path in paths:
        loaded = load_path(args.model, path)
        if not header:
            header = report_header("step", loaded)
            _, text = load_source(None, loaded.tokenizer)
            ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        print(f"{path}: {len(ids)} prompt tokens, {args.steps} steps...", file=sys.stderr)
        choose_fast_paths(loaded)
        run = measure(loaded, ids, args.steps, args.repeats)
        runs.append(run._replace(path=path, completions=complete_lines(loaded, positions)))
        del loaded
        gc.collect()
    rows = [summarize(run, runs[0]) for run in runs]
    report = {
        **header,
        "promptTokens": len(ids),
        "threads": torch.get_num_threads(),
        "paths": rows,
    }
    print_report(report)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"step-{args.model.replace('/', '_')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}", file=sys.stderr)
    return 0


def print_report(report: dict[str, Any]) -> None:
    """The table on stdout."""
    print(
        f"\n{report['model']}: {report['promptTokens']} prompt tokens, "
        f"{report['threads']} threads, {report['date']}"
    )
    print(
        f"{'path':6} {'step ms med/p95':>16} {'tok/s':>7} {'x fp32':>7} "
        f"{'verify k=2/4/8/16 (x step)':>28} {'prefill s':>10} {'same tokens':>12}"
    )
    for r in report["paths"]:
        rel = "/".join(f"{r['verifyRelative'][k]:.2f}" for k in VERIFY)
        print(
            f"{r['path']:6} {r['stepMs']['median']:7.1f}/{r['stepMs']['p95']:<8.1f} "
            f"{r['tokensPerSecond']:7.1f} {r['speedupVsFp32']:7.2f} {rel:>28} "
            f"{r['prefillSeconds']:10.2f} {r['sameTokensAsFp32']:>5}/{r['steps']:<3} "
            f"(first diff {r['firstDifference']}); same completions "
            f"{r['sameCompletionsAsFp32']}/{r['completions']}"
        )
