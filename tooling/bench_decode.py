"""``pie-lsp bench decode``: speculative decoding against plain decoding, in one run.

Positions in real files (the standard library), FIM where the model has it:

- single-line: the cursor after the first word of a code line;
- multi-line: a function body's next statements cut out, the cursor on the empty line
  (block mode).

Two workloads, each run by two engines on the same model, one with ``speculative`` on
and one with it off, request for request:

- **cold**: a completion at a fresh position;
- **editor sessions**: at each position, after the cold request: (1) the user types the
  first third of the suggestion and asks again: answered from the rest of the suggestion
  without the model (a typing-through hit, counted apart); (2) a comment line is added
  40 lines above and the user asks again; (3) the user types one character that is not
  what the suggestion says, deletes it, and asks again. Requests (2) and (3) run the
  model: their decode speedup is the figure.

Reported: decode tokens/s, completion latency (median, p95), per-request decode speedup
(plain decode ms / speculative decode ms, each the fastest of ``--repeats`` timings from
the same state; median and worst over requests), acceptance rate, and
whether every output is identical. Two figures free of timing noise go with the
speedup: the speedup by the cost curve (plain decoding's forwards over the speculating
engine's forwards weighted by the verify-cost curve; requests verified with the prompt's
forward excepted), and the plain engine against itself (fastest of its even repeats over
fastest of its odd ones: the spread timing noise alone gives a ratio on this machine).
Also printed: the speedup with each engine's median repeat instead of its fastest
(drafting decisions follow timings learned as a request runs, so repeats may draft
differently, and the fastest repeat favours the lucky ones).
Table on stdout, JSON in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import sysconfig
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bench import measure_verify_cost, percentile, report_header, summary
from .bench_edits import SOURCES, _code_lines

if TYPE_CHECKING:
    from completion.engine import CompletionOptions, CompletionRequest, CompletionResult

    from .engines import SnapshotEngine


@dataclass
class Position:
    """A document and a cursor in it."""

    source: str
    kind: str  # "line" | "block"
    text: str
    cursor: int
    path: Path | None = None
    """The whole file (opened as another document at later positions)."""


def make_position(rng: random.Random, path: Path, kind: str, max_chars: int) -> Position | None:
    """A real position in ``path`` (None when the file offers none here)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    code = [i for i in _code_lines(lines) if 40 < i < len(lines) - 10]
    if not code:
        return None
    for _ in range(20):
        i = rng.choice(code)
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if kind == "line":
            space = line.find(" ", indent)
            if not 0 < space < len(line) - 6:
                continue
            head = "\n".join(lines[:i]) + "\n" + line[: space + 1]
            tail = line[space + 1 :] + "\n" + "\n".join(lines[i + 1 :])
        else:
            if indent < 4 or lines[i - 1].strip().endswith((",", "(", "[", "{", "\\")):
                continue
            # Cut this statement and the next two at the same indentation.
            j = i + 1
            cut = 1
            while j < len(lines) and cut < 3:
                if lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) < indent:
                    break
                if lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) == indent:
                    cut += 1
                j += 1
            head = "\n".join(lines[:i]) + "\n" + line[:indent]
            tail = "\n" + "\n".join(lines[j:])
        # Keep the document to a size the prompt budget sees most of.
        start = max(0, len(head) - max_chars)
        start = head.find("\n", start) + 1 if start else 0
        window = head[start:] + tail[: max_chars // 3]
        return Position(path.name, kind, window, len(head) - start, path)
    return None


@dataclass(frozen=True)
class _Counters:
    """The speculation counters of an engine's totals that a request row reports."""

    drafted: int
    accepted: int
    steps: int
    cost_steps: float

    def __sub__(self, other: _Counters) -> _Counters:
        return _Counters(
            self.drafted - other.drafted,
            self.accepted - other.accepted,
            self.steps - other.steps,
            self.cost_steps - other.cost_steps,
        )


def _counters(t: Any) -> _Counters:
    return _Counters(t.draftTokens, t.acceptedTokens, t.verifySteps, t.decodeCostSteps)


def make_positions(seed: int, n: int, max_chars: int) -> list[Position]:
    """``n`` single-line positions, then ``n`` block positions, in the standard library."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / s for s in SOURCES if (stdlib / s).is_file()]
    rng = random.Random(seed)
    positions: list[Position] = []
    for kind in ("line", "block"):
        made = 0
        for attempt in range(n * 20):
            if made >= n:
                break
            p = make_position(rng, files[attempt % len(files)], kind, max_chars)
            if p is not None:
                positions.append(p)
                made += 1
    return positions


@dataclass(frozen=True)
class DecodeRow:
    """One request, asked of both engines: what ``rows`` in the JSON holds.

    Times are in ms, the fastest of the repeats unless the name says otherwise.
    """

    workload: str  # "cold" | "session"
    step: str  # "cold" | "typed" | "edit" | "wrong" | "again"
    kind: str  # the position's kind: "line" | "block"
    source: str
    reused: bool
    """Answered from the rest of the suggestion (typing through), without the model."""
    identical: bool
    tokens: int
    decode_ms_off: float
    decode_ms_on: float
    verified_with_prompt: bool
    """The speculating engine verified its draft inside the cache update's forward."""
    modelled_speedup: float | None
    """Plain decoding's forwards over the speculating engine's, by the cost curve."""
    noise_ratio: float | None
    """The plain engine against itself (fastest of even repeats over fastest of odd)."""
    work_ms_off: float
    work_ms_on: float
    decode_ms_off_all: list[float]
    decode_ms_on_all: list[float]
    total_ms_off: float
    total_ms_on: float
    drafted: int
    accepted: int
    verify_steps: int
    acceptance_after: dict[str, Any]
    """The speculating engine's acceptance rates after the request."""

    def to_json(self) -> dict[str, Any]:
        """The row as written to the report (camelCase keys, in this order)."""
        return {
            "workload": self.workload,
            "step": self.step,
            "kind": self.kind,
            "source": self.source,
            "reused": self.reused,
            "identical": self.identical,
            "tokens": self.tokens,
            "decodeMsOff": self.decode_ms_off,
            "decodeMsOn": self.decode_ms_on,
            "verifiedWithPrompt": self.verified_with_prompt,
            "modelledSpeedup": self.modelled_speedup,
            # The same plain request timed twice (fastest of the even repeats over
            # fastest of the odd ones): what timing noise alone does to a ratio.
            "noiseRatio": self.noise_ratio,
            "workMsOff": self.work_ms_off,
            "workMsOn": self.work_ms_on,
            "decodeMsOffAll": self.decode_ms_off_all,
            "decodeMsOnAll": self.decode_ms_on_all,
            "totalMsOff": self.total_ms_off,
            "totalMsOn": self.total_ms_on,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "verifySteps": self.verify_steps,
            "acceptanceAfter": self.acceptance_after,
        }


@dataclass
class _Runs:
    """One engine's repeats of one request: times in ms in run order, and its first run."""

    decode_ms: list[float] = field(default_factory=list)
    work_ms: list[float] = field(default_factory=list)
    """Cache update + decode."""
    update_ms: list[float] = field(default_factory=list)
    first: CompletionResult | None = None
    used: _Counters | None = None
    """How much the first run moved the engine's speculation counters."""


@dataclass
class _Timed:
    """A request timed by both engines ("on" speculates, "off" decodes plainly)."""

    runs: dict[str, _Runs] = field(default_factory=lambda: {"on": _Runs(), "off": _Runs()})
    merged: bool = False
    """The speculating engine verified with the prompt's forward (in any repeat)."""
    learned: Any = None
    """The verify-cost timings the last speculating run left."""
    rates: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Session:
    """One position's editor session: its document key and the other open documents."""

    key: str
    pos: Position
    others: tuple[tuple[str, str], ...]


@dataclass
class _DecodeBench:
    """The two engines on one model, their options, and the rows asked so far."""

    engines: dict[str, SnapshotEngine]
    """By name: "on" speculates, "off" decodes plainly; both on the same model."""
    opts: dict[str, CompletionOptions]
    repeats: int
    language: str = ""
    """The requests' languageId: "python" turns the member monitor and syntax check on
    (the options' defaults); "" leaves them off (no grammar, no oracle)."""
    rows: list[DecodeRow] = field(default_factory=list)

    def ask(self, s: _Session, step: str, text: str, cursor: int) -> str:
        """Ask both engines at ``cursor`` in ``text``; add the row; the suggestion."""
        timed = self._time(s, text, cursor)
        self.rows.append(_row(step, s.pos, timed))
        first = timed.runs["on"].first
        assert first is not None
        return first.text

    def _time(self, s: _Session, text: str, cursor: int) -> _Timed:
        """Time the request ``repeats`` times per engine from the same state.

        The drafting state and the document's prompt cache are put back between
        repeats, the engines alternating; the caller keeps the fastest decode time (as
        timeit does): one timing on this shared 2-core machine varies by about 10%, and
        that noise only ever adds time. Raises RuntimeError when a repeat's output differs.
        """
        from completion.engine import CompletionRequest

        timed = _Timed()
        states = {name: eng.drafting_state(s.key) for name, eng in self.engines.items()}
        # The drafting state includes the verify-cost timings learned online, which both
        # engines share (only the speculating one times steps): what the last speculating
        # run learned is what the next request starts from.
        for rep in range(self.repeats):
            order = ("off", "on") if (len(self.rows) + rep) % 2 else ("on", "off")
            for name in order:
                if rep:
                    self.engines[name].restore_drafting_state(states[name])
                req = CompletionRequest(
                    s.key, text, cursor, self.opts[name], s.others, language=self.language
                )
                self._run_once(name, req, timed)
        if timed.learned is not None:
            self.engines["on"].costs.restore(timed.learned)
        return timed

    def _run_once(self, name: str, req: CompletionRequest, timed: _Timed) -> None:
        """One run of ``req`` by engine ``name``, recorded in ``timed``."""
        eng, runs = self.engines[name], timed.runs[name]
        before = _counters(eng.totals)
        merges = eng.totals.promptVerifySteps
        r = eng.complete(req)
        after = _counters(eng.totals)
        runs.decode_ms.append(r.decode_ms)
        runs.work_ms.append(r.prefill_ms + r.decode_ms)
        if name == "on":
            timed.merged = timed.merged or eng.totals.promptVerifySteps > merges
            timed.learned = eng.costs.snapshot()
            timed.rates = {**eng.acceptance.rates(), "comeAgain": eng.bands.rates()}
        else:
            runs.update_ms.append(r.prefill_ms)
        if runs.first is None:
            runs.first, runs.used = r, after - before
        elif r.text != runs.first.text:
            raise RuntimeError(f"{name}: a repeat of a request gave another output")


def _row(step: str, pos: Position, timed: _Timed) -> DecodeRow:
    """The row of a timed request: fastest times, speedup by the cost curve, noise."""
    off, on = timed.runs["off"], timed.runs["on"]
    r_off, r_on, used = off.first, on.first, on.used
    assert r_off is not None and r_on is not None and used is not None
    # A suggestion verified inside the cache update's forward: that forward also did
    # the update work the plain engine counts as update time. Both engines start from
    # the same cache and do the same update, so the speculating engine's decode time
    # is its update + decode time less the plain engine's update time.
    decode_on = min(on.decode_ms)
    if timed.merged:
        decode_on = max(1e-3, min(on.work_ms) - min(off.update_ms))
    # By the cost curve, free of timing noise: plain decoding runs one forward per
    # token after the first; the speculating engine's forwards weighted by the curve.
    # Not for a draft verified in the cache update's forward (that forward is not
    # a decode step).
    forwards = r_off.generated_tokens - 1
    cost_steps = used.cost_steps
    ok = forwards > 0 and cost_steps > 0 and not timed.merged
    off_t = off.decode_ms
    return DecodeRow(
        workload="cold" if step == "cold" else "session",
        step=step,
        kind=pos.kind,
        source=pos.source,
        reused=r_on.stop_reason == "reused",
        identical=r_on.text == r_off.text,
        tokens=r_on.generated_tokens,
        decode_ms_off=min(off.decode_ms),
        decode_ms_on=decode_on,
        verified_with_prompt=timed.merged,
        modelled_speedup=forwards / cost_steps if ok else None,
        noise_ratio=min(off_t[::2]) / min(off_t[1::2])
        if len(off_t) > 1 and min(off_t[1::2]) > 0
        else None,
        work_ms_off=min(off.work_ms),
        work_ms_on=min(on.work_ms),
        decode_ms_off_all=off.decode_ms,
        decode_ms_on_all=on.decode_ms,
        total_ms_off=r_off.total_ms,
        total_ms_on=r_on.total_ms,
        drafted=used.drafted,
        accepted=used.accepted,
        verify_steps=used.steps,
        acceptance_after=timed.rates,
    )


def _session(bench: _DecodeBench, s: _Session) -> None:
    """The cold request at a position, then the editor session's requests after it.

    (1) the first third of the suggestion typed (typing through, no model); (2) a
    comment line added 40 lines above; (3) a wrong character typed and deleted.
    """
    text, cursor = s.pos.text, s.pos.cursor
    suggestion = bench.ask(s, "cold", text, cursor)
    if len(suggestion) >= 3:
        typed = suggestion[: max(1, len(suggestion) // 3)]
        text = text[:cursor] + typed + text[cursor:]
        cursor += len(typed)
        bench.ask(s, "typed", text, cursor)  # typing through: no model
    # A comment line 40 lines above the cursor, then ask again.
    line_starts = [0] + [j + 1 for j, c in enumerate(text[:cursor]) if c == "\n"]
    at = line_starts[max(0, len(line_starts) - 40)]
    comment = "# reviewed\n"
    text = text[:at] + comment + text[at:]
    cursor += len(comment)
    bench.ask(s, "edit", text, cursor)
    # A wrong character typed and deleted: the same text, asked again.
    bench.ask(s, "wrong", text[:cursor] + "@" + text[cursor:], cursor + 1)
    bench.ask(s, "again", text, cursor)
    for eng in bench.engines.values():
        eng.forget(s.key)


CONSTRAINT_COUNTERS = ("memberQueries", "memberMasked", "memberUnknown", "syntaxChecks")
"""What ``--constraints`` runs report: that the monitor and the check were at work."""


def _make_bench(loaded: Any, args: argparse.Namespace) -> tuple[_DecodeBench, dict[int, float]]:
    """The two engines and their options; the verify-cost curve measured on them."""
    from completion.engine import CompletionOptions

    from .engines import SnapshotEngine

    on, off = SnapshotEngine(loaded), SnapshotEngine(loaded)
    costs = measure_verify_cost(on)
    base = CompletionOptions(
        max_tokens=args.max_tokens,
        context_tokens=args.context_tokens,
        max_draft_tokens=args.max_draft,
        # The cache's confidence gate would re-decode some session requests on a
        # refreshed cache; this benchmark measures decoding alone.
        confidence_margin=0.0,
    )
    opts = {"on": base, "off": replace(base, speculative=False)}
    language = "python" if args.constraints else ""
    return _DecodeBench({"on": on, "off": off}, opts, args.repeats, language), costs


def run_decode(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code (1 when an output differs from plain)."""
    from tqdm import tqdm

    from lsp_server.loading import load_with_progress, model_overrides

    o = model_overrides(args)
    loaded = load_with_progress(**o)
    bench, costs = _make_bench(loaded, args)
    positions = make_positions(args.seed, args.positions, args.context_chars)
    # Other open documents (a draft source): the files of the last positions, as an
    # editor has a few files of the project open.
    opened: dict[str, str] = {}
    for i, pos in enumerate(tqdm(positions, desc="positions", file=sys.stderr)):
        others = tuple(
            (name, body) for name, body in reversed(opened.items()) if name != pos.source
        )[: args.open_files]
        _session(bench, _Session(f"doc{i}", pos, others))
        if pos.path is not None:
            opened.pop(pos.source, None)
            opened[pos.source] = pos.path.read_text(encoding="utf-8")

    rows = bench.rows
    report = summarize(rows, loaded, costs, args)
    report["verifyCostLearned"] = bench.engines["on"].verify_cost()
    report["constraintCounters"] = {
        name: {k: getattr(eng.totals, k) for k in CONSTRAINT_COUNTERS}
        for name, eng in bench.engines.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "decode" if o.get("model", "default") == "default" else f"decode-{Path(o['model']).name}"
    name += "-constraints" if args.constraints else ""
    report_json = {**report, "rows": [r.to_json() for r in rows]}
    (args.out / f"{name}.json").write_text(json.dumps(report_json, indent=1))
    print_report(report)
    print(f"constraints (both engines, all repeats): {report['constraintCounters']}")
    print(f"written: {args.out / (name + '.json')}")
    return 0 if report["identical"] == 1.0 else 1


def _stats(rows: list[DecodeRow]) -> dict[str, Any]:
    model_rows = [r for r in rows if not r.reused and r.tokens > 0]
    if not model_rows:
        return {"requests": len(rows), "reused": sum(r.reused for r in rows)}
    speedups = [r.decode_ms_off / max(r.decode_ms_on, 1e-6) for r in model_rows]
    drafted = sum(r.drafted for r in model_rows)
    tok = sum(r.tokens for r in model_rows)
    modelled = [r.modelled_speedup for r in model_rows if r.modelled_speedup]
    noise = [r.noise_ratio for r in model_rows if r.noise_ratio]
    # Each engine's median timing instead of its fastest: drafting decisions follow the
    # timings a request learns as it runs, so repeats may draft differently, and the
    # fastest repeat favours the lucky ones (requests verified with the prompt excepted).
    typical = [
        statistics.median(r.decode_ms_off_all) / statistics.median(r.decode_ms_on_all)
        for r in model_rows
        if not r.verified_with_prompt and statistics.median(r.decode_ms_on_all) > 0
    ]
    return {
        "requests": len(rows),
        "reused": sum(r.reused for r in rows),
        "modelRequests": len(model_rows),
        "decodeSpeedup": {
            "median": statistics.median(speedups),
            "p5": percentile(speedups, 5),
            "min": min(speedups),
        },
        "modelledSpeedup": {"median": statistics.median(modelled), "min": min(modelled)}
        if modelled
        else None,
        "medianOfRepeatsSpeedup": {"median": statistics.median(typical), "min": min(typical)}
        if typical
        else None,
        # An A/A comparison of the plain engine with itself: the ratio's noise floor.
        "noiseRatio": {"min": min(noise), "max": max(noise)} if noise else None,
        # Cache update + decode, the fastest run of each: no attribution between the two.
        "workSpeedupMedian": statistics.median(
            r.work_ms_off / max(r.work_ms_on, 1e-6) for r in model_rows
        ),
        "verifiedWithPrompt": sum(r.verified_with_prompt for r in model_rows),
        "tokensPerSecondOff": tok / (sum(r.decode_ms_off for r in model_rows) / 1000),
        "tokensPerSecondOn": tok / (sum(r.decode_ms_on for r in model_rows) / 1000),
        "latencyMsOff": summary([r.total_ms_off for r in model_rows]),
        "latencyMsOn": summary([r.total_ms_on for r in model_rows]),
        "acceptanceRate": (sum(r.accepted for r in model_rows) / drafted) if drafted else None,
        "draftedPerRequest": drafted / len(model_rows),
        "identical": sum(r.identical for r in rows) / len(rows),
    }


def summarize(
    rows: list[DecodeRow], loaded: Any, costs: dict[int, float], args: argparse.Namespace
) -> dict[str, Any]:
    """Aggregate per workload and kind."""
    out: dict[str, Any] = {
        **report_header("decode", loaded),
        "verifyCost": costs,
        "maxDraftTokens": args.max_draft,
        "repeats": args.repeats,
        "openFiles": args.open_files,
        "constraints": bool(args.constraints),
        "identical": sum(r.identical for r in rows) / max(1, len(rows)),
        "workloads": {},
    }
    for workload in ("cold", "session"):
        sel = [r for r in rows if r.workload == workload]
        out["workloads"][workload] = {
            "all": _stats(sel),
            "line": _stats([r for r in sel if r.kind == "line"]),
            "block": _stats([r for r in sel if r.kind == "block"]),
        }
    out["sessionSteps"] = {
        step: _stats([r for r in rows if r.step == step]) for step in ("edit", "wrong", "again")
    }
    return out


def print_report(report: dict[str, Any]) -> None:
    """The table."""
    print(f"\nmodel {report['model']} on {report['device']} ({report['dtype']})")
    print(f"verify cost (k tokens / 1): {report['verifyCost']}")
    if "verifyCostLearned" in report:
        print(f"verify cost at the end (learned online): {report['verifyCostLearned']}")
    head = f"{'workload':<9} {'kind':<6} {'n':>3} {'reused':>6} {'speedup med/min':>16} {'tok/s off->on':>15} {'latency ms off->on (med/p95)':>30} {'accept':>7} {'identical':>9}"
    print(head)
    for workload, cells in report["workloads"].items():
        for kind, c in cells.items():
            if "decodeSpeedup" not in c:
                continue
            s = c["decodeSpeedup"]
            lo, ln = c["latencyMsOff"], c["latencyMsOn"]
            acc = "-" if c["acceptanceRate"] is None else f"{c['acceptanceRate']:.2f}"
            print(
                f"{workload:<9} {kind:<6} {c['modelRequests']:>3} {c['reused']:>6}"
                f" {s['median']:>8.2f}/{s['min']:<7.2f}"
                f" {c['tokensPerSecondOff']:>6.1f}->{c['tokensPerSecondOn']:<7.1f}"
                f" {lo['median']:>6.0f}/{lo['p95']:<6.0f}->{ln['median']:>6.0f}/{ln['p95']:<7.0f}"
                f" {acc:>7} {c['identical']:>9.2f}"
            )
    steps = [
        f"{step} {c['decodeSpeedup']['median']:.2f}x (n={c['modelRequests']})"
        for step, c in report.get("sessionSteps", {}).items()
        if "decodeSpeedup" in c
    ]
    if steps:
        print("session requests by step, speedup median: " + ", ".join(steps))
    for workload, cells in report["workloads"].items():
        c = cells["all"]
        if c.get("modelledSpeedup") and c.get("noiseRatio"):
            m, n = c["modelledSpeedup"], c["noiseRatio"]
            print(
                f"{workload}: by the cost curve (no timing noise) speedup median"
                f" {m['median']:.2f}x, worst {m['min']:.2f}x; plain against itself"
                f" (timing noise) {n['min']:.2f}-{n['max']:.2f}x"
            )
        if c.get("medianOfRepeatsSpeedup"):
            t = c["medianOfRepeatsSpeedup"]
            print(
                f"{workload}: median repeat instead of fastest (requests not verified with"
                f" the prompt): speedup median {t['median']:.2f}x, worst {t['min']:.2f}x"
            )
        if "workSpeedupMedian" in c:
            print(
                f"{workload}: cache update + decode speedup median"
                f" {c['workSpeedupMedian']:.2f}x; verified with the prompt's forward in"
                f" {c['verifiedWithPrompt']} of {c['modelRequests']} requests"
            )
    print(f"\noutputs identical to plain decoding: {report['identical'] * 100:.1f}%")
