"""``pie-lsp bench startup``: the first completion after ``initialized``, idle and busy.

A new server's first completion must not wait behind the verify-cost measurement (it
once held the only model worker for 22-80 s on a busy machine). This starts the real
server over stdio ``--repeats`` times with the machine idle and as many times with
``--hogs`` busy-loop processes beside it, interleaved, and times each first completion
from ``initialized`` (the model loads meanwhile; the request is sent at once and waits
for it). Beside it, in process: a plain one-token forward on the same model, idle and
busy, whose slowdown is the bar the first completion is held to.

Prints medians and p95 and writes ``<out>/startup.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .bench import summary
from .client import PieClient

TEXT = "import os\n\n\ndef list_files(path):\n    found = []\n    for root, dirs, files in os.walk("


def _spin() -> None:
    while True:
        pass


@contextmanager
def hogs(n: int) -> Iterator[None]:
    """``n`` busy-loop processes for the duration (none for ``n == 0``)."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        time.sleep(0.5 if procs else 0)  # let the scheduler see them
        yield
    finally:
        for p in procs:
            p.kill()
            p.join()


async def first_completion(model: str | None) -> dict[str, float]:
    """Start a server; seconds from ``initialized`` to the first completion's answer."""
    client = PieClient()
    await client.start({"model": model} if model else {})
    t0 = time.perf_counter()  # start() sent initialized last
    try:
        uri = client.open(Path("startup_bench.py").resolve(), TEXT)
        lines = TEXT.split("\n")
        await client.inline(uri, len(lines) - 1, len(lines[-1]))
        first = time.perf_counter() - t0
        stats = await client.stats()
        return {
            "firstCompletionS": first,
            "loadS": float(stats["model"].get("loadSeconds") or 0.0),
            "calibrationS": float(stats["totals"].get("calibrationSeconds") or 0.0),
        }
    finally:
        await client.stop()


def forward_ms(model: str, n: int = 30) -> float:
    """Median time of a one-token forward on a 256-token cache, in process."""
    import torch

    from cache.growing import growing_cache
    from completion.models import load_model

    loaded = load_model(model, "auto", "auto")
    m = loaded.model
    ids = torch.randint(0, int(m.config.vocab_size), (1, 256))
    times = []
    with torch.inference_mode():
        cache = growing_cache(m.config)
        m(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        for _ in range(n):
            t = time.perf_counter()
            m(input_ids=ids[:, :1], past_key_values=cache, use_cache=True, logits_to_keep=1)
            times.append((time.perf_counter() - t) * 1000)
            cache.crop(-1)
    return statistics.median(times)


def run_startup(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code."""
    model = args.model or "default"
    runs: dict[str, list[dict[str, float]]] = {"idle": [], "busy": []}
    for i in range(args.repeats):
        for case in ("idle", "busy") if i % 2 == 0 else ("busy", "idle"):
            with hogs(args.hogs if case == "busy" else 0):
                run = asyncio.run(first_completion(args.model))
            runs[case].append(run)
            print(f"{case} #{i + 1}: {run}", file=sys.stderr)
    with hogs(0):
        idle_forward = forward_ms(model)
    with hogs(args.hogs):
        busy_forward = forward_ms(model)
    first = {case: summary([r["firstCompletionS"] for r in rs]) for case, rs in runs.items()}
    ratio = first["busy"]["median"] / first["idle"]["median"]
    bar = busy_forward / idle_forward
    report: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "model": model,
        "hogs": args.hogs,
        "firstCompletionS": first,
        "busyOverIdle": ratio,
        "forwardMs": {"idle": idle_forward, "busy": busy_forward},
        "forwardBusyOverIdle": bar,
        "met": ratio <= bar,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps(report, indent=2))
    for case in ("idle", "busy"):
        s = first[case]
        print(f"first completion after initialized, {case}: median {s['median']:.2f} s, "
              f"p95 {s['p95']:.2f} s (n={s['n']})")  # fmt: skip
    print(f"busy / idle: {ratio:.2f}x; a plain forward: {idle_forward:.1f} -> "
          f"{busy_forward:.1f} ms ({bar:.2f}x); met: {ratio <= bar}")  # fmt: skip
    print(f"wrote {args.out / 'startup.json'}")
    return 0
