"""``pie-lsp bench typing``: keystroke to suggestion while typing, through the real server.

Real editing replayed over LSP on stdio, as an editor client drives the server: code
lines of real files (the standard library, each cut to about 2,000 tokens) are cleared
back to their indentation and typed again one character at a time, in bursts of 5-10
keys a second. Every key is a ``didChange``; the client's debounce (150 ms, the plugin's
default) sends an inline-completion request once no key has come for that long, and a
key that comes before the answer cancels it (``$/cancelRequest``), as the editor clients
do. The typist pauses after some keys (a space, a bracket, a dot...; always on the
first key of a line) and waits for the suggestion. Between two lines, a comment line is
inserted elsewhere in the first half of the file (an edit the cache must follow), and
the cursor jumps to the next line.

Reported per model and ``quantize`` setting, all in one run: the time from the request
(sent after the debounce: the debounce is excluded) to the answer, p50 / p95 / p99, for
the keys the typist paused on, and apart for the first pause after an edit elsewhere;
also how many requests a key superseded. JSON in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bench import percentile, summary
from .bench_nvim import pick_lines
from .client import PendingRequest, PieClient

SOURCES = ("textwrap.py", "json/decoder.py", "difflib.py")
MAX_CHARS = 7000
"""Each file is cut at a line boundary before this many characters (about 2,000 tokens)."""
PAUSE_AFTER = " .(,:=[+-*"
"""Characters after which the typist may pause for a suggestion."""


@dataclass
class Doc:
    """An open document as the client sees it (lines of text, a version per edit)."""

    client: PieClient
    uri: str
    lines: list[str]

    def change(self, line: int, start: int, end: int, text: str) -> None:
        """Replace characters ``[start, end)`` of ``line`` (no line breaks in ``text``)."""
        old = self.lines[line]
        self.client.change(self.uri, (line, _utf16(old, start)), (line, _utf16(old, end)), text)
        self.lines[line] = old[:start] + text + old[end:]

    def insert_line(self, line: int, text: str) -> None:
        """Insert ``text`` as a new line before ``line``."""
        self.client.change(self.uri, (line, 0), (line, 0), text + "\n")
        self.lines.insert(line, text)


def _utf16(line: str, col: int) -> int:
    return len(line[:col].encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Request:
    """One inline-completion request the debounce sent: a JSON ``records`` entry."""

    kind: str
    """"pause" (the typist waited for it) or "burst" (the next key came on its own time)."""
    after_edit: bool
    """The first pause after an edit elsewhere and the jump to a new line."""
    outcome: str
    """"answered" or "superseded" (a key came first and cancelled it)."""
    ms: float
    """Request sent to answer (to the cancel, when superseded)."""
    empty: bool
    file: str
    typed_through: bool = False
    """Every key since the last suggestion shown on this line typed that suggestion's
    text: the server may answer from its rest without running the model."""


@dataclass
class Typist:
    """Types lines into documents through the server, recording every request."""

    client: PieClient
    rng: random.Random
    debounce: float
    records: list[Request] = field(default_factory=list)
    shown: tuple[int, int, str] | None = None
    """The last suggestion answered: its line, column and text."""

    async def type_line(self, doc: Doc, line: int, text: str, name: str) -> None:
        """Clear ``line`` back to its indentation and type ``text``'s rest key by key."""
        indent = len(text) - len(text.lstrip())
        doc.change(line, indent, len(doc.lines[line]), "")
        self.shown = None
        for i, ch in enumerate(text[indent:]):
            col = indent + i
            doc.change(line, col, col, ch)
            pause = i == 0 or (ch in PAUSE_AFTER and self.rng.random() < 0.7)
            if pause:
                await self._pause(doc, line, col + 1, name, after_edit=i == 0)
            else:
                await self._burst_key(doc, line, col + 1, name)

    async def _pause(self, doc: Doc, line: int, col: int, name: str, after_edit: bool) -> None:
        """Wait out the debounce, then for the answer, then think a little."""
        await asyncio.sleep(self.debounce)
        pending = self.client.request_inline(doc.uri, line, _utf16(doc.lines[line], col))
        result = await asyncio.wait_for(pending.future, 120)
        ms = (time.perf_counter() - pending.sent) * 1000
        self._answered("pause", after_edit, ms, result, doc, line, col, name)
        await asyncio.sleep(self.rng.uniform(0.3, 0.8))

    def _answered(
        self,
        kind: str,
        after_edit: bool,
        ms: float,
        result: Any,
        doc: Doc,
        line: int,
        col: int,
        name: str,
    ) -> None:
        """Record an answer; it becomes the suggestion shown."""
        text = PendingRequest.first_text(result)
        through = False
        if self.shown is not None and self.shown[0] == line and self.shown[1] <= col:
            typed = doc.lines[line][self.shown[1] : col]
            through = bool(self.shown[2]) and self.shown[2].startswith(typed)
        self.records.append(Request(kind, after_edit, "answered", ms, not text, name, through))
        self.shown = (line, col, text)

    async def _burst_key(self, doc: Doc, line: int, col: int, name: str) -> None:
        """The next key comes 100-200 ms later; the debounce may fire in between."""
        gap = self.rng.uniform(0.1, 0.2)
        if gap <= self.debounce:
            await asyncio.sleep(gap)
            return
        await asyncio.sleep(self.debounce)
        pending = self.client.request_inline(doc.uri, line, _utf16(doc.lines[line], col))
        try:
            result = await asyncio.wait_for(asyncio.shield(pending.future), gap - self.debounce)
        except TimeoutError:
            self.client.cancel(pending)
            ms = (time.perf_counter() - pending.sent) * 1000
            self.records.append(Request("burst", False, "superseded", ms, True, name))
            return
        ms = (time.perf_counter() - pending.sent) * 1000
        self._answered("burst", False, ms, result, doc, line, col, name)
        await asyncio.sleep(max(0.0, gap - self.debounce - ms / 1000))


def load_sources(max_chars: int) -> dict[str, str]:
    """The standard-library files, each cut at a line boundary before ``max_chars``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = {}
    for rel in SOURCES:
        text = (stdlib / rel).read_text(encoding="utf-8")
        cut = text[:max_chars]
        out[rel] = cut[: cut.rfind("\n") + 1]
    return out


def edit_elsewhere(doc: Doc, before: int, rng: random.Random) -> None:
    """Insert a comment line in the first half of the lines above ``before``."""
    row = rng.randrange(1, max(2, before // 2))
    above = doc.lines[row]
    indent = above[: len(above) - len(above.lstrip())]
    doc.insert_line(row, f"{indent}# reviewed: keep this in step with the callers")


async def _ready(client: PieClient, docs: list[Doc], timeout: float) -> dict[str, Any]:
    """A first completion in every document, then wait for the verify-cost measurement."""
    for doc in docs:
        last = len(doc.lines) - 1
        await asyncio.wait_for(client.inline(doc.uri, last, 0), 600)
    end = time.perf_counter() + timeout
    stats = await client.stats()
    while not stats["totals"].get("verifyCost") and time.perf_counter() < end:
        await asyncio.sleep(0.5)
        stats = await client.stats()
    return stats


async def run_config(
    model: str, quantize: str, args: argparse.Namespace, sources: dict[str, str], tmp: Path
) -> dict[str, Any]:
    """One server with ``model`` and ``quantize``: the typing session, summarised."""
    rng = random.Random(args.seed)
    client = PieClient()
    options: dict[str, Any] = {"model": model, "quantize": quantize}
    t0 = time.perf_counter()
    await client.start(options)
    try:
        docs = {
            name: Doc(client, client.open(tmp / name.replace("/", "_"), text), text.split("\n"))
            for name, text in sources.items()
        }
        ready = await _ready(client, list(docs.values()), args.calibration_timeout)
        setup_s = time.perf_counter() - t0
        typist = Typist(client, rng, args.debounce_ms / 1000)
        plan = {name: pick_lines(text, args.lines, rng) for name, text in sources.items()}
        # Lines inserted above the planned ones so far, per document (the edits land in
        # the first half of the lines above the line typed next, so above every later one).
        shift = dict.fromkeys(docs, 0)
        for turn in range(args.lines):
            for name, doc in docs.items():
                if turn >= len(plan[name]):
                    continue
                if args.edits:
                    edit_elsewhere(doc, plan[name][turn] + shift[name], rng)
                    shift[name] += 1
                target = plan[name][turn] + shift[name]
                await typist.type_line(doc, target, doc.lines[target], name)
        stats = await client.stats()
    finally:
        await client.stop()
    return _report(model, quantize, typist.records, stats, ready, setup_s)


def _report(
    model: str,
    quantize: str,
    records: list[Request],
    stats: dict[str, Any],
    ready: dict[str, Any],
    setup_s: float,
) -> dict[str, Any]:
    """Percentiles and counts from one configuration's records."""
    pauses = [r.ms for r in records if r.kind == "pause"]
    after = [r.ms for r in records if r.kind == "pause" and r.after_edit]
    typing = [r.ms for r in records if r.kind == "pause" and not r.after_edit]
    model_ran = [r.ms for r in records if r.kind == "pause" and not r.typed_through]
    bursts = [r for r in records if r.kind == "burst"]
    totals = stats.get("totals", {})
    keep = (
        "completions",
        "gatedRefreshes",
        "gatesDeferred",
        "refreshes",
        "tokensRefreshed",
        "tokensReencoded",
        "cancelledCompletions",
        "verifySteps",
        "acceptedTokens",
        "draftTokens",
        "reusedCompletions",
        "calibrationSeconds",
    )
    return {
        "model": model,
        "quantize": quantize,
        "resolved": stats.get("model", {}).get("quantize", quantize),
        "setupSeconds": round(setup_s, 1),
        "calibrated": bool(ready.get("totals", {}).get("verifyCost")),
        "pauses": _percentiles(pauses),
        "afterEdit": _percentiles(after),
        "whileTyping": _percentiles(typing),
        "notTypedThrough": _percentiles(model_ran),
        "emptyAnswers": sum(r.empty for r in records if r.kind == "pause"),
        "burstRequests": len(bursts),
        "burstAnswered": sum(r.outcome == "answered" for r in bursts),
        "superseded": sum(r.outcome == "superseded" for r in bursts),
        "server": {k: totals[k] for k in keep if k in totals},
        "records": [asdict(r) for r in records],
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {**summary(values), "p99": percentile(values, 99), "n": len(values)}


async def _run_all(args: argparse.Namespace) -> dict[str, Any]:
    sources = load_sources(args.max_chars)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for quantize in args.quantize.split(","):
                print(f"typing with {model}, quantize={quantize} ...", file=sys.stderr)
                runs.append(await run_config(model, quantize, args, sources, Path(tmp)))
                print(_row(runs[-1]), file=sys.stderr)
    return {
        "benchmark": "typing",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": list(sources),
        "debounceMs": args.debounce_ms,
        "linesPerFile": args.lines,
        "editsBetweenLines": args.edits,
        "runs": runs,
    }


def _row(run: dict[str, Any]) -> str:
    def cell(p: dict[str, float]) -> str:
        if not p.get("n"):
            return "-"
        return f"{p['median']:.0f}/{p['p95']:.0f}/{p['p99']:.0f} (n={p['n']})"

    return (
        f"{run['model']:<20} {run['resolved']:<5} pauses {cell(run['pauses']):<24} "
        f"not typed through {cell(run['notTypedThrough']):<24} "
        f"after edit {cell(run['afterEdit']):<24} superseded {run['superseded']}/"
        f"{run['burstRequests']}"
    )


def run_typing(args: argparse.Namespace) -> int:
    """Run the typing benchmark; print the table, write ``typing.json``."""
    report = asyncio.run(_run_all(args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "typing.json"
    path.write_text(json.dumps(report, indent=1))
    print("keystroke to suggestion, ms (debounce excluded): p50/p95/p99 (n)")
    for run in report["runs"]:
        print(_row(run))
    print(f"written: {path}")
    return 0
