"""``pie-lsp bench drift``: where the drift budget (``cache.staleBudget``) should sit.

An editing session replayed on a real file (the standard library): a window of N tokens
ending inside a code line (the cursor), then a stream of edits above the cursor (a line
inserted from elsewhere in the file, a line deleted, a line duplicated), each followed by
a completion at the cursor, as a user who edits and keeps asking would see it. Stale
tokens pile up edit after edit; the server re-encodes them in the background once the
document holds more than the budget and is idle, which here happens between steps.

For every budget in one run, on the same sessions: agreement of the completion
(single-line mode, up to 32 tokens, greedy, the default confidence gate) with
``recompute``, the stale tokens at completion time, and the background refresh work per
edit (tokens re-encoded, milliseconds). A table on stdout and ``drift.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .bench import measure_verify_cost, report_header
from .bench_edits import SOURCES, Case, edit_similarity, make_case

if TYPE_CHECKING:
    from completion.engine import CompletionOptions

    from .engines import PrepareEngine

NO_LIMIT = -1


class DocState(NamedTuple):
    """The document's text and the cursor in it."""

    text: str
    cursor: int


def edit_stream(
    rng: random.Random, text: str, cursor: int, pool: list[str], steps: int
) -> list[DocState]:
    """``steps`` successive (text, cursor) states, each one line edit above the cursor."""
    states = []
    for _ in range(steps):
        head, tail = text[:cursor], text[cursor:]
        lines = head.split("\n")
        editable = len(lines) - 1  # full lines before the cursor's line
        at = rng.randrange(max(1, editable // 20), max(2, int(editable * 0.9)))
        op = rng.choice(("insert", "delete", "duplicate"))
        if op == "insert":
            lines.insert(at, rng.choice(pool))
        elif op == "delete" and editable > 10:
            del lines[at]
        else:
            lines.insert(at, lines[at])
        head = "\n".join(lines)
        text, cursor = head + tail, len(head)
        states.append(DocState(text, cursor))
    return states


@dataclass(frozen=True)
class DriftRow:
    """One completion after an edit, under one budget: a JSON ``rows`` entry."""

    session: int
    step: int
    budget: int
    exact: bool
    """The completion equals recompute's."""
    similarity: float
    stale_at_completion: int
    gated: bool
    refreshed_tokens: int
    """Re-encoded by the background refresh after the completion (0: none due)."""
    refresh_ms: float
    completion_ms: float

    def to_json(self) -> dict[str, Any]:
        """The row as written to the report (camelCase keys, in this order)."""
        return {
            "session": self.session,
            "step": self.step,
            "budget": self.budget,
            "exact": self.exact,
            "similarity": self.similarity,
            "staleAtCompletion": self.stale_at_completion,
            "gated": self.gated,
            "refreshedTokens": self.refreshed_tokens,
            "refreshMs": self.refresh_ms,
            "completionMs": self.completion_ms,
        }


class _Session(NamedTuple):
    """A document as opened (the case's unedited text) and the states its edits make."""

    case: Case
    states: list[DocState]


def _make_sessions(
    rng: random.Random, files: list[Path], tok: Any, args: argparse.Namespace
) -> list[_Session]:
    """Up to ``args.sessions`` editing sessions of ``args.steps`` edits each."""
    sessions: list[_Session] = []
    for attempt in range(args.sessions * 20):
        if len(sessions) >= args.sessions:
            break
        path = files[attempt % len(files)]
        case = make_case(rng, path, tok, args.size, "insert", "first")
        if case is None:
            continue
        pool = [ln for ln in path.read_text(encoding="utf-8").split("\n") if ln.strip()]
        states = edit_stream(rng, case.before, case.cursor_before, pool, args.steps)
        sessions.append(_Session(case, states))
    return sessions


@dataclass
class _DriftBench:
    """The reference engine (recompute) and one pie engine per budget, on one model."""

    ref: PrepareEngine
    engines: dict[int, PrepareEngine]
    """By budget (``NO_LIMIT``: never refreshed)."""
    size: int
    confidence_margin: float
    rows: list[DriftRow] = field(default_factory=list)

    def options(self, strategy: str) -> CompletionOptions:
        """Single-line, 32 tokens, no speculation: the figure is the cache's."""
        from completion.engine import CompletionOptions

        return CompletionOptions(
            max_tokens=32,
            multiline="never",
            context_tokens=self.size + 400,
            strategy=strategy,  # type: ignore[arg-type]
            speculative=False,  # the figure is the cache's
            confidence_margin=self.confidence_margin,
        )

    def run_session(self, s: int, session: _Session, bar: Any) -> None:
        """Replay session ``s``: each edit, then a completion under every budget."""
        from completion.engine import CompletionRequest

        key, case = f"session{s}", session.case
        for eng in self.engines.values():  # the document as opened: an exact cache
            eng.prepare(
                CompletionRequest(key, case.before, case.cursor_before, self.options("pie"))
            )
        for step, (text, cursor) in enumerate(session.states):
            gold = self.ref.complete(
                CompletionRequest(key, text, cursor, self.options("recompute"))
            )
            for budget, eng in self.engines.items():
                r = eng.complete(CompletionRequest(key, text, cursor, self.options("pie")))
                stale = eng.stale_tokens(key)
                # Idle time after the completion: the background refresh, if due.
                refreshed, ms = 0, 0.0
                if budget != NO_LIMIT and stale > budget:
                    t = time.perf_counter()
                    refreshed = eng.refresh(key)
                    ms = (time.perf_counter() - t) * 1000
                self.rows.append(
                    DriftRow(
                        session=s,
                        step=step,
                        budget=budget,
                        exact=r.text == gold.text,
                        similarity=edit_similarity(r.text, gold.text),
                        stale_at_completion=stale,
                        gated=r.gated,
                        refreshed_tokens=refreshed,
                        refresh_ms=ms,
                        completion_ms=r.total_ms,
                    )
                )
            bar.update(1)
        for eng in (self.ref, *self.engines.values()):
            eng.forget(key)


def run_drift(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code (1 when the model has no pie)."""
    from tqdm import tqdm

    from completion.engine import CONFIDENCE_MARGIN
    from lsp_server.loading import load_with_progress, model_overrides

    from .engines import PrepareEngine

    o = model_overrides(args)
    loaded = load_with_progress(**o)
    budgets = [int(b) for b in args.budgets.split(",")]
    margin = CONFIDENCE_MARGIN if args.confidence_margin is None else args.confidence_margin
    bench = _DriftBench(
        PrepareEngine(loaded), {b: PrepareEngine(loaded) for b in budgets}, args.size, margin
    )
    if bench.ref.rerotator is None:
        print(f"pie is not supported by this model ({bench.ref.pie_unsupported})", file=sys.stderr)
        return 1
    measure_verify_cost(bench.ref)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / s for s in SOURCES if (stdlib / s).is_file()]
    sessions = _make_sessions(random.Random(args.seed), files, loaded.tokenizer, args)
    bar = tqdm(total=len(sessions) * args.steps, desc="edit steps", file=sys.stderr)
    for s, session in enumerate(sessions):
        bench.run_session(s, session, bar)
    bar.close()
    report = summarize(bench.rows, budgets, loaded, args)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "drift" if o.get("model", "default") == "default" else f"drift-{Path(o['model']).name}"
    rows = [r.to_json() for r in bench.rows]
    (args.out / f"{name}.json").write_text(json.dumps({**report, "rows": rows}, indent=1))
    print_report(report)
    print(f"written: {args.out / (name + '.json')}")
    return 0


def summarize(
    rows: list[DriftRow], budgets: list[int], loaded: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """Per budget: agreement, staleness, refresh work."""
    out: dict[str, Any] = {
        **report_header("drift", loaded),
        "size": args.size,
        "sessions": args.sessions,
        "steps": args.steps,
        "seed": args.seed,
        "budgets": {},
    }
    for b in budgets:
        sel = [r for r in rows if r.budget == b]
        if not sel:
            continue
        out["budgets"][str(b)] = {
            "n": len(sel),
            "exact": sum(r.exact for r in sel) / len(sel),
            "similarity": statistics.mean(r.similarity for r in sel),
            "gated": sum(r.gated for r in sel) / len(sel),
            "staleMedian": statistics.median(r.stale_at_completion for r in sel),
            "staleMax": max(r.stale_at_completion for r in sel),
            "refreshesPerEdit": sum(r.refreshed_tokens > 0 for r in sel) / len(sel),
            "refreshedTokensPerEdit": sum(r.refreshed_tokens for r in sel) / len(sel),
            "refreshMsPerEdit": sum(r.refresh_ms for r in sel) / len(sel),
            "completionMsMedian": statistics.median(r.completion_ms for r in sel),
        }
    return out


def print_report(report: dict[str, Any]) -> None:
    """The table."""
    print(
        f"\nmodel {report['model']} on {report['device']} ({report['dtype']}), "
        f"{report['size']}-token windows, {report['sessions']} sessions x {report['steps']} edits"
    )
    print(
        f"{'budget':>8} {'n':>4} {'exact':>6} {'sim':>5} {'gated':>6} {'stale med/max':>14}"
        f" {'refresh/edit':>12} {'tokens/edit':>11} {'ms/edit':>8} {'completion ms':>13}"
    )
    for b, c in report["budgets"].items():
        name = "none" if int(b) == NO_LIMIT else b
        print(
            f"{name:>8} {c['n']:>4} {c['exact']:>6.2f} {c['similarity']:>5.2f} {c['gated']:>6.2f}"
            f" {c['staleMedian']:>6.0f}/{c['staleMax']:<7.0f} {c['refreshesPerEdit']:>12.2f}"
            f" {c['refreshedTokensPerEdit']:>11.0f} {c['refreshMsPerEdit']:>8.0f}"
            f" {c['completionMsMedian']:>13.0f}"
        )
