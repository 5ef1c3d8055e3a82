"""Command line: serve LSP (default), complete one position, demo, models, bench.

The demo and the benchmarks live in the ``tooling`` package; ``main`` imports them only
when their command runs, so serving never loads them.

stdout belongs to the protocol when serving: every log line goes to stderr or a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__
from .loading import CliProgress, load_with_progress, model_overrides, quiet_transformers

SUBCOMMANDS = ("serve", "complete", "demo", "models", "bench")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", help='"default", "qwen2.5-coder-0.5b", a hub id, a directory or a .gguf'
    )
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    g.add_argument("--dtype", help="auto | float32 | float16 | bfloat16 (default auto)")
    g.add_argument(
        "--quantize",
        choices=("auto", "none", "int8", "int4"),
        help="CPU: the linear layers' weights in low bits (default auto: a GGUF model keeps "
        "its file's low-bit weights, others their dtype)",
    )


def _add_serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tcp", metavar="HOST:PORT", help="listen on TCP instead of stdio")
    p.add_argument("--log-file", metavar="PATH", help="log here instead of stderr")
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: protocol)"
    )
    _add_model_options(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``pie-lsp --help``)."""
    parser = argparse.ArgumentParser(
        prog="pie-lsp",
        description="Local code completion over LSP. With no command, serves LSP on stdio.",
    )
    parser.add_argument("--version", action="version", version=f"pie-lsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve LSP (stdio by default; the default command)")
    _add_serve_options(serve)

    complete = sub.add_parser("complete", help="print one completion for a file position")
    complete.add_argument("file", type=Path)
    complete.add_argument("--line", type=int, required=True, help="0-based line")
    complete.add_argument("--character", type=int, required=True, help="0-based column")
    complete.add_argument(
        "--encoding",
        default="utf-32",
        choices=("utf-8", "utf-16", "utf-32"),
        help="units of --character (default utf-32: code points)",
    )
    complete.add_argument("--max-tokens", type=int, default=64)
    complete.add_argument("--multiline", default="auto", choices=("auto", "always", "never"))
    complete.add_argument("--context-tokens", type=int, default=2048)
    complete.add_argument(
        "--json", action="store_true", help="print the result with timings as JSON"
    )
    _add_model_options(complete)

    demo = sub.add_parser("demo", help="the main job: real server, real edits, real completions")
    demo.add_argument("--file", type=Path, help="a Python file to use instead of the sample")
    _add_model_options(demo)

    models = sub.add_parser("models", help="list, prepare or install models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    msub.add_parser("list", help="known models and whether they are ready")
    prep = msub.add_parser("prepare", help="convert a model now (the server does it on first use)")
    prep.add_argument("name", nargs="?", default="default")
    inst = msub.add_parser("install", help="download an opt-in model (hash-verified)")
    inst.add_argument("name", choices=("qwen2.5-coder-0.5b",))

    bench = sub.add_parser("bench", help="benchmarks (figures go to stdout and a JSON file)")
    _add_bench_parsers(bench.add_subparsers(dest="bench_command", metavar="SUITE", required=True))
    return parser


def _add_bench_parsers(bsub: Any) -> None:
    """``pie-lsp bench SUITE`` (the suites live in the ``tooling`` package)."""
    for add in (
        _bench_baseline,
        _bench_edits,
        _bench_drift,
        _bench_decode,
        _bench_constraints,
        _bench_neovim,
        _bench_startup,
        _bench_step,
        _bench_typing,
        _bench_panel,
        _bench_restart,
        _bench_crossfile,
        _bench_fuzz,
        _bench_oracle,
        _bench_load,
    ):
        add(bsub)


def _bench_load(bsub: Any) -> None:
    """``pie-lsp bench load``."""
    p = bsub.add_parser("load", help="a typing storm and a long session: latency, lag, memory")
    p.add_argument("--model", default="default", help="a model, or tiny (a random 2-layer one)")
    p.add_argument("--quiet-s", type=float, default=60, help="quiet typing first (5 keys/s)")
    p.add_argument("--storm-s", type=float, default=60, help="the storm")
    p.add_argument("--keys-per-s", type=float, default=50, help="the storm's typing rate")
    p.add_argument("--long-s", type=float, default=600, help="quiet typing after the storm")
    p.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_oracle(bsub: Any) -> None:
    """``pie-lsp bench oracle``."""
    p = bsub.add_parser(
        "oracle", help="random edits per encoding: text, tree and cached ids against rebuilds"
    )
    p.add_argument("--edits", type=int, default=10_000, help="edits per position encoding")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_fuzz(bsub: Any) -> None:
    """``pie-lsp bench fuzz``."""
    p = bsub.add_parser("fuzz", help="protocol fuzzing over stdio: hostile and valid messages")
    p.add_argument("--messages", type=int, default=100_000, help="in all, over the sessions")
    p.add_argument("--sessions", type=int, default=2, help="server processes per encoding")
    p.add_argument("--model", default="tiny", help="tiny (a random 2-layer model) or a model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_step(bsub: Any) -> None:
    """``pie-lsp bench step``."""
    p = bsub.add_parser("step", help="decode step time per numeric path: fp32, bf16, int8, int4")
    p.add_argument("--model", default="default")
    p.add_argument("--paths", default="fp32,bf16,int8,int4", help="comma-separated, fp32 first")
    p.add_argument("--steps", type=int, default=40, help="one-token steps per path")
    p.add_argument("--repeats", type=int, default=5, help="timings per verify size")
    p.add_argument(
        "--agreement", type=int, default=30, help="held-out positions for completion agreement"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_restart(bsub: Any) -> None:
    """``pie-lsp bench restart``."""
    p = bsub.add_parser("restart", help="first completion after a restart, from saved caches")
    p.add_argument("--model", default="default")
    p.add_argument("--files", type=int, default=10, help="standard-library files")
    p.add_argument("--context", type=int, default=4096, help="prompt tokens (contextTokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_crossfile(bsub: Any) -> None:
    """``pie-lsp bench crossfile``."""
    p = bsub.add_parser(
        "crossfile", help="calls of functions from other files, with and without their stubs"
    )
    p.add_argument("--models", default="default", help="comma-separated model names")
    p.add_argument("--positions", type=int, default=40, help="call sites")
    p.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="a project folder (default: nine packages of the standard library)",
    )
    p.add_argument("--context", type=int, default=1024, help="prompt tokens (contextTokens)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_panel(bsub: Any) -> None:
    """``pie-lsp bench panel``."""
    p = bsub.add_parser("panel", help="a suggestions panel's cost and hits against one inline")
    p.add_argument("--model", default="default")
    p.add_argument("--quantize", default="auto", help="none, int8, int4 or auto")
    p.add_argument("--positions", type=int, default=30, help="real positions (stdlib files)")
    p.add_argument("--count", type=int, default=5, help="drafts per panel")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--max-chars", type=int, default=6000, help="each document cut to about this")
    p.add_argument(
        "--compare",
        action="store_true",
        help="also time first-token alternatives decoded one after another",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_typing(bsub: Any) -> None:
    """``pie-lsp bench typing``."""
    p = bsub.add_parser(
        "typing", help="keystroke to suggestion while typing real files, through the server"
    )
    p.add_argument(
        "--models", default="default,qwen2.5-coder-0.5b", help="comma-separated model settings"
    )
    p.add_argument(
        "--quantize", default="none,auto", help="comma-separated quantize settings, each run"
    )
    p.add_argument("--lines", type=int, default=3, help="lines typed per file")
    p.add_argument("--debounce-ms", type=int, default=150, help="the client's debounce")
    p.add_argument("--max-chars", type=int, default=7000, help="each file cut to about this")
    p.add_argument(
        "--no-edits", dest="edits", action="store_false", help="no edit elsewhere between lines"
    )
    p.add_argument(
        "--calibration-timeout",
        type=float,
        default=180,
        help="seconds to wait for the verify-cost measurement before typing",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_baseline(bsub: Any) -> None:
    """``pie-lsp bench baseline``."""
    base = bsub.add_parser("baseline", help="first completion, latency, prefill and decode speed")
    base.add_argument("--out", type=Path, default=Path("bench-results"))
    base.add_argument("--repeats", type=int, default=20, help="single-line completions to time")
    base.add_argument("--file", type=Path, help="source file (default: a ~2,000-token stdlib file)")
    _add_model_options(base)


def _bench_edits(bsub: Any) -> None:
    """``pie-lsp bench edits``."""
    edits = bsub.add_parser("edits", help="cache strategies after real edits: speed and fidelity")
    edits.add_argument("--sizes", default="1024,2048,4096", help="prompt sizes in tokens")
    edits.add_argument("--cases", type=int, default=4, help="cases per size, edit kind and half")
    edits.add_argument(
        "--pie",
        default="",
        help="pie variants as TAIL:AFTER_EDIT token counts, comma-separated "
        "(default: 1:0, the paper's method, and the configured default)",
    )
    edits.add_argument("--no-prefix", action="store_true", help="skip the prefix strategy")
    edits.add_argument(
        "--confidence-margin",
        type=float,
        default=None,
        help="pie: refresh and decode again below this logit margin (0: off; default: "
        "cache.confidenceMargin's default)",
    )
    edits.add_argument("--latency-cases", type=int, default=10)
    edits.add_argument("--seed", type=int, default=0)
    edits.add_argument("--out", type=Path, default=Path("bench-results"))
    _add_model_options(edits)


def _bench_drift(bsub: Any) -> None:
    """``pie-lsp bench drift``."""
    drift = bsub.add_parser("drift", help="editing sessions: where the drift budget should sit")
    drift.add_argument(
        "--budgets", default="0,256,512,1024,-1", help="staleBudget values (-1: never refresh)"
    )
    drift.add_argument("--size", type=int, default=1024, help="prompt window in tokens")
    drift.add_argument("--sessions", type=int, default=3)
    drift.add_argument("--steps", type=int, default=16, help="edits per session")
    drift.add_argument("--confidence-margin", type=float, default=None, help="as in bench edits")
    drift.add_argument("--seed", type=int, default=0)
    drift.add_argument("--out", type=Path, default=Path("bench-results"))
    _add_model_options(drift)


def _bench_decode(bsub: Any) -> None:
    """``pie-lsp bench decode``."""
    dec = bsub.add_parser("decode", help="speculative decoding vs plain decoding: speed, identity")
    dec.add_argument("--positions", type=int, default=8, help="positions per kind (line, block)")
    dec.add_argument("--max-tokens", type=int, default=64)
    dec.add_argument("--max-draft", type=int, default=16)
    dec.add_argument(
        "--open-files", type=int, default=3, help="earlier positions' files kept open (drafts)"
    )
    dec.add_argument(
        "--repeats", type=int, default=5, help="timings per request and engine (fastest kept)"
    )
    dec.add_argument("--context-tokens", type=int, default=1024)
    dec.add_argument(
        "--context-chars", type=int, default=6000, help="document size around the cursor"
    )
    dec.add_argument(
        "--constraints",
        action="store_true",
        help="requests as Python documents: member monitor and syntax check on, both engines",
    )
    dec.add_argument("--seed", type=int, default=0)
    dec.add_argument("--out", type=Path, default=Path("bench-results"))
    _add_model_options(dec)


def _bench_constraints(bsub: Any) -> None:
    """``pie-lsp bench constraints``."""
    con = bsub.add_parser(
        "constraints", help="member monitor and syntax check, off and on: held-out PyPI code"
    )
    con.add_argument(
        "--models", default="default,qwen2.5-coder-0.5b", help="comma-separated model settings"
    )
    con.add_argument("--split", choices=("dev", "test", "all"), default="dev")
    con.add_argument(
        "--positions", type=int, default=40, help="positions per kind (member, mid, eol, block)"
    )
    con.add_argument("--kinds", default="member,mid,eol,block", help="position kinds to run")
    con.add_argument("--max-tokens", type=int, default=64)
    con.add_argument("--context-tokens", type=int, default=1024)
    con.add_argument(
        "--cold-oracle",
        action="store_true",
        help="no wait for the oracle to load a file before its first request",
    )
    con.add_argument(
        "--debounce-ms",
        type=float,
        default=150.0,
        help="quiet time between each edit and its request, both sides (the Neovim plugin's)",
    )
    con.add_argument("--seed", type=int, default=0)
    con.add_argument("--out", type=Path, default=Path("bench-results"))
    con.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    con.add_argument("--dtype", help="auto | float32 | float16 | bfloat16 (default auto)")
    con.add_argument(
        "--quantize", choices=("auto", "none", "int8", "int4"), help="as the setting (default auto)"
    )


def _bench_neovim(bsub: Any) -> None:
    """``pie-lsp bench neovim``."""
    nv = bsub.add_parser("neovim", help="keystroke to visible ghost text in headless Neovim")
    nv.add_argument("--mode", choices=("both", "native", "extmark"), default="both")
    nv.add_argument("--lines", type=int, default=6, help="code lines to retype")
    nv.add_argument("--chars", type=int, default=12, help="characters typed per line")
    nv.add_argument("--debounce-ms", type=int, default=150, help="the extmark path's debounce")
    nv.add_argument("--max-tokens", type=int, default=32)
    nv.add_argument("--timeout", type=float, default=15, help="seconds to wait per keystroke")
    nv.add_argument("--file", type=Path, help="source file (default: the stdlib's textwrap.py)")
    nv.add_argument("--model", help="model setting sent to the server (default: its default)")
    nv.add_argument("--seed", type=int, default=0)
    nv.add_argument("--out", type=Path, default=Path("bench-results"))


def _bench_startup(bsub: Any) -> None:
    """``pie-lsp bench startup``."""
    st = bsub.add_parser("startup", help="first completion after initialized, idle and busy")
    st.add_argument("--repeats", type=int, default=5, help="server starts per case")
    st.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="busy-loop processes")
    st.add_argument("--model", help="model setting sent to the server (default: its default)")
    st.add_argument("--out", type=Path, default=Path("bench-results"))


def setup_logging(verbose: int, log_file: str | None = None) -> None:
    """Log to stderr (or a file); never to stdout."""
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    if verbose < 2:
        logging.getLogger("pygls").setLevel(logging.WARNING)
    for noisy in ("transformers", "accelerate", "urllib3", "filelock", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve LSP on stdio or TCP."""
    from .config import Config
    from .server import create_server

    setup_logging(args.verbose, args.log_file)
    quiet_transformers()
    server = create_server(replace(Config(), **model_overrides(args)))
    log = logging.getLogger("pie-lsp")
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        if not port.isdigit():
            print(f"pie-lsp: --tcp wants HOST:PORT, got {args.tcp!r}", file=sys.stderr)
            return 2
        log.info("pie-lsp %s listening on %s:%s", __version__, host or "127.0.0.1", port)
    else:
        log.info("pie-lsp %s serving on stdio", __version__)
    code = 0
    try:
        if args.tcp:
            server.start_tcp(host or "127.0.0.1", int(port))
        else:
            server.start_io()
    except SystemExit as exc:  # pygls ends the loop this way on `exit`
        code = exc.code if isinstance(exc.code, int) else 0
    # Exit now: a model load or forward pass still running on the worker thread would
    # otherwise hold the process (the interpreter joins worker threads at exit) and
    # editors kill servers that do not leave within a second or two of `exit`.
    log.info("exiting (code %d)", code)
    logging.shutdown()
    with contextlib.suppress(Exception):  # pygls may have closed stdout already
        sys.stdout.flush()
    os._exit(code)


def cmd_complete(args: argparse.Namespace) -> int:
    """Print one completion."""
    from completion.engine import CompletionOptions, CompletionRequest, Engine
    from completion.models import ModelLoadError

    from .positions import LineIndex, PositionError

    setup_logging(0)
    logging.getLogger().setLevel(logging.WARNING)
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"pie-lsp: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    try:
        cursor = LineIndex.of(text).offset(args.line, args.character, args.encoding, strict=True)
    except PositionError as exc:
        print(f"pie-lsp: {exc}", file=sys.stderr)
        return 2
    try:
        loaded = load_with_progress(**model_overrides(args))
    except ModelLoadError as exc:
        print(f"pie-lsp: {exc}", file=sys.stderr)
        return 1
    engine = Engine(loaded)
    options = CompletionOptions(
        max_tokens=args.max_tokens, multiline=args.multiline, context_tokens=args.context_tokens
    )
    result = engine.complete(CompletionRequest(str(args.file), text, cursor, options))
    if args.json:
        print(
            json.dumps(
                {"text": result.text, **{k: v for k, v in result.__dict__.items() if k != "text"}}
            )
        )
    else:
        print(result.text)
        print(
            f"[{result.mode}, {result.total_ms:.0f} ms: prefill {result.prompt_tokens} tokens "
            f"{result.prefill_ms:.0f} ms, {result.generated_tokens} tokens {result.decode_ms:.0f} ms]",
            file=sys.stderr,
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """List, prepare or install models."""
    from completion import install
    from completion.models import ModelLoadError

    setup_logging(0)
    logging.getLogger().setLevel(logging.WARNING)
    quiet_transformers()
    try:
        if args.models_command == "list":
            for row in install.list_models():
                print(f"{row['name']:<22} {row['status']:<14} {row['detail']}")
            return 0
        bar = CliProgress()
        try:
            if args.models_command == "install":
                path = install.install_qwen(progress=bar)
            else:
                from completion.models import resolve

                path = Path(resolve(args.name, progress=bar))
        finally:
            bar.close()
        print(f"ready: {path}")
        return 0
    except ModelLoadError as exc:
        print(f"pie-lsp: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pie-lsp`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["serve", *argv]
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "complete":
        return cmd_complete(args)
    if args.command == "models":
        return cmd_models(args)
    if args.command == "demo":
        from tooling.demo import run_demo

        return run_demo(args.file, model_overrides(args))
    if args.command == "bench":
        if args.bench_command == "edits":
            from tooling.bench_edits import run_edits

            return run_edits(args)
        if args.bench_command == "drift":
            from tooling.bench_drift import run_drift

            return run_drift(args)
        if args.bench_command == "decode":
            from tooling.bench_decode import run_decode

            return run_decode(args)
        if args.bench_command == "constraints":
            from tooling.bench_constraints import run_constraints

            return run_constraints(args)
        if args.bench_command == "step":
            from tooling.bench_step import run_step

            return run_step(args)
        if args.bench_command == "panel":
            from tooling.bench_panel import run_panel

            return run_panel(args)
        if args.bench_command == "load":
            from tooling.bench_load import run_load

            return run_load(args)
        if args.bench_command == "oracle":
            from tooling.edit_oracle import run_oracle

            return run_oracle(args)
        if args.bench_command == "fuzz":
            from tooling.fuzz_protocol import run_fuzz

            return run_fuzz(args)
        if args.bench_command == "crossfile":
            from tooling.bench_crossfile import run_crossfile

            return run_crossfile(args)
        if args.bench_command == "restart":
            from tooling.bench_restart import run_restart

            return run_restart(args)
        if args.bench_command == "typing":
            from tooling.bench_typing import run_typing

            return run_typing(args)
        if args.bench_command == "startup":
            from tooling.bench_startup import run_startup

            return run_startup(args)
        if args.bench_command == "neovim":
            from tooling.bench_nvim import run_neovim_bench

            return run_neovim_bench(args)
        from tooling.bench import run_baseline

        return run_baseline(args)
    return 2
