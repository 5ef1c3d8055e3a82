"""``pie-lsp bench neovim``: keystroke to visible ghost text in a real headless Neovim.

A scripted typing session over a real file (the standard library's ``textwrap.py`` by
default): for a few code lines, the line is cleared back to its indentation and typed
again one character at a time. After each keystroke the script waits until a *fresh*
suggestion is on screen: a ghost-text extmark present when the answer to an
inline-completion request sent after that keystroke has been handled (the ghost text is
looked for right after the handler that draws it). Times are taken
inside Neovim (``vim.uv.hrtime``) from the keystroke (``vim.on_key``).

Both ghost text paths run: Neovim 0.12's native inline completion (its own 200 ms
debounce) and the plugin's extmark path (``debounce_ms``, 150 by default).

The first keystroke on each line comes right after a jump to another part of the file
(a new prompt window to encode); it is reported apart from the keystrokes that follow.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bench import summary
from .nvim_driver import GHOST_NS, NATIVE_NS, open_file, quit_nvim, start, type_as_is, wait_for

INSTRUMENT = """
local ns_name = ...
local uv = vim.uv or vim.loop
local B = { key = 0, last_key = 0, sent = {}, fresh = {}, empty = {} }
_G.__pie_bench = B
vim.on_key(function()
  B.key = B.key + 1
  B.last_key = uv.hrtime()
end)
vim.api.nvim_create_autocmd('LspRequest', {
  callback = function(ev)
    local r = ev.data and ev.data.request
    if not r or r.method ~= 'textDocument/inlineCompletion' then return end
    local id = ev.data.request_id
    if r.type == 'pending' then
      B.sent[id] = { t = uv.hrtime(), key = B.key, at = B.last_key }
    elseif r.type == 'complete' and B.sent[id] then
      local s = B.sent[id]
      B.sent[id] = nil
      if s.key ~= B.key then return end -- a key came in since: not this keystroke's answer
      local now = uv.hrtime()
      -- The reply is announced before its handler draws the ghost text: look right after.
      vim.schedule(function()
        local ns = vim.api.nvim_get_namespaces()[ns_name]
        local shown = ns and #vim.api.nvim_buf_get_extmarks(0, ns, 0, -1, {}) > 0
        local t = shown and uv.hrtime() or now
        local rec = { key = s.key, ms = (t - s.at) / 1e6, server_ms = (now - s.t) / 1e6 }
        if shown then B.fresh[s.key] = rec else B.empty[s.key] = rec end
      end)
    end
  end,
})
"""


def pick_lines(text: str, n: int, rng: random.Random) -> list[int]:
    """Code lines worth typing: in the second half, 24-70 characters, not comments."""
    lines = text.split("\n")
    good = [
        i
        for i, ln in enumerate(lines)
        if i > len(lines) // 2
        and 24 <= len(ln) <= 70
        and ln.strip()
        and not ln.strip().startswith(("#", '"', "'"))
    ]
    return sorted(rng.sample(good, min(n, len(good))))


@dataclass(frozen=True)
class Keystroke:
    """One key typed and what came of it: a JSON ``records`` entry."""

    char: str
    index: int
    """The key's place on the line (0: the first key after a jump to the line)."""
    result: str  # "shown" | "empty" | "timeout"
    ms: float
    """Keystroke to the ghost text (or to the empty answer, or to the timeout)."""
    server_ms: float | None
    """Request sent to answer handled (None on a timeout)."""

    def to_json(self) -> dict[str, Any]:
        """The record as written to the report."""
        return {
            "char": self.char,
            "index": self.index,
            "result": self.result,
            "ms": self.ms,
            "serverMs": self.server_ms,
        }


def type_line(
    nvim: Any, path: Path, text: str, row: int, chars: int, timeout: float
) -> list[Keystroke]:
    """Clear line ``row`` to its indentation, type up to ``chars`` of it; one record a key."""
    lines = text.split("\n")
    target = lines[row]
    indent = target[: len(target) - len(target.lstrip())]
    lines[row] = indent
    path.write_text("\n".join(lines), encoding="utf-8")
    nvim.command(f"edit! {path}")
    type_as_is(nvim)
    nvim.api.win_set_cursor(0, [row + 1, len(indent)])
    nvim.command("startinsert!")
    records = []
    for i, ch in enumerate(target[len(indent) : len(indent) + chars]):
        key = nvim.exec_lua("return __pie_bench.key") + 1
        start_t = time.monotonic()
        nvim.input("<lt>" if ch == "<" else ch)

        def done(key: int = key) -> Any:
            return nvim.exec_lua(
                "local k = ...; local B = __pie_bench;"
                " if B.fresh[k] then return {'shown', B.fresh[k]} end;"
                " if B.empty[k] then return {'empty', B.empty[k]} end; return false",
                key,
            )

        try:
            kind, rec = wait_for(done, timeout, "an answer")
        except AssertionError:
            kind, rec = "timeout", {"ms": (time.monotonic() - start_t) * 1000, "server_ms": None}
        records.append(Keystroke(ch, i, kind, rec["ms"], rec["server_ms"]))
    nvim.input("<Esc>")
    return records


@dataclass(frozen=True)
class _Session:
    """What every ghost text mode types: the file, the lines, the server's settings."""

    source: Path
    text: str
    rows: list[int]
    settings: dict[str, Any]


def _type_lines(mode: str, tmp: Path, s: _Session, args: argparse.Namespace) -> dict[str, Any]:
    """Type every line in one ghost text mode (a Neovim and a server of its own).

    Returns the mode's report (keystrokes, latency summaries, the server's model stats).
    """
    work = tmp / s.source.name
    ns = NATIVE_NS if mode == "native" else GHOST_NS
    print(f"[{mode}] starting Neovim and the server...", file=sys.stderr)
    nvim = start(tmp / f"server-{mode}.log", mode, s.settings, args.debounce_ms)
    try:
        nvim.exec_lua(INSTRUMENT, ns)
        open_file(nvim, work, s.text)
        # Warm up: the model loads on the first request.
        type_line(nvim, work, s.text, s.rows[0], 1, 300)
        records: list[Keystroke] = []
        for i, row in enumerate(s.rows):
            recs = type_line(nvim, work, s.text, row, args.chars, args.timeout)
            shown = [r.ms for r in recs if r.result == "shown"]
            print(
                f"[{mode}] line {i + 1}/{len(s.rows)}: {len(shown)}/{len(recs)} keystrokes"
                f" showed a fresh suggestion",
                file=sys.stderr,
            )
            records += recs
        stats = nvim.exec_lua(
            "local done; require('pie').stats(function(_, s) done = s end);"
            " vim.wait(5000, function() return done ~= nil end); return done"
        )
    finally:
        quit_nvim(nvim)
    return _mode_report(mode, records, stats, args.debounce_ms)


def _mode_report(
    mode: str, records: list[Keystroke], stats: Any, debounce_ms: int
) -> dict[str, Any]:
    shown = [r.ms for r in records if r.result == "shown"]
    typing = [r.ms for r in records if r.result == "shown" and r.index > 0]
    jumps = [r.ms for r in records if r.result == "shown" and r.index == 0]
    server = [r.server_ms for r in records if r.server_ms is not None]
    return {
        "debounceMs": 200 if mode == "native" else debounce_ms,
        "keystrokes": len(records),
        "shown": len(shown),
        "noSuggestion": sum(r.result == "empty" for r in records),
        "timeouts": sum(r.result == "timeout" for r in records),
        "keystrokeToGhostMs": summary(shown) if shown else {},
        "whileTypingMs": summary(typing) if typing else {},
        "firstKeyAfterJumpMs": summary(jumps) if jumps else {},
        "requestRoundTripMs": summary(server) if server else {},
        "model": (stats or {}).get("model", {}),
        "records": [r.to_json() for r in records],
    }


def run_neovim_bench(args: argparse.Namespace) -> int:
    """Run the benchmark; returns an exit code (1 when pynvim is missing)."""
    try:
        import pynvim  # noqa: F401
    except ImportError:
        print("pynvim is not installed: pip install 'pie-lsp[bench]'", file=sys.stderr)
        return 1
    source = args.file or Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"
    text = source.read_text(encoding="utf-8")
    rng = random.Random(args.seed)
    rows = pick_lines(text, args.lines, rng)
    modes = ["native", "extmark"] if args.mode == "both" else [args.mode]
    settings: dict[str, Any] = {"completion": {"maxTokens": args.max_tokens}}
    if args.model:
        settings["model"] = args.model
    report: dict[str, Any] = {
        "benchmark": "neovim",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "file": source.name,
        "lines": len(rows),
        "charsPerLine": args.chars,
        "settings": settings,
        "modes": {},
    }
    session = _Session(source, text, rows, settings)
    with tempfile.TemporaryDirectory(prefix="pie-bench-nvim-") as tmp:
        for mode in modes:
            report["modes"][mode] = _type_lines(mode, Path(tmp), session, args)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "neovim.json"
    out.write_text(json.dumps(report, indent=1))
    print_report(report, source.name)
    print(f"written: {out}")
    return 0


def print_report(report: dict[str, Any], file_name: str) -> None:
    """The figures per ghost text mode."""
    print(f"\nkeystroke to visible ghost text, headless Neovim, {file_name}:")
    for mode, m in report["modes"].items():
        k = m["keystrokeToGhostMs"]
        r = m["requestRoundTripMs"]
        if not k:
            print(f"  {mode:<8} no suggestion shown in {m['keystrokes']} keystrokes")
            continue
        print(
            f"  {mode:<8} median {k['median']:.0f} ms, p95 {k['p95']:.0f} ms"
            f" ({m['shown']}/{m['keystrokes']} keystrokes, debounce {m['debounceMs']} ms;"
            f" request round trip median {r['median']:.0f} ms, p95 {r['p95']:.0f} ms)"
        )
        t, j = m["whileTypingMs"], m["firstKeyAfterJumpMs"]
        if t and j:
            print(
                f"  {'':<8} while typing on a line: median {t['median']:.0f} ms, p95 {t['p95']:.0f} ms;"
                f" first key after jumping to another line: median {j['median']:.0f} ms"
            )
