"""``pie-lsp bench panel``: what a suggestions panel of k drafts costs and finds.

At ``--positions`` real positions in standard-library files (a code line cut after its
first word; the rest of that line removed from the document, what follows kept), the
same engine answers one inline completion and then a panel of ``--count`` drafts, each
from the same state: the document's prompt already in the cache (as when the user
opens the panel where ghost text was just shown, minus the shown suggestion) and
nothing remembered from the other request. Per position: both times, the drafts the
panel showed, whether the line that really followed is the greedy draft or any draft
(after normalising whitespace), and the drafts the syntax check flags.

Printed: the time ratio panel / inline (median, p95), distinct drafts per request,
best-of-k hit rate against the greedy one's (with n), syntax-invalid shares. JSON and a
plot in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .bench import axes, measure_verify_cost, report_header, summary
from .bench_edits import SOURCES, _code_lines


@dataclass(frozen=True)
class Case:
    """A position: the document with the rest of one line removed, and that rest."""

    source: str
    text: str
    cursor: int
    expected: str


@dataclass
class Row:
    """One position's outcome (times in ms)."""

    source: str
    expected: str
    inline_ms: float
    panel_ms: float
    ratio: float
    greedy: str
    drafts: list[str]
    syntax_valid: list[bool | None]
    greedy_hit: bool
    any_hit: bool
    batched: bool
    first_token_ms: float | None = None
    """The same count of suggestions by first-token branching, one after another
    (``complete`` with alternatives, as invoked inline completion cycles them)."""
    first_token_drafts: list[str] | None = None
    first_token_hit: bool | None = None


def make_cases(seed: int, n: int, max_chars: int) -> list[Case]:
    """``n`` positions after the first word of a code line, spread over the sources."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / s for s in SOURCES if (stdlib / s).is_file()]
    rng = random.Random(seed)
    cases: list[Case] = []
    for attempt in range(n * 20):
        if len(cases) >= n:
            break
        case = _case(rng, files[attempt % len(files)], max_chars)
        if case is not None:
            cases.append(case)
    return cases


def _case(rng: random.Random, path: Path, max_chars: int) -> Case | None:
    lines = path.read_text(encoding="utf-8").split("\n")
    code = [i for i in _code_lines(lines) if 40 < i < len(lines) - 10]
    for _ in range(20 if code else 0):
        i = rng.choice(code)
        line = lines[i]
        space = line.find(" ", len(line) - len(line.lstrip()))
        rest = line[space + 1 :].strip()
        if not space > 0 or len(rest) < 6:
            continue
        head = "\n".join(lines[:i]) + "\n" + line[: space + 1]
        tail = "\n" + "\n".join(lines[i + 1 :])
        start = max(0, len(head) - max_chars)
        start = head.find("\n", start) + 1 if start else 0
        return Case(path.name, head[start:] + tail[: max_chars // 3], len(head) - start, rest)
    return None


def normalised(text: str) -> str:
    """Whitespace runs as one space, ends stripped."""
    return " ".join(text.split())


def first_line(text: str) -> str:
    """A suggestion's first line, normalised: what the real line's rest is compared with.

    A Python header's suggestion carries its body's first line too.
    """
    return normalised(text.split("\n", 1)[0])


def run_case(engine: Any, case: Case, count: int, options: Any, compare: bool) -> Row:
    """Time one inline completion and one panel from the same state.

    With ``compare``, also first-token alternatives decoded one after another.
    """
    from completion.engine import CompletionRequest

    req = CompletionRequest(case.source, case.text, case.cursor, options, language="python")

    def fresh() -> None:  # the prompt cached, nothing remembered
        engine.forget(case.source)
        engine.prepare(req)

    fresh()
    t = time.perf_counter()
    inline = engine.complete(req)
    inline_ms = (time.perf_counter() - t) * 1000
    fresh()
    t = time.perf_counter()
    panel = engine.panel(req, count)
    panel_ms = (time.perf_counter() - t) * 1000
    texts = [item.text for item in panel.items]
    want = normalised(case.expected)
    first: tuple[float, list[str]] | None = None
    if compare:
        fresh()
        t = time.perf_counter()
        alt = engine.complete(req, alternatives=count - 1)
        first = ((time.perf_counter() - t) * 1000, [alt.text, *alt.alternatives])
    return Row(
        source=case.source,
        expected=case.expected,
        inline_ms=inline_ms,
        panel_ms=panel_ms,
        ratio=panel_ms / max(inline_ms, 1e-3),
        greedy=inline.text,
        drafts=texts,
        syntax_valid=[item.syntax_valid for item in panel.items],
        greedy_hit=first_line(inline.text) == want,
        any_hit=any(first_line(t) == want for t in texts),
        batched=panel.batched,
        first_token_ms=first[0] if first else None,
        first_token_drafts=first[1] if first else None,
        first_token_hit=any(first_line(t) == want for t in first[1]) if first else None,
    )


def report(rows: list[Row], header: dict[str, Any], count: int) -> dict[str, Any]:
    """The figures from the rows."""
    ratios = [r.ratio for r in rows]
    flags = [v for r in rows for v in r.syntax_valid]
    return {
        **header,
        "count": count,
        "positions": len(rows),
        "inlineMs": summary([r.inline_ms for r in rows]),
        "panelMs": summary([r.panel_ms for r in rows]),
        "ratio": summary(ratios),
        "distinct": summary([float(len(r.drafts)) for r in rows]),
        "greedyHits": sum(r.greedy_hit for r in rows),
        "anyHits": sum(r.any_hit for r in rows),
        "syntaxInvalid": sum(v is False for v in flags),
        "syntaxChecked": sum(v is not None for v in flags),
        "drafts": len(flags),
        "batched": all(r.batched for r in rows),
        **_first_token(rows),
        "rows": [asdict(r) for r in rows],
    }


def _first_token(rows: list[Row]) -> dict[str, Any]:
    """The first-token comparison's figures (empty without ``--compare``)."""
    compared = [r for r in rows if r.first_token_ms is not None and r.first_token_drafts]
    if not compared:
        return {}
    return {
        "firstToken": {
            "ratio": summary(
                [(r.first_token_ms or 0.0) / max(r.inline_ms, 1e-3) for r in compared]
            ),
            "distinct": summary([float(len(r.first_token_drafts or [])) for r in compared]),
            "anyHits": sum(bool(r.first_token_hit) for r in compared),
            "positions": len(compared),
        }
    }


def print_report(rep: dict[str, Any]) -> None:
    """The table on stdout."""
    n = rep["positions"]
    print(
        f"\n{rep['model']} ({rep['quantize']}), {n} positions, {rep['count']} drafts, {rep['date']}"
    )
    for key, label in (
        ("inlineMs", "inline ms"),
        ("panelMs", "panel ms"),
        ("ratio", "panel / inline"),
    ):
        s = rep[key]
        print(f"  {label:16} median {s['median']:8.2f}  p95 {s['p95']:8.2f}")
    distinct = rep["distinct"]
    print(
        f"  distinct drafts  median {distinct['median']:.0f} of {rep['count']} "
        f"(min {distinct['min']:.0f})"
    )
    print(
        f"  real line is the greedy draft {rep['greedyHits']}/{n}, "
        f"among the drafts {rep['anyHits']}/{n}"
    )
    print(
        f"  syntax-invalid drafts {rep['syntaxInvalid']} of {rep['syntaxChecked']} checked "
        f"({rep['drafts']} drafts; ranked last by construction)"
    )
    if "firstToken" in rep:
        ft = rep["firstToken"]
        print(
            f"  first-token alternatives one after another: / inline median "
            f"{ft['ratio']['median']:.2f} (p95 {ft['ratio']['p95']:.2f}), distinct median "
            f"{ft['distinct']['median']:.0f}, real line among them {ft['anyHits']}/{ft['positions']}"
        )


def plot(rep: dict[str, Any], path: Path) -> None:
    """Panel time against inline time per position, with the 1x and 2x lines."""
    rows = rep["rows"]
    xs, ys = [r["inline_ms"] for r in rows], [r["panel_ms"] for r in rows]
    fig, ax = axes(5.5, 4.5)
    ax.scatter(xs, ys, s=14)
    top = max(xs + ys) * 1.05
    for k in (1, 2):
        ax.plot([0, top / k], [0, top], linestyle="--", linewidth=0.8, label=f"{k}x")
    ax.set_xlabel("one inline completion (ms)")
    ax.set_ylabel(f"panel of {rep['count']} drafts (ms)")
    ax.set_title(f"{rep['model']}: panel / inline median {rep['ratio']['median']:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_panel(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code."""
    from completion.engine import CompletionOptions
    from completion.models import load_model

    from .engines import PrepareEngine

    loaded = load_model(args.model, quantize=args.quantize)
    engine = PrepareEngine(loaded)
    measure_verify_cost(engine)  # as the server does once the model is ready
    options = CompletionOptions(max_tokens=args.max_tokens)
    cases = make_cases(args.seed, args.positions, args.max_chars)
    rows = []
    for i, case in enumerate(cases):
        rows.append(run_case(engine, case, args.count, options, args.compare))
        r = rows[-1]
        print(
            f"[{i + 1}/{len(cases)}] {case.source}: inline {r.inline_ms:.0f} ms, panel "
            f"{r.panel_ms:.0f} ms ({r.ratio:.2f}x), {len(r.drafts)} drafts",
            file=sys.stderr,
        )
    rep = report(rows, report_header("panel", loaded), args.count)
    print_report(rep)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"panel-{args.model.replace('/', '_')}"
    (args.out / f"{name}.json").write_text(json.dumps(rep, indent=2))
    plot(rep, args.out / f"{name}.png")
    print(f"written: {args.out / name}.json, .png", file=sys.stderr)
    return 0
