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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .bench import measure_verify_cost, percentile, report_header, summary
from .bench_edits import SOURCES, _code_lines


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


def run_decode(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code."""
    from tqdm import tqdm

    from completion.engine import CompletionOptions, CompletionRequest
    from lsp_server.loading import load_with_progress, model_overrides

    from .engines import SnapshotEngine

    o = model_overrides(args)
    loaded = load_with_progress(
        o.get("model", "default"), o.get("device", "auto"), o.get("dtype", "auto")
    )
    on, off = SnapshotEngine(loaded), SnapshotEngine(loaded)
    costs = measure_verify_cost(on)
    positions = make_positions(args.seed, args.positions, args.context_chars)
    base = CompletionOptions(
        max_tokens=args.max_tokens,
        context_tokens=args.context_tokens,
        max_draft_tokens=args.max_draft,
        # The cache's confidence gate would re-decode some session requests on a
        # refreshed cache; this benchmark measures decoding alone.
        confidence_margin=0.0,
    )
    opts = {"on": base, "off": replace(base, speculative=False)}
    engines = {"on": on, "off": off}
    rows: list[dict[str, Any]] = []

    def ask(step: str, key: str, text: str, cursor: int, pos: Position) -> str:
        # Each request is timed ``repeats`` times per engine from the same state (the
        # drafting state and the document's prompt cache are put back between repeats),
        # the engines alternating, and the fastest decode time is kept
        # (as timeit does): one timing on this shared 2-core machine varies by about 10%,
        # and that noise only ever adds time.
        decode: dict[str, list[float]] = {"on": [], "off": []}
        work: dict[str, list[float]] = {"on": [], "off": []}  # cache update + decode
        update_off: list[float] = []
        merged = False  # the speculating engine verified with the prompt's forward
        first: dict[str, tuple[Any, _Counters]] = {}
        states = {name: eng.drafting_state(key) for name, eng in engines.items()}
        # The drafting state includes the verify-cost timings learned online, which both
        # engines share (only the speculating one times steps): what the last speculating
        # run learned is what the next request starts from.
        learned = None
        rates: dict[str, Any] = {}
        for rep in range(args.repeats):
            order = ("off", "on") if (len(rows) + rep) % 2 else ("on", "off")
            for name in order:
                eng = engines[name]
                if rep:
                    eng.restore_drafting_state(states[name])
                before = _counters(eng.totals)
                merges = eng.totals.promptVerifySteps
                r = eng.complete(CompletionRequest(key, text, cursor, opts[name], others))
                after = _counters(eng.totals)
                decode[name].append(r.decode_ms)
                work[name].append(r.prefill_ms + r.decode_ms)
                if name == "on":
                    merged = merged or eng.totals.promptVerifySteps > merges
                    learned = on.costs.snapshot()
                    rates = {**on.acceptance.rates(), "comeAgain": on.bands.rates()}
                else:
                    update_off.append(r.prefill_ms)
                if rep == 0:
                    first[name] = (r, after - before)
                elif r.text != first[name][0].text:
                    raise RuntimeError(f"{name}: a repeat of a request gave another output")
        if learned is not None:
            on.costs.restore(learned)
        (r_off, _), (r_on, used) = first["off"], first["on"]
        # A suggestion verified inside the cache update's forward: that forward also did
        # the update work the plain engine counts as update time. Both engines start from
        # the same cache and do the same update, so the speculating engine's decode time
        # is its update + decode time less the plain engine's update time.
        decode_on = min(decode["on"])
        if merged:
            decode_on = max(1e-3, min(work["on"]) - min(update_off))
        # By the cost curve, free of timing noise: plain decoding runs one forward per
        # token after the first; the speculating engine's forwards weighted by the curve.
        # Not for a draft verified in the cache update's forward (that forward is not
        # a decode step).
        forwards = r_off.generated_tokens - 1
        cost_steps = used.cost_steps
        modelled = forwards / cost_steps if forwards > 0 and cost_steps > 0 and not merged else None
        off_t = decode["off"]
        rows.append(
            {
                "workload": "cold" if step == "cold" else "session",
                "step": step,
                "kind": pos.kind,
                "source": pos.source,
                "reused": r_on.stop_reason == "reused",
                "identical": r_on.text == r_off.text,
                "tokens": r_on.generated_tokens,
                "decodeMsOff": min(decode["off"]),
                "decodeMsOn": decode_on,
                "verifiedWithPrompt": merged,
                "modelledSpeedup": modelled,
                # The same plain request timed twice (fastest of the even repeats over
                # fastest of the odd ones): what timing noise alone does to a ratio.
                "noiseRatio": min(off_t[::2]) / min(off_t[1::2])
                if len(off_t) > 1 and min(off_t[1::2]) > 0
                else None,
                "workMsOff": min(work["off"]),
                "workMsOn": min(work["on"]),
                "decodeMsOffAll": decode["off"],
                "decodeMsOnAll": decode["on"],
                "totalMsOff": r_off.total_ms,
                "totalMsOn": r_on.total_ms,
                "drafted": used.drafted,
                "accepted": used.accepted,
                "verifySteps": used.steps,
                "acceptanceAfter": rates,
            }
        )
        return r_on.text

    # Other open documents (a draft source): the files of the last positions, as an
    # editor has a few files of the project open.
    opened: dict[str, str] = {}
    others: tuple[tuple[str, str], ...] = ()
    for i, pos in enumerate(tqdm(positions, desc="positions", file=sys.stderr)):
        others = tuple(
            (name, body) for name, body in reversed(opened.items()) if name != pos.source
        )[: args.open_files]
        key = f"doc{i}"
        text, cursor = pos.text, pos.cursor
        suggestion = ask("cold", key, text, cursor, pos)
        if len(suggestion) >= 3:
            typed = suggestion[: max(1, len(suggestion) // 3)]
            text = text[:cursor] + typed + text[cursor:]
            cursor += len(typed)
            ask("typed", key, text, cursor, pos)  # typing through: no model
        # A comment line 40 lines above the cursor, then ask again.
        line_starts = [0] + [j + 1 for j, c in enumerate(text[:cursor]) if c == "\n"]
        at = line_starts[max(0, len(line_starts) - 40)]
        comment = "# reviewed\n"
        text = text[:at] + comment + text[at:]
        cursor += len(comment)
        ask("edit", key, text, cursor, pos)
        # A wrong character typed and deleted: the same text, asked again.
        ask("wrong", key, text[:cursor] + "@" + text[cursor:], cursor + 1, pos)
        ask("again", key, text, cursor, pos)
        for eng in engines.values():
            eng.forget(key)
        if pos.path is not None:
            opened.pop(pos.source, None)
            opened[pos.source] = pos.path.read_text(encoding="utf-8")

    report = summarize(rows, loaded, costs, args)
    report["verifyCostLearned"] = on.verify_cost()
    args.out.mkdir(parents=True, exist_ok=True)
    name = "decode" if o.get("model", "default") == "default" else f"decode-{Path(o['model']).name}"
    (args.out / f"{name}.json").write_text(json.dumps({**report, "rows": rows}, indent=1))
    print_report(report)
    print(f"written: {args.out / (name + '.json')}")
    return 0 if report["identical"] == 1.0 else 1


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    model_rows = [r for r in rows if not r["reused"] and r["tokens"] > 0]
    if not model_rows:
        return {"requests": len(rows), "reused": sum(r["reused"] for r in rows)}
    speedups = [r["decodeMsOff"] / max(r["decodeMsOn"], 1e-6) for r in model_rows]
    drafted = sum(r["drafted"] for r in model_rows)
    tok = sum(r["tokens"] for r in model_rows)
    modelled = [r["modelledSpeedup"] for r in model_rows if r.get("modelledSpeedup")]
    noise = [r["noiseRatio"] for r in model_rows if r.get("noiseRatio")]
    # Each engine's median timing instead of its fastest: drafting decisions follow the
    # timings a request learns as it runs, so repeats may draft differently, and the
    # fastest repeat favours the lucky ones (requests verified with the prompt excepted).
    typical = [
        statistics.median(r["decodeMsOffAll"]) / statistics.median(r["decodeMsOnAll"])
        for r in model_rows
        if not r["verifiedWithPrompt"] and statistics.median(r["decodeMsOnAll"]) > 0
    ]
    return {
        "requests": len(rows),
        "reused": sum(r["reused"] for r in rows),
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
            r["workMsOff"] / max(r["workMsOn"], 1e-6) for r in model_rows
        ),
        "verifiedWithPrompt": sum(r["verifiedWithPrompt"] for r in model_rows),
        "tokensPerSecondOff": tok / (sum(r["decodeMsOff"] for r in model_rows) / 1000),
        "tokensPerSecondOn": tok / (sum(r["decodeMsOn"] for r in model_rows) / 1000),
        "latencyMsOff": summary([r["totalMsOff"] for r in model_rows]),
        "latencyMsOn": summary([r["totalMsOn"] for r in model_rows]),
        "acceptanceRate": (sum(r["accepted"] for r in model_rows) / drafted) if drafted else None,
        "draftedPerRequest": drafted / len(model_rows),
        "identical": sum(r["identical"] for r in rows) / len(rows),
    }


def summarize(
    rows: list[dict[str, Any]], loaded: Any, costs: dict[int, float], args: argparse.Namespace
) -> dict[str, Any]:
    """Aggregate per workload and kind."""
    out: dict[str, Any] = {
        **report_header("decode", loaded),
        "verifyCost": costs,
        "maxDraftTokens": args.max_draft,
        "repeats": args.repeats,
        "openFiles": args.open_files,
        "identical": sum(r["identical"] for r in rows) / max(1, len(rows)),
        "workloads": {},
    }
    for workload in ("cold", "session"):
        sel = [r for r in rows if r["workload"] == workload]
        out["workloads"][workload] = {
            "all": _stats(sel),
            "line": _stats([r for r in sel if r["kind"] == "line"]),
            "block": _stats([r for r in sel if r["kind"] == "block"]),
        }
    out["sessionSteps"] = {
        step: _stats([r for r in rows if r["step"] == step]) for step in ("edit", "wrong", "again")
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
