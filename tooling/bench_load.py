"""Load: a typing storm and a long session over stdio (``pie-lsp bench load``).

One server, a 2,000-line file (a standard-library module) being typed into: a line near
the middle is cut and typed again, a character at a time, each keystroke a
``didChange`` and an inline completion request, the previous request cancelled as an
editor does. Phases: quiet typing (5 keys/s), the storm (50 keys/s), then a long session
of quiet typing. Throughout, a second open file gets a probe completion every
``PROBE_S`` (never superseded: nothing edits it) and ``pie/stats`` is asked every
``PING_S`` (its round trip is the event loop's lag). Figures: requests answered (all of
them must be), probe latency p50/p95 per phase (the storm's p95 against quiet typing's),
ping round trips, and the server's resident memory at the start, after the storm and at
the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import sysconfig
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .bench import summary
from .wire import Wire

PROBE_S = 0.5
PING_S = 0.25
FILE_LINES = 2000


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    seconds: float
    keys_per_s: float
    keystrokes: int = 0
    requests: int = 0
    probe_ms: list[float] = field(default_factory=list)
    ping_ms: list[float] = field(default_factory=list)
    rss_mb_after: float = 0.0


class Session:
    """The server, the typed document and the probe document."""

    def __init__(self, wire: Wire, root: Path, text: str) -> None:
        self.wire = wire
        self.ids = 0
        self.version = 1
        self.sent: list[Any] = []  # every request id, to check all were answered
        self.doc = (root / "typed.py").as_uri()
        self.probe_doc = (root / "probe.py").as_uri()
        lines = text.split("\n")[:FILE_LINES]
        self.row = len(lines) // 2
        while not lines[self.row].strip() and self.row < len(lines) - 1:
            self.row += 1
        self.line = lines[self.row]
        lines[self.row] = ""
        self.text = "\n".join(lines)
        self.col = 0
        self.lock = threading.Lock()  # requests from the probe threads

    def request(self, method: str, params: Any) -> str:
        """Send a request (any thread); its id."""
        with self.lock:
            self.ids += 1
            msg_id = f"r{self.ids}"
            self.sent.append(msg_id)
        self.wire.request(msg_id, method, params)
        return msg_id

    def open(self) -> None:
        """``didOpen`` both documents."""
        for uri, text in ((self.doc, self.text), (self.probe_doc, PROBE_TEXT)):
            item = {"uri": uri, "languageId": "python", "version": 1, "text": text}
            self.wire.notify("textDocument/didOpen", {"textDocument": item})

    def inline(self, uri: str, line: int, character: int) -> str:
        """Ask for an inline completion; its id."""
        params = {
            "textDocument": {"uri": uri},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 2},
        }
        return self.request("textDocument/inlineCompletion", params)

    def keystroke(self, pending: str | None) -> str:
        """Type the next character of the line (start over when it is typed whole)."""
        if pending is not None:
            self.wire.notify("$/cancelRequest", {"id": pending})
        if self.col >= len(self.line):
            self._clear_line()
        ch = self.line[self.col]
        self.version += 1
        change = {"range": _range(self.row, self.col, self.row, self.col), "text": ch}
        self.wire.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": self.doc, "version": self.version},
                "contentChanges": [change],
            },
        )
        self.col += 1
        return self.inline(self.doc, self.row, self.col)

    def _clear_line(self) -> None:
        self.version += 1
        change = {"range": _range(self.row, 0, self.row, self.col), "text": ""}
        self.wire.notify(
            "textDocument/didChange",
            {
                "textDocument": {"uri": self.doc, "version": self.version},
                "contentChanges": [change],
            },
        )
        self.col = 0


PROBE_TEXT = (
    "import math\n\n\ndef hypotenuse(a: float, b: float) -> float:\n"
    '    """The longest side of a right triangle."""\n    return math.'
)


def _range(l1: int, c1: int, l2: int, c2: int) -> dict[str, Any]:
    return {"start": {"line": l1, "character": c1}, "end": {"line": l2, "character": c2}}


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux ``/proc``; 0 elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_phase(session: Session, name: str, seconds: float, keys_per_s: float) -> Phase:
    """Type for ``seconds`` at ``keys_per_s`` while the probes and pings run."""
    phase = Phase(name, seconds, keys_per_s)
    stop = threading.Event()
    threads = [
        threading.Thread(target=_probes, args=(session, phase, stop), daemon=True),
        threading.Thread(target=_pings, args=(session, phase, stop), daemon=True),
    ]
    for t in threads:
        t.start()
    start = time.monotonic()
    pending: str | None = None
    while time.monotonic() - start < seconds:
        pending = session.keystroke(pending)
        phase.keystrokes += 1
        next_at = start + phase.keystrokes / keys_per_s
        time.sleep(max(0.0, next_at - time.monotonic()))
    stop.set()
    for t in threads:
        t.join()
    phase.requests = phase.keystrokes + len(phase.probe_ms) + len(phase.ping_ms)
    phase.rss_mb_after = round(rss_mb(session.wire.proc.pid), 1)
    return phase


def _probes(session: Session, phase: Phase, stop: threading.Event) -> None:
    lines = PROBE_TEXT.split("\n")
    while not stop.is_set():
        t0 = time.perf_counter()
        msg_id = session.inline(session.probe_doc, len(lines) - 1, len(lines[-1]))
        if session.wire.wait_for(msg_id, 120):
            phase.probe_ms.append((time.perf_counter() - t0) * 1000)
        stop.wait(max(0.0, PROBE_S - (time.perf_counter() - t0)))


def _pings(session: Session, phase: Phase, stop: threading.Event) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        msg_id = session.request("pie/stats", None)
        if session.wire.wait_for(msg_id, 60):
            phase.ping_ms.append((time.perf_counter() - t0) * 1000)
        stop.wait(max(0.0, PING_S - (time.perf_counter() - t0)))


def run_load(args: argparse.Namespace) -> int:
    """``pie-lsp bench load``; 0 when every request was answered."""
    import tempfile

    from .tiny_model import make_tiny_model

    scratch = Path(tempfile.mkdtemp(prefix="pie-load-"))
    model = str(make_tiny_model(scratch / "tiny")) if args.model == "tiny" else args.model
    source = Path(sysconfig.get_paths()["stdlib"]) / "argparse.py"
    wire = Wire([sys.executable, "-m", "lsp_server"], env=dict(os.environ))
    session = Session(wire, scratch, source.read_text(encoding="utf-8"))
    init = {"processId": os.getpid(), "rootUri": None, "capabilities": {},
            "initializationOptions": {"model": model}}  # fmt: skip
    wire.request("init", "initialize", init)
    wire.wait_for("init", 600)
    wire.notify("initialized", {})
    session.open()
    warm = session.inline(session.doc, session.row, 0)  # the first completion: cold prefill
    wire.wait_for(warm, 900)
    start_rss = round(rss_mb(wire.proc.pid), 1)
    phases = [
        run_phase(session, "quiet", args.quiet_s, 5),
        run_phase(session, "storm", args.storm_s, args.keys_per_s),
        run_phase(session, "long", args.long_s, 5),
    ]
    unanswered = [i for i in session.sent if not wire.wait_for(i, 120)]
    stats = wire.stats("final") or {}
    wire.request("bye", "shutdown", None)
    wire.wait_for("bye", 60)
    wire.notify("exit", None)
    exit_code = wire.close(30)
    report = _report(
        args, model, phases, start_rss, len(session.sent), unanswered, exit_code, stats
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "load.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "phases"}, indent=2))
    print(f"written: {path}", file=sys.stderr)
    return 0 if not unanswered and exit_code == 0 else 1


def _report(
    args: argparse.Namespace,
    model: str,
    phases: list[Phase],
    start_rss: float,
    sent: int,
    unanswered: list[Any],
    exit_code: int | None,
    stats: dict[str, Any],
) -> dict[str, Any]:
    quiet, storm, long = phases
    q95 = summary(quiet.probe_ms)["p95"] if quiet.probe_ms else 0.0
    s95 = summary(storm.probe_ms)["p95"] if storm.probe_ms else 0.0
    return {
        "model": model,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "requests": sent,
        "answered": sent - len(unanswered),
        "exitCode": exit_code,
        "probe": {p.name: summary(p.probe_ms) for p in phases if p.probe_ms},
        "stormP95OverQuietP95": round(s95 / q95, 2) if q95 else None,
        "pingMs": {p.name: summary(p.ping_ms) for p in phases if p.ping_ms},
        "rssMb": {
            "start": start_rss,
            "afterQuiet": quiet.rss_mb_after,
            "afterStorm": storm.rss_mb_after,
            "end": long.rss_mb_after,
            "endOverAfterStorm": round(long.rss_mb_after / storm.rss_mb_after, 3)
            if storm.rss_mb_after
            else None,
        },
        "keystrokes": {p.name: p.keystrokes for p in phases},
        "serverCounters": {
            k: stats.get("totals", {}).get(k)
            for k in ("cancelled", "superseded", "errors", "edits")
        },
        "phases": [asdict(p) for p in phases],
    }
