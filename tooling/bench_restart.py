"""``pie-lsp bench restart``: the first completion after a restart, from saved caches.

Ten standard-library files (the project did not write them), each copied into a
temporary workspace with one code line cut after its first word, deep enough that the
prompt is ``--context`` (4,096) tokens of text before the cursor. Servers are started
over stdio, one after another, on stores in the temporary directory:

1. **cold**: a fresh store; per file: open, ask (the time from ``didOpen`` to the
   answer), close (the cache is saved; the next file waits for the save).
2. **unchanged**: a new server on that store; per file: open, ask: the time, the
   answer (it must equal the cold one) and ``diskHits``.
3. **changed**: per kind of one-line edit (a line inserted, deleted, changed, inside
   the prompt's window but not in its re-encoded tail), the file is edited on disk and
   a new server on a copy of the cold store opens it and asks: the time and the answer.
4. **reference**: a server with ``cache.strategy`` ``recompute`` and no store opens each
   edited file and asks: a cold start on the changed text, and the answer the repaired
   cache must give.

Printed: median and p95 of each, the ratios cold / warm per file (median), the share of
changed cases equal to ``recompute``, the store's bytes per 1,000 prompt tokens and its
load time per 1,000 tokens (``diskLoadMs``) against the cold prefill's. JSON and a plot
in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bench import axes, summary
from .bench_edits import _code_lines
from .client import PieClient

FILES = (
    "argparse.py",
    "difflib.py",
    "configparser.py",
    "dataclasses.py",
    "pathlib/_local.py",
    "functools.py",
    "inspect.py",
    "typing.py",
    "logging/__init__.py",
    "tarfile.py",
    "textwrap.py",
    "enum.py",
    "subprocess.py",
    "ast.py",
)
EDITS = ("insert", "delete", "change")
PAST = {"insert": "inserted", "delete": "deleted", "change": "changed"}
WARMUP = "heapq.py"
"""A file completed first in every server (not measured): calibration and the oracle
start, so that the measured requests find the server settled."""


@dataclass(frozen=True)
class Case:
    """A workspace file: its text with the cursor line cut, and the cursor."""

    name: str
    text: str
    line: int
    col: int
    window_start: int
    """The first line inside the prompt's window (edits go at or after it)."""


@dataclass
class Row:
    """One file's outcomes (times in ms from ``didOpen`` to the answer)."""

    name: str
    cold_ms: float
    cold: str
    warm_ms: float = 0.0
    warm: str = ""
    changed_ms: dict[str, float] = field(default_factory=dict)
    changed: dict[str, str] = field(default_factory=dict)
    reference_ms: dict[str, float] = field(default_factory=dict)
    reference: dict[str, str] = field(default_factory=dict)


def make_cases(tokenizer: Any, context: int, n: int, seed: int) -> list[Case]:
    """``n`` files whose cursor has at least ``context`` tokens of text before it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    rng = random.Random(seed)
    cases: list[Case] = []
    for name in FILES:
        path = stdlib / name
        if len(cases) >= n or not path.is_file():
            continue
        case = _case(rng, name, path.read_text(encoding="utf-8"), tokenizer, context)
        if case is not None:
            cases.append(case)
    return cases


def _case(rng: random.Random, name: str, text: str, tokenizer: Any, context: int) -> Case | None:
    lines = text.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    # The first line whose start has ``context`` tokens before it (+10%: room for edits).
    ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = ids["offset_mapping"]
    if len(offsets) < context * 1.2:
        return None
    first = next(i for i, s in enumerate(starts) if s >= offsets[int(context * 1.1)][0])
    code = [i for i in _code_lines(lines) if first <= i < len(lines) - 5]
    rng.shuffle(code)
    for i in code:
        line = lines[i]
        space = line.find(" ", len(line) - len(line.lstrip()))
        if space > 0 and len(line[space + 1 :].strip()) >= 6:
            cut = line[: space + 1]
            doc = "\n".join([*lines[:i], cut, *lines[i + 1 :]])
            # The window: the last ``context`` tokens before the cursor.
            window_char = offsets[max(0, _tokens_before(offsets, starts[i] + len(cut)) - context)][
                0
            ]
            window_line = next(j for j, s in enumerate(starts) if s > window_char)
            return Case(name.replace("/", "_"), doc, i, len(cut), window_line)
    return None


def _tokens_before(offsets: list[tuple[int, int]], char: int) -> int:
    return sum(1 for start, _ in offsets if start < char)


def edited(case: Case, kind: str, rng: random.Random) -> tuple[str, int]:
    """``case``'s text after a one-line edit of ``kind``, and the cursor's new line.

    The edit lands on a code line in the prompt's window, at least 40 lines above the
    cursor (outside the tail the cache re-encodes anyway).
    """
    lines = case.text.split("\n")
    top = max(case.window_start + 1, 1)
    code = [i for i in _code_lines(lines) if top <= i < case.line - 40]
    row = rng.choice(code)
    line = lines[row]
    indent = line[: len(line) - len(line.lstrip())]
    if kind == "insert":
        lines.insert(row, f"{indent}# reviewed while the editor was closed")
        return "\n".join(lines), case.line + 1
    if kind == "delete":
        del lines[row]
        return "\n".join(lines), case.line - 1
    words = [w for w in line.replace("(", " ").replace(".", " ").split() if w.isidentifier()]
    word = max(words, key=len) if words else ""
    lines[row] = line.replace(word, word + "_v2", 1) if word else line + "  # changed"
    return "\n".join(lines), case.line


async def _server(kv: Path | None, options: dict[str, Any]) -> PieClient:
    client = PieClient(kv_dir=kv)
    await client.start(options)
    return client


async def _settle(client: PieClient, workspace: Path, timeout: float = 120.0) -> None:
    """Settle a new server: complete in the warm-up file, wait for calibration.

    The file is then closed and, where the server saves, its save waited for.
    """
    text = (Path(sysconfig.get_paths()["stdlib"]) / WARMUP).read_text(encoding="utf-8")
    lines = text.split("\n")
    uri = client.open(workspace / f"warmup_{WARMUP}", text)
    await asyncio.wait_for(client.inline(uri, len(lines) - 1, 0), 600)
    end = time.perf_counter() + timeout
    while not (await client.stats())["totals"].get("verifyCost") and time.perf_counter() < end:
        await asyncio.sleep(0.5)
    saves = (await client.stats())["totals"]["diskSaves"]
    client.close(uri)
    if client.kv_dir is not None:
        await _saved(client, saves + 1)


async def _ask(client: PieClient, path: Path, text: str, line: int, col: int) -> tuple[str, float]:
    """Open ``path`` with ``text`` and ask at once: the answer and ms since ``didOpen``."""
    t0 = time.perf_counter()
    uri = client.open(path, text)
    answer, _ = await asyncio.wait_for(client.inline(uri, line, col), 600)
    return answer, (time.perf_counter() - t0) * 1000


async def _saved(client: PieClient, count: int, timeout: float = 60.0) -> None:
    """Wait until the server has written ``count`` entries (saves run in the background)."""
    end = time.perf_counter() + timeout
    while (await client.stats())["totals"]["diskSaves"] < count and time.perf_counter() < end:
        await asyncio.sleep(0.1)


async def run_all(args: argparse.Namespace, cases: list[Case], tmp: Path) -> dict[str, Any]:
    """The four server runs; the rows and the stores' figures."""
    options = {"model": args.model, "completion": {"contextTokens": args.context}}
    workspace, store = tmp / "workspace", tmp / "kv"
    workspace.mkdir()
    rows: list[Row] = []
    client = await _server(store, options)
    try:
        await _settle(client, workspace)
        base = (await client.stats())["totals"]["diskSaves"]
        for i, case in enumerate(cases):
            path = workspace / case.name
            path.write_text(case.text, encoding="utf-8")
            answer, ms = await _ask(client, path, case.text, case.line, case.col)
            rows.append(Row(case.name, ms, answer))
            client.close(path.resolve().as_uri())
            await _saved(client, base + i + 1)
            _say(f"cold {case.name}: {ms:.0f} ms")
        model = (await client.stats())["model"]
    finally:
        await client.stop()
    figures = _store_figures(store)
    for kind in EDITS:  # copies taken before any later server touches the store
        shutil.copytree(store, tmp / f"kv-{kind}")

    client = await _server(store, options)
    try:
        await _settle(client, workspace)
        for row, case in zip(rows, cases, strict=True):
            row.warm, row.warm_ms = await _ask(
                client, workspace / case.name, case.text, case.line, case.col
            )
            _say(f"unchanged {case.name}: {row.warm_ms:.0f} ms")
        warm_totals = (await client.stats())["totals"]
    finally:
        await client.stop()

    rng = random.Random(args.seed)
    changes = {(c.name, k): edited(c, k, rng) for c in cases for k in EDITS}
    totals: dict[str, Any] = {"unchanged": warm_totals}
    for kind in EDITS:
        client = await _server(tmp / f"kv-{kind}", options)
        try:
            await _settle(client, workspace)
            for row, case in zip(rows, cases, strict=True):
                text, line = changes[(case.name, kind)]
                path = workspace / case.name
                path.write_text(text, encoding="utf-8")
                row.changed[kind], row.changed_ms[kind] = await _ask(
                    client, path, text, line, case.col
                )
                _say(f"{kind} {case.name}: {row.changed_ms[kind]:.0f} ms")
            totals[kind] = (await client.stats())["totals"]
        finally:
            await client.stop()

    reference = {**options, "cache": {"strategy": "recompute", "diskMB": 0}}
    client = await _server(None, reference)
    try:
        await _settle(client, workspace)
        for kind in EDITS:
            for row, case in zip(rows, cases, strict=True):
                text, line = changes[(case.name, kind)]
                path = workspace / f"ref-{kind}-{case.name}"
                row.reference[kind], row.reference_ms[kind] = await _ask(
                    client, path, text, line, case.col
                )
                client.close(path.resolve().as_uri())
                _say(f"recompute {kind} {case.name}: {row.reference_ms[kind]:.0f} ms")
    finally:
        await client.stop()
    return {"model": model, "rows": rows, "store": figures, "totals": totals}


def _store_figures(store: Path) -> dict[str, float]:
    """Bytes on disk per 1,000 prompt tokens, from the entries' manifests."""
    tokens = sum(len(json.loads(m.read_text())["ids"]) for m in store.glob("*.json"))
    size = sum(f.stat().st_size for f in store.iterdir() if f.is_file())
    return {"entries": len(list(store.glob("*.json"))), "tokens": tokens, "bytes": size}


def report(run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The figures."""
    rows: list[Row] = run["rows"]
    unchanged = [r.cold_ms / max(r.warm_ms, 1e-3) for r in rows]
    changed = [r.reference_ms[k] / max(r.changed_ms[k], 1e-3) for r in rows for k in EDITS]
    equal = sum(r.changed[k] == r.reference[k] for r in rows for k in EDITS)
    store = run["store"]
    warm = run["totals"]["unchanged"]
    hits = max(1, warm["diskHits"])
    per_k = store["tokens"] / 1000 or 1.0
    return {
        "benchmark": "restart",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": run["model"].get("id"),
        "quantize": run["model"].get("quantize"),
        "device": run["model"].get("device"),
        "context": args.context,
        "files": len(rows),
        "coldMs": summary([r.cold_ms for r in rows]),
        "unchangedMs": summary([r.warm_ms for r in rows]),
        "unchangedRatio": summary(unchanged),
        "unchangedEqual": sum(r.warm == r.cold for r in rows),
        "diskHits": warm["diskHits"],  # the warm-up file's too
        "changedMs": summary([r.changed_ms[k] for r in rows for k in EDITS]),
        "recomputeMs": summary([r.reference_ms[k] for r in rows for k in EDITS]),
        "changedRatio": summary(changed),
        "changedEqualRecompute": equal,
        "changedCases": len(rows) * len(EDITS),
        "diskRepairs": sum(run["totals"][k]["diskRepairs"] for k in EDITS),
        "gatesDeferred": sum(run["totals"][k]["gatesDeferred"] for k in EDITS),
        "gatedRefreshes": sum(run["totals"][k]["gatedRefreshes"] for k in EDITS),
        "bytesPer1kTokens": store["bytes"] / per_k,
        "loadMsPer1kTokens": warm["diskLoadMs"] / hits / (store["tokens"] / len(rows) / 1000),
        "coldMsPer1kTokens": statistics.median(r.cold_ms for r in rows) / (args.context / 1000),
        "store": store,
        "rows": [asdict(r) for r in rows],
    }


def print_report(rep: dict[str, Any]) -> None:
    """The table on stdout."""
    print(
        f"\n{rep['model']} ({rep['quantize']}, {rep['device']}), {rep['files']} files, "
        f"{rep['context']}-token prompts, {rep['date']}"
    )
    for key, label in (
        ("coldMs", "cold start ms"),
        ("unchangedMs", "restart, same file"),
        ("unchangedRatio", "  cold / restart"),
        ("recomputeMs", "cold, changed file"),
        ("changedMs", "restart, changed"),
        ("changedRatio", "  cold / restart"),
    ):
        s = rep[key]
        print(f"  {label:20} median {s['median']:9.2f}  p95 {s['p95']:9.2f}")
    print(
        f"  same answer as cold {rep['unchangedEqual']}/{rep['files']}, diskHits "
        f"{rep['diskHits']}; changed = recompute {rep['changedEqualRecompute']}/"
        f"{rep['changedCases']}, diskRepairs {rep['diskRepairs']} (gate: "
        f"{rep['gatedRefreshes']} refreshed, {rep['gatesDeferred']} deferred)"
    )
    print(
        f"  store {rep['bytesPer1kTokens'] / 1e6:.1f} MB per 1,000 tokens; load "
        f"{rep['loadMsPer1kTokens']:.0f} ms per 1,000 tokens (cold prefill and answer: "
        f"{rep['coldMsPer1kTokens']:.0f} ms per 1,000)"
    )


def plot(rep: dict[str, Any], path: Path) -> None:
    """Per file: cold, restart unchanged, restart changed (each edit kind)."""
    rows = rep["rows"]
    xs = range(len(rows))
    fig, ax = axes(8, 4.5)
    ax.bar([x - 0.3 for x in xs], [r["cold_ms"] for r in rows], 0.2, label="cold start")
    ax.bar([x - 0.1 for x in xs], [r["warm_ms"] for r in rows], 0.2, label="restart, same file")
    for i, kind in enumerate(EDITS):
        ax.bar(
            [x + 0.1 + 0.2 * i / len(EDITS) for x in xs],
            [r["changed_ms"][kind] for r in rows],
            0.2 / len(EDITS),
            label=f"restart, line {PAST[kind]}",
        )
    ax.set_xticks(list(xs), [r["name"] for r in rows], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("didOpen to answer (ms)")
    ax.set_title(
        f"{rep['model']}: first completion after a restart "
        f"(median {rep['unchangedRatio']['median']:.1f}x / {rep['changedRatio']['median']:.1f}x)"
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_restart(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code."""
    from transformers import AutoTokenizer

    from completion.models import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(args.model))
    cases = make_cases(tokenizer, args.context, args.files, args.seed)
    if len(cases) < args.files:
        _say(f"only {len(cases)} standard-library files are long enough")
    with tempfile.TemporaryDirectory(prefix="pie-bench-restart-") as tmp:
        run = asyncio.run(run_all(args, cases, Path(tmp)))
    rep = report(run, args)
    print_report(rep)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"restart-{args.model.replace('/', '_')}"
    (args.out / f"{name}.json").write_text(json.dumps(rep, indent=2))
    plot(rep, args.out / f"{name}.png")
    _say(f"written: {args.out / name}.json, .png")
    return 0
