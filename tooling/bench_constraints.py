"""``pie-lsp bench constraints``: the member monitor and the syntax check, off and on.

Positions come from the held-out corpus (:mod:`tooling.constraints_corpus`: PyPI packages
first released in 2025 or later, pinned by hash, split into ``dev`` and ``test``), drawn
with a fixed seed from code only: member uses (the cursor right after ``obj.``), mid-line
and end-of-line positions (line mode), statement starts in function bodies (block
mode). Every position is completed twice by the same engine, greedy, once with
``members=False, syntax=False`` and once with both on, each from the same state (a warm
prompt cache, the same learned drafting state; the order alternates).

Judged by checkers that share nothing with the constraints (:mod:`tooling.constraints_checks`):

- invented members: among suggestions that write ``expr.name``, those mypy reports as
  missing (new against the original file), and how many mypy could judge;
- true members wrongly blocked: at member positions, the oracle's answer is known and
  the member really used is not in it (and how often the oracle knows nothing);
- syntax: suggestions after which ``ast.parse`` of the file fails although the original
  parsed; the share trimmed, closed or dropped by the check; exact match and edit
  similarity against the real code;
- overhead: (mask + syntax check + oracle wait) per request as a share of its decode
  time, request latency on/off, and speculative decoding's acceptance and cost.

Table on stdout, ``constraints-<split>.json`` and ``constraints-<split>.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bench import percentile, report_header
from .constraints_checks import (
    MypyCase,
    MypyJudge,
    edit_similarity,
    exact,
    next_identifier_match,
    parses,
    probe_text,
    written_members,
)
from .constraints_corpus import (
    KINDS,
    MULTILINE,
    CorpusPackage,
    Position,
    SourceFile,
    draw_positions,
    fetch_split,
    load_sources,
)
from .engines import PrepareEngine, SnapshotEngine

if TYPE_CHECKING:
    from completion.engine import CompletionOptions, CompletionRequest, CompletionResult

COUNTERS = (
    "memberQueries",
    "memberMasked",
    "memberUnknown",
    "memberTimeouts",
    "memberCut",
    "memberRedecodes",
    "syntaxChecks",
    "syntaxTrimmed",
    "syntaxClosed",
    "syntaxDropped",
    "maskMs",
    "oracleMs",
    "reviewMs",
    "syntaxMs",
    "draftTokens",
    "acceptedTokens",
    "verifySteps",
    "plainSteps",
    "decodeCostSteps",
)
"""Engine counters (``pie/stats`` names) read before and after each request."""
OVERHEAD = ("maskMs", "syntaxMs")
"""The constraints' time in a request: picks checked and masks filled (``maskMs``, which
holds the oracle wait: the member monitor asks the oracle from ``allows()`` inside the
mask step, so ``oracleMs`` is part of it) and syntax checks (``syntaxMs``)."""
TARGETS = {
    "inventedRateOn": 0.01,
    "falseBlockRate": 0.01,
    "breakRateOn": 0.01,
    "exactDropPoints": 1.0,
    "similarityDropPoints": 1.0,
    "overheadMedian": 0.02,
    "overheadP95": 0.05,
    "latencyRatio": 1.10,
}
"""The issue's targets (rates and shares as fractions; drops in percentage points)."""


class BenchEngine(PrepareEngine, SnapshotEngine):
    """An engine whose prompt cache can be warmed and whose learned state can be put back."""


def read_counters(totals: Any) -> dict[str, float]:
    """The :data:`COUNTERS` of an engine's totals."""
    return {name: float(getattr(totals, name)) for name in COUNTERS}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """Counter differences (what one request added)."""
    return {k: after[k] - before[k] for k in after}


@dataclass(frozen=True)
class Row:
    """One position completed by one model with the constraints off or on."""

    model: str
    package: str
    file: str
    kind: str
    mode: str
    position: int
    constraints: str  # "off" | "on"
    text: str
    truth: str
    exact: bool
    similarity: float
    nim: bool | None
    """member positions: the suggestion starts with the member really used."""
    original_parses: bool
    variant_parses: bool
    document_parses: bool
    """The document as the request saw it (no suggestion: a half line, a removed line)."""
    """The file with the suggestion (the rest of the line or statement removed) parses."""
    members: tuple[str, ...]
    """Member names the suggestion writes."""
    judged: bool | None = None
    """mypy could judge the first of them (None: writes none, or the file does not parse)."""
    invented: tuple[str, ...] = ()
    mypy_errors: tuple[str, ...] = ()
    stop_reason: str = ""
    total_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    tokens: int = 0
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def shown(self) -> bool:
        """A suggestion was shown (not empty)."""
        return bool(self.text)

    @property
    def overhead_ms(self) -> float:
        """Mask (with the oracle wait) and syntax check time in this request."""
        return sum(self.counters.get(k, 0.0) for k in OVERHEAD)

    @property
    def checks_ms(self) -> float:
        """Mask and syntax check time without the oracle wait.

        The oracle's cost shows in the latency ratio and in :attr:`oracle_ms`.
        """
        return self.overhead_ms - self.oracle_ms

    @property
    def oracle_ms(self) -> float:
        """Time decode steps waited for the member oracle."""
        return self.counters.get("oracleMs", 0.0)

    def to_json(self) -> dict[str, Any]:
        """The row as written to the report (camelCase keys)."""
        return {
            "model": self.model,
            "package": self.package,
            "file": self.file,
            "kind": self.kind,
            "mode": self.mode,
            "position": self.position,
            "constraints": self.constraints,
            "text": self.text,
            "truth": self.truth,
            "exact": self.exact,
            "similarity": round(self.similarity, 4),
            "nim": self.nim,
            "originalParses": self.original_parses,
            "variantParses": self.variant_parses,
            "documentParses": self.document_parses,
            "members": list(self.members),
            "judged": self.judged,
            "invented": list(self.invented),
            "mypyErrors": list(self.mypy_errors),
            "stopReason": self.stop_reason,
            "totalMs": round(self.total_ms, 2),
            "prefillMs": round(self.prefill_ms, 2),
            "decodeMs": round(self.decode_ms, 2),
            "tokens": self.tokens,
            "counters": {k: round(v, 3) for k, v in self.counters.items() if v},
        }


@dataclass(frozen=True)
class OracleRow:
    """The oracle asked, without a budget, at a member position."""

    model: str
    package: str
    file: str
    position: int
    member: str
    known: bool
    allowed: bool | None
    """The member really used is in the answer (None: the answer is unknown)."""
    reason: str
    names: int
    ms: float

    def to_json(self) -> dict[str, Any]:
        """The row as written to the report."""
        return {
            "model": self.model,
            "package": self.package,
            "file": self.file,
            "position": self.position,
            "member": self.member,
            "known": self.known,
            "allowed": self.allowed,
            "reason": self.reason,
            "names": self.names,
            "ms": round(self.ms, 2),
        }


##### Requests #####


def options(kind: str, on: bool, max_tokens: int, context_tokens: int) -> CompletionOptions:
    """Greedy options for a position of ``kind`` with the constraints ``on`` or off."""
    from completion.engine import CompletionOptions

    return CompletionOptions(
        max_tokens=max_tokens,
        multiline=MULTILINE[kind],  # type: ignore[arg-type]
        context_tokens=context_tokens,
        members=on,
        syntax=on,
    )


def request(pos: Position, opts: CompletionOptions) -> CompletionRequest:
    """The engine request for ``pos`` (the document keyed by its path)."""
    from completion.engine import CompletionRequest

    return CompletionRequest(
        key=pos.path,
        text=pos.text,
        cursor=pos.cursor,
        options=opts,
        language="python",
        path=pos.path,
    )


def variant_of(pos: Position, suggestion: str) -> str:
    """The document with ``suggestion`` inserted at the cursor."""
    return pos.text[: pos.cursor] + suggestion + pos.text[pos.cursor :]


@functools.lru_cache(maxsize=16)
def _parses_cached(text: str) -> bool:
    return parses(text)


def make_row(
    model: str,
    i: int,
    pos: Position,
    on: bool,
    result: CompletionResult,
    counters: dict[str, float],
) -> Row:
    """A row from a completion (mypy's verdict comes later)."""
    text = result.text
    variant = variant_of(pos, text)
    written = written_members(variant, pos.cursor, pos.cursor + len(text))
    return Row(
        model=model,
        package=pos.package,
        file=pos.file,
        kind=pos.kind,
        mode=pos.mode,
        position=i,
        constraints="on" if on else "off",
        text=text,
        truth=pos.truth,
        exact=exact(text, pos.truth),
        similarity=edit_similarity(text, pos.truth),
        nim=next_identifier_match(text, pos.member) if pos.member else None,
        original_parses=_parses_cached(pos.original),
        variant_parses=parses(variant),
        document_parses=_parses_cached(pos.text),
        members=tuple(w.name for w in written),
        stop_reason=result.stop_reason,
        total_ms=result.total_ms,
        prefill_ms=result.prefill_ms,
        decode_ms=result.decode_ms,
        tokens=result.generated_tokens,
        counters=counters,
    )


@dataclass
class Runner:
    """One model's engine over the positions: both variants of each, from one state."""

    model: str
    engine: BenchEngine
    max_tokens: int
    context_tokens: int
    roots: dict[str, Path]
    """Package name -> root (the oracle's workspace while its positions run)."""
    cold_oracle: bool = False
    """Do not wait for the oracle to load a file before its first request."""
    debounce_s: float = 0.0
    """Quiet time between the edit and the request, as an editor waits (both sides)."""
    rows: list[Row] = field(default_factory=list)
    warm_ms: list[float] = field(default_factory=list)
    """How long each file's warm-up query took."""
    _package: str = ""
    _opened: set[str] = field(default_factory=set)

    def run(self, i: int, pos: Position) -> None:
        """Complete ``pos`` with the constraints off and on (order alternates with ``i``).

        The document's prompt cache is filled once; both variants start from a copy of
        it and of the learned drafting state, and bring the cache up to date for their
        own prompt (a healed one may differ) before the timed request.
        """
        self._enter(pos)
        first = request(pos, options(pos.kind, False, self.max_tokens, self.context_tokens))
        self.engine.prepare(first)
        base = self.engine.drafting_state(pos.path)
        for on in (False, True) if i % 2 == 0 else (True, False):
            self.engine.restore_drafting_state(base)
            req = request(pos, options(pos.kind, on, self.max_tokens, self.context_tokens))
            self.engine.prepare(req)
            # The editor's timeline: the edit (the server asks the oracle about a member
            # access it typed), the client's quiet time, then the timed request.
            self.engine.anticipate(req)
            time.sleep(self.debounce_s)
            before = read_counters(self.engine.totals)
            result = self.engine.complete(req)
            counters = delta(read_counters(self.engine.totals), before)
            self.rows.append(make_row(self.model, i, pos, on, result, counters))
        self.engine.forget(pos.path)

    def _enter(self, pos: Position) -> None:
        """The package's root as the workspace; a file seen first is opened.

        Opening warms the oracle as the server does on ``didOpen``; unless ``cold_oracle``
        it then waits for the oracle to answer at the cursor in the file as saved (the
        rest of the line still there: another text than the request's, so nothing the
        request asks is cached), as if the user had been working in the file a while.
        """
        if pos.package != self._package:
            self._package = pos.package
            self.engine.set_workspace([str(self.roots[pos.package])])
        if pos.path in self._opened:
            return
        self._opened.add(pos.path)
        self.engine.warm_oracle(pos.original, pos.path, "python")
        if not self.cold_oracle:
            from completion.member_oracle import MemberQuery

            t = time.perf_counter()
            query = MemberQuery(pos.original, pos.cursor, pos.path, "python")
            self.engine.oracle.members(query, budget_s=None)
            self.warm_ms.append((time.perf_counter() - t) * 1000)

    def oracle_rows(self, positions: list[tuple[int, Position]]) -> list[OracleRow]:
        """The oracle at every member position, no budget (after the completions)."""
        from completion.member_oracle import MemberQuery

        out = []
        for i, pos in positions:
            if pos.member is None:
                continue
            self._enter(pos)
            query = MemberQuery(text=pos.text, offset=pos.cursor, path=pos.path, language="python")
            t = time.perf_counter()
            answer = self.engine.oracle.members(query, budget_s=None)
            ms = (time.perf_counter() - t) * 1000
            names = answer.names
            allowed = None
            if names is not None:
                narrowed = answer.reason == "object" and narrowed_truth(pos)
                allowed = pos.member in names or narrowed
            n = 0 if names is None else len(names)
            out.append(
                OracleRow(
                    self.model,
                    pos.package,
                    pos.file,
                    i,
                    pos.member,
                    names is not None,
                    allowed,
                    answer.reason,
                    n,
                    ms,
                )
            )
        return out


def narrowed_truth(pos: Position) -> bool:
    """Whether the real code narrows the receiver after the member, on its line.

    A receiver known only as ``object`` passes the review then
    (:func:`~completion.members.narrowed_after`): that member is not blocked.
    """
    from completion.members import narrowed_after

    assert pos.member is not None
    text = pos.text[: pos.cursor] + pos.truth
    return narrowed_after(text, pos.cursor - 1, pos.cursor + len(pos.member))


##### mypy #####


def mypy_verdicts(
    rows: list[Row], positions: dict[int, Position], roots: dict[str, Path]
) -> tuple[list[Row], dict[str, Any]]:
    """Rows with mypy's verdicts on the members they write, and what mypy cost."""
    cases: dict[str, list[tuple[int, MypyCase]]] = {}
    for idx, row in enumerate(rows):
        if not row.members or not row.variant_parses:
            continue
        pos = positions[row.position]
        variant = variant_of(pos, row.text)
        written = written_members(variant, pos.cursor, pos.cursor + len(row.text))
        case = MypyCase(
            key=str(idx),
            root=roots[row.package],
            rel=row.file,
            text=variant,
            span=(pos.cursor, pos.cursor + len(row.text)),
            names=row.members,
            probe=probe_text(variant, written[0]) if written else None,
        )
        cases.setdefault(row.package, []).append((idx, case))
    out, seconds, runs = list(rows), 0.0, 0
    for package, items in sorted(cases.items()):
        judge = MypyJudge(roots[package])
        for (idx, _), v in zip(items, judge.judge([c for _, c in items]), strict=True):
            out[idx] = replace(
                out[idx],
                judged=v.judged and not v.failed,
                invented=v.invented,
                mypy_errors=v.errors or ((v.failed,) if v.failed else ()),
            )
        seconds, runs = seconds + judge.seconds, runs + judge.runs
    n = sum(len(v) for v in cases.values())
    return out, {"cases": n, "runs": runs, "seconds": round(seconds, 2)}


##### Summary #####


def mean(values: Iterable[float]) -> float | None:
    """The mean, or None for no values."""
    xs = list(values)
    return sum(xs) / len(xs) if xs else None


def bootstrap_ci(
    values: list[float], seed: int = 0, resamples: int = 1000, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (None for no values)."""
    if not values:
        return None
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(resamples))
    lo = means[int((1 - level) / 2 * resamples)]
    hi = means[min(resamples - 1, int((1 + level) / 2 * resamples))]
    return lo, hi


def rate(flags: list[bool], seed: int = 0) -> dict[str, Any]:
    """A share with its count and bootstrap interval."""
    values = [1.0 if f else 0.0 for f in flags]
    ci = bootstrap_ci(values, seed)
    return {
        "rate": mean(values),
        "count": int(sum(values)),
        "of": len(values),
        "ci95": list(ci) if ci else None,
    }


def cell(rows: list[Row]) -> dict[str, Any]:
    """Figures of one model, mode and constraint setting."""
    shown = [r for r in rows if r.shown]
    writing = [r for r in shown if r.members and r.variant_parses]
    judged = [r for r in writing if r.judged]
    parsed = [r for r in shown if r.original_parses]
    nim = [r.nim for r in rows if r.nim is not None]
    return {
        "n": len(rows),
        "shown": len(shown),
        "exact": rate([r.exact for r in rows]),
        "similarity": mean(r.similarity for r in rows),
        "similarityCi95": bootstrap_ci([r.similarity for r in rows]),
        "nextIdentifierMatch": rate(nim) if nim else None,
        "memberWriting": len([r for r in shown if r.members]),
        "memberWritingParsed": len(writing),
        "judged": len(judged),
        "invented": rate([bool(r.invented) for r in writing]),
        "inventedAmongJudged": rate([bool(r.invented) for r in judged]),
        "breaks": rate([not r.variant_parses for r in parsed]),
        # Breaks of a file that parsed as the request saw it (the rest were broken
        # before the suggestion: a half-typed line it did not finish).
        "breaksOfParsingDocuments": rate(
            [not r.variant_parses for r in parsed if r.document_parses]
        ),
        "trimmed": rate([r.counters.get("syntaxTrimmed", 0) > 0 for r in rows]),
        "closed": rate([r.counters.get("syntaxClosed", 0) > 0 for r in rows]),
        "dropped": rate([r.counters.get("syntaxDropped", 0) > 0 for r in rows]),
        "memberCut": rate([r.counters.get("memberCut", 0) > 0 for r in rows]),
        "memberMaskedRequests": rate([r.counters.get("memberMasked", 0) > 0 for r in rows]),
        "latencyMs": _spread([r.total_ms for r in rows]),
        "decodeMs": _spread([r.decode_ms for r in rows]),
        "counters": {k: sum(r.counters.get(k, 0.0) for r in rows) for k in COUNTERS},
    }


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "p95": percentile(values, 95)}


def overhead(
    rows: list[Row],
    baseline: list[Row] | None = None,
    part: Callable[[Row], float] = lambda r: r.overhead_ms,
) -> dict[str, Any]:
    """``part`` (default: mask + oracle wait + syntax check) / decode time per request.

    With ``baseline`` (the same positions with the constraints off), what those rows
    spent on masks (token healing, one-line mode) is taken off first: the time the
    member monitor and the syntax check added. Requests that ran no decode step (a
    one-token answer read off the prompt's last logits: 2-3 ms of "decode") have no
    step to take a share of and are left out.
    """
    before = {r.position: part(r) for r in baseline or []}
    shares = [
        max(0.0, part(r) - before.get(r.position, 0.0)) / r.decode_ms
        for r in rows
        if r.decode_ms > 0 and r.counters.get("decodeCostSteps", 0.0) > 0
    ]
    parts = ("maskMs", "oracleMs", "reviewMs", "syntaxMs")
    return {
        "median": statistics.median(shares) if shares else None,
        "p95": percentile(shares, 95) if shares else None,
        "max": max(shares) if shares else None,
        "n": len(shares),
        "partsMs": {k: _spread([r.counters.get(k, 0.0) for r in rows]) for k in parts},
    }


def speculation(rows: list[Row]) -> dict[str, Any]:
    """Acceptance (accepted / drafted) and cost-weighted decode steps per token."""
    drafted = sum(r.counters.get("draftTokens", 0.0) for r in rows)
    accepted = sum(r.counters.get("acceptedTokens", 0.0) for r in rows)
    tokens = sum(r.tokens for r in rows)
    cost = sum(r.counters.get("decodeCostSteps", 0.0) for r in rows)
    return {
        "acceptance": accepted / drafted if drafted else None,
        "draftTokens": drafted,
        "decodeCostSteps": cost,
        "costStepsPerToken": cost / tokens if tokens else None,
    }


def compare(off: list[Row], on: list[Row]) -> dict[str, Any]:
    """On against off for one model and mode (drops in percentage points)."""
    c_off, c_on = cell(off), cell(on)
    lat_off, lat_on = c_off["latencyMs"], c_on["latencyMs"]
    return {
        "off": c_off,
        "on": c_on,
        "exactDropPoints": _drop(c_off["exact"]["rate"], c_on["exact"]["rate"]),
        "similarityDropPoints": _drop(c_off["similarity"], c_on["similarity"]),
        "latencyRatio": lat_on["median"] / lat_off["median"] if lat_off and lat_on else None,
        "latencyRatioPaired": paired_ratio(off, on),
        "overheadOn": overhead(on),
        "overheadAdded": overhead(on, off),
        "speculation": {"off": speculation(off), "on": speculation(on)},
    }


def paired_ratio(off: list[Row], on: list[Row]) -> float | None:
    """The median over positions of latency on / off (the same position both ways).

    Steadier than a ratio of medians when the latencies are bimodal (suggestions of a
    few tokens and of many): there one position crossing the gap moves the median.
    """
    by_position = {r.position: r.total_ms for r in off}
    ratios = [r.total_ms / by_position[r.position] for r in on if by_position.get(r.position)]
    return statistics.median(ratios) if ratios else None


def _drop(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else (before - after) * 100


def false_blocks(oracle: list[OracleRow]) -> dict[str, Any]:
    """True members wrongly blocked, and how often the oracle knew nothing."""
    known = [o for o in oracle if o.known]
    reasons: dict[str, int] = {}
    for o in oracle:
        reasons[o.reason] = reasons.get(o.reason, 0) + 1
    return {
        "positions": len(oracle),
        "unknown": rate([not o.known for o in oracle]),
        "falseBlock": rate([o.allowed is False for o in known]),
        "falseBlockOfAll": rate([o.allowed is False for o in oracle]),
        "reasons": reasons,
        "oracleMs": _spread([o.ms for o in oracle]),
        "blocked": [f"{o.file}: .{o.member}" for o in known if o.allowed is False][:50],
    }


def summarize_model(rows: list[Row], oracle: list[OracleRow]) -> dict[str, Any]:
    """One model's figures: per mode on against off, false blocks, target checks."""
    out: dict[str, Any] = {"modes": {}, "falseBlocks": false_blocks(oracle)}
    for mode in ("line", "block"):
        these = [r for r in rows if r.mode == mode]
        if these:
            out["modes"][mode] = compare(
                [r for r in these if r.constraints == "off"],
                [r for r in these if r.constraints == "on"],
            )
    on = [r for r in rows if r.constraints == "on"]
    out["overheadAll"] = overhead(on)
    out["overheadAddedAll"] = overhead(on, [r for r in rows if r.constraints == "off"])
    out["overheadChecks"] = overhead(on, part=lambda r: r.checks_ms)
    out["oracleWait"] = overhead(on, part=lambda r: r.oracle_ms)
    out["targets"] = check_targets(out)
    return out


def check_targets(model: dict[str, Any]) -> dict[str, Any]:
    """Each target with the measured value and whether it is met (None: not measured)."""
    checks: dict[str, Any] = {}

    def put(name: str, value: float | None, ok: Callable[[float], bool]) -> None:
        checks[name] = {
            "value": value,
            "target": TARGETS[_base(name)],
            "met": None if value is None else ok(value),
        }

    fb = model["falseBlocks"]["falseBlock"]["rate"]
    put("falseBlockRate", fb, lambda v: v < TARGETS["falseBlockRate"])
    ov = model["overheadChecks"]  # mask and check time; the oracle wait is in the latency
    put("overheadMedian", ov["median"], lambda v: v < TARGETS["overheadMedian"])
    put("overheadP95", ov["p95"], lambda v: v < TARGETS["overheadP95"])
    for mode, m in model["modes"].items():
        put(
            f"inventedRateOn.{mode}",
            m["on"]["invented"]["rate"],
            lambda v: v <= TARGETS["inventedRateOn"],
        )
        put(f"breakRateOn.{mode}", m["on"]["breaks"]["rate"], lambda v: v <= TARGETS["breakRateOn"])
        put(
            f"exactDropPoints.{mode}",
            m["exactDropPoints"],
            lambda v: v <= TARGETS["exactDropPoints"],
        )
        put(
            f"similarityDropPoints.{mode}",
            m["similarityDropPoints"],
            lambda v: v <= TARGETS["similarityDropPoints"],
        )
        put(f"latencyRatio.{mode}", m["latencyRatio"], lambda v: v <= TARGETS["latencyRatio"])
    return checks


def _base(name: str) -> str:
    return name.split(".")[0]


##### Run #####


def draw_all(
    sources: dict[str, list[SourceFile]], kinds: list[str], n: int, seed: int
) -> list[Position]:
    """``n`` positions of each kind, in kind order (a position's index is its id)."""
    return [p for kind in kinds for p in draw_positions(sources, kind, n, seed)]


def run_order(positions: list[Position]) -> list[int]:
    """Position ids grouped by package (the oracle's workspace changes once per package)."""
    return sorted(range(len(positions)), key=lambda i: positions[i].package)


def run_model(
    name: str, positions: list[Position], roots: dict[str, Path], args: argparse.Namespace
) -> tuple[list[Row], list[OracleRow], dict[str, Any]]:
    """Every position off and on with one model, then the oracle at member positions."""
    from tqdm import tqdm

    from lsp_server.loading import load_with_progress

    from .bench import measure_verify_cost

    loaded = load_with_progress(
        name, args.device or "auto", args.dtype or "auto", args.quantize or "auto"
    )
    engine = BenchEngine(loaded)
    try:
        measure_verify_cost(engine)
        runner = Runner(
            name,
            engine,
            args.max_tokens,
            args.context_tokens,
            roots,
            args.cold_oracle,
            debounce_s=args.debounce_ms / 1000,
        )
        order = run_order(positions)
        for i in tqdm(order, desc=f"{name} positions", file=sys.stderr):
            runner.run(i, positions[i])
        oracle = runner.oracle_rows([(i, positions[i]) for i in order])
        info = {
            **report_header("constraints", loaded),
            "verifyCost": engine.verify_cost(),
            "oracleWarmMs": _spread(runner.warm_ms),
        }
        return runner.rows, oracle, info
    finally:
        engine.close()
        del engine, loaded
        gc.collect()


def run_constraints(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code (0 also when a target is missed)."""
    warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
    corpus = fetch_split(args.split)
    roots = {p.name: root for p, root in corpus}
    sources = {p.name: load_sources(root) for p, root in corpus}
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        print(f"unknown kinds {unknown}: choose from {KINDS}", file=sys.stderr)
        return 2
    positions = draw_all(sources, kinds, args.positions, args.seed)
    print(f"{len(positions)} positions over {len(corpus)} packages ({args.split})", file=sys.stderr)
    by_id = dict(enumerate(positions))
    models: dict[str, Any] = {}
    rows: list[Row] = []
    oracle: list[OracleRow] = []
    for name in [m for m in args.models.split(",") if m]:
        m_rows, m_oracle, info = run_model(name, positions, roots, args)
        m_rows, mypy_info = mypy_verdicts(m_rows, by_id, roots)
        models[name] = {**info, "mypy": mypy_info, **summarize_model(m_rows, m_oracle)}
        rows += m_rows
        oracle += m_oracle
    report = _report(args, corpus, positions, models)
    write(report, rows, oracle, args.out, args.split)
    return 0


def _report(
    args: argparse.Namespace,
    corpus: list[tuple[CorpusPackage, Path]],
    positions: list[Position],
    models: dict[str, Any],
) -> dict[str, Any]:
    return {
        "benchmark": "constraints",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "split": args.split,
        "seed": args.seed,
        "positionsPerKind": args.positions,
        "maxTokens": args.max_tokens,
        "contextTokens": args.context_tokens,
        "coldOracle": args.cold_oracle,
        "debounceMs": args.debounce_ms,
        "corpus": [{"name": p.name, "version": p.version, "lines": p.lines} for p, _ in corpus],
        "positions": {k: sum(p.kind == k for p in positions) for k in KINDS},
        "models": models,
    }


def write(
    report: dict[str, Any], rows: list[Row], oracle: list[OracleRow], out: Path, split: str
) -> None:
    """``constraints-<split>.json``, its plot, and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    name = f"constraints-{split}"
    body = {**report, "rows": [r.to_json() for r in rows], "oracle": [o.to_json() for o in oracle]}
    (out / f"{name}.json").write_text(json.dumps(body, indent=1))
    plot(report, out / f"{name}.png")
    print_report(report)
    print(f"written: {out / (name + '.json')}, {out / (name + '.png')}")


##### Table and plot #####


def _pct(r: dict[str, Any] | None) -> str:
    if not r or r.get("rate") is None:
        return "-"
    return f"{100 * r['rate']:.1f}% ({r['count']}/{r['of']})"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def print_report(report: dict[str, Any]) -> None:
    """The table: per model and mode, off against on; false blocks; overhead; targets."""
    for name, m in report["models"].items():
        print(f"\nmodel {m.get('model', name)} on {m.get('device')} ({m.get('dtype')})")
        print(
            f"  {'mode':5} {'':3} {'n':>4} {'shown':>5} {'exact':>16} {'sim':>5} "
            f"{'writes':>6} {'judged':>6} {'invented':>16} {'breaks':>16} {'trim/close/drop':>15} {'lat ms':>7}"
        )
        for mode, cmp_ in m["modes"].items():
            for side in ("off", "on"):
                _print_cell(mode, side, cmp_[side])
            spec = cmp_["speculation"]
            print(
                f"  {mode}: exact drop {_num(cmp_['exactDropPoints'], '.1f')} pts, similarity drop "
                f"{_num(cmp_['similarityDropPoints'], '.1f')} pts, latency on/off {_num(cmp_['latencyRatio'])} "
                f"(paired {_num(cmp_['latencyRatioPaired'])}), breaks of documents that "
                f"parsed off/on {_pct(cmp_['off']['breaksOfParsingDocuments'])}/"
                f"{_pct(cmp_['on']['breaksOfParsingDocuments'])}, "
                f"acceptance {_num(spec['off']['acceptance'])}/{_num(spec['on']['acceptance'])}, "
                f"cost steps/token {_num(spec['off']['costStepsPerToken'])}/{_num(spec['on']['costStepsPerToken'])}"
            )
        fb = m["falseBlocks"]
        print(
            f"  oracle at {fb['positions']} member uses: unknown {_pct(fb['unknown'])}, true member "
            f"blocked {_pct(fb['falseBlock'])} of known; {fb['reasons']}"
        )
        ov, add = m["overheadAll"], m["overheadAddedAll"]
        print(
            f"  overhead (mask with oracle wait + syntax)/decode: median {_num(ov['median'], '.2%')}, "
            f"p95 {_num(ov['p95'], '.2%')} (n={ov['n']}); added over off: median "
            f"{_num(add['median'], '.2%')}, p95 {_num(add['p95'], '.2%')}"
        )
        ck, wait = m["overheadChecks"], m["oracleWait"]
        print(
            f"  mask + check (no oracle wait)/decode: median {_num(ck['median'], '.2%')}, p95 "
            f"{_num(ck['p95'], '.2%')}; oracle wait/decode: median {_num(wait['median'], '.2%')}, "
            f"p95 {_num(wait['p95'], '.2%')}"
        )
        print(f"  oracle warm-up per file (ms): {m.get('oracleWarmMs')}; mypy {m['mypy']}")
        for key, t in m["targets"].items():
            flag = "-" if t["met"] is None else ("met" if t["met"] else "MISSED")
            print(f"    {key:28} {_num(t['value'], '.4f'):>8} target {t['target']}: {flag}")


def _print_cell(mode: str, side: str, c: dict[str, Any]) -> None:
    drops = f"{c['trimmed']['count']}/{c['closed']['count']}/{c['dropped']['count']}"
    lat = c["latencyMs"]["median"] if c["latencyMs"] else None
    print(
        f"  {mode:5} {side:3} {c['n']:>4} {c['shown']:>5} {_pct(c['exact']):>16} "
        f"{_num(c['similarity']):>5} {c['memberWriting']:>6} {c['judged']:>6} "
        f"{_pct(c['invented']):>16} {_pct(c['breaks']):>16} {drops:>15} {_num(lat, '.0f'):>7}"
    )


def plot(report: dict[str, Any], path: Path) -> None:
    """Invented members, syntax breaks, exact match and overhead: off against on."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    groups = [(n, mode, c) for n, m in report["models"].items() for mode, c in m["modes"].items()]
    if not groups:
        return
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    labels = [f"{Path(n).name}\n{mode}" for n, mode, _ in groups]
    panels = [
        (axes[0][0], "invented members (% of member-writing)", lambda c: c["invented"]["rate"]),
        (axes[0][1], "ast.parse fails (% of shown)", lambda c: c["breaks"]["rate"]),
        (axes[1][0], "exact match (%)", lambda c: c["exact"]["rate"]),
    ]
    for ax, title, get in panels:
        _bars(ax, labels, [(get(c["off"]), get(c["on"])) for _, _, c in groups], title)
    _overhead_panel(axes[1][1], report)
    fig.suptitle(
        f"bench constraints ({report['split']} split, {report['positionsPerKind']} positions per kind)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(
    ax: Any, labels: list[str], pairs: list[tuple[float | None, float | None]], title: str
) -> None:
    xs = range(len(labels))
    off = [100 * (a or 0.0) for a, _ in pairs]
    on = [100 * (b or 0.0) for _, b in pairs]
    ax.bar([x - 0.2 for x in xs], off, width=0.4, label="off")
    ax.bar([x + 0.2 for x in xs], on, width=0.4, label="on")
    ax.set_ylim(0, max(1.0, *off, *on) * 1.15)
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def _overhead_panel(ax: Any, report: dict[str, Any]) -> None:
    names, meds, p95s = [], [], []
    for n, m in report["models"].items():
        ov = m["overheadAll"]
        names.append(Path(n).name)
        meds.append(100 * (ov["median"] or 0.0))
        p95s.append(100 * (ov["p95"] or 0.0))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], meds, width=0.4, label="median")
    ax.bar([x + 0.2 for x in xs], p95s, width=0.4, label="p95")
    ax.axhline(2, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(5, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xticks(list(xs), names, fontsize=8)
    ax.set_title("overhead: (mask + syntax + oracle) / decode (%)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
