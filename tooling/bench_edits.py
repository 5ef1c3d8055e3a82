"""``pie-lsp bench edits``: cache strategies after real edits, in one run.

Edit traces are built from real Python files (the standard library): a window of N
tokens ending inside a code line (the cursor), and an edit inside the window as in the
PIE paper: insert a real line taken from elsewhere in the file, delete a line, or a
multi-place edit (two insertions and a deletion). For every strategy, on the same case:

- cache-update time and tokens re-encoded (the engine's own ``SyncResult``);
- agreement with ``recompute``: the completion the server would return (single-line
  mode, up to 32 tokens, greedy) exactly equal, the raw 32-token greedy continuation
  exactly equal, and edit similarity of both;
- "follows the edit": among cases where the edit changed recompute's completion, how
  often the strategy changed it the same way (agreement alone flatters: most edits far
  from the cursor change nothing).

A latency scenario measures real completions in a 2k-token file with no edit and right
after a one-line edit. Results: a table on stdout, ``edits.json`` and ``edits.png``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import statistics
import sys
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .bench import measure_verify_cost, percentile, report_header, summary

if TYPE_CHECKING:
    from completion.engine import CompletionOptions, CompletionResult

    from .engines import ProbeEngine

SOURCES = (
    "argparse.py",
    "json/decoder.py",
    "textwrap.py",
    "difflib.py",
    "configparser.py",
    "dataclasses.py",
    "pathlib.py",
    "functools.py",
    "inspect.py",
    "typing.py",
    "logging/__init__.py",
    "tarfile.py",
)
KINDS = ("insert", "delete", "multi")
PROBE = 32


@dataclass
class Case:
    """One edit: the document before and after, with the cursor in each."""

    source: str
    size: int
    kind: str
    region: str
    before: str
    after: str
    cursor_before: int
    cursor_after: int
    edit_fraction: float
    """Where the (first) edit sits in the window, 0 = top, 1 = cursor."""


def _code_lines(lines: list[str]) -> list[int]:
    return [i for i, ln in enumerate(lines) if ln.strip() and not ln.strip().startswith("#")]


def make_case(
    rng: random.Random, path: Path, tokenizer: Any, size: int, kind: str, region: str
) -> Case | None:
    """Build one case from ``path``; None if the file is too short for ``size``."""
    lines = path.read_text(encoding="utf-8").split("\n")
    # ~4 characters a token: pick a start so the window fits, then grow to the size.
    approx = size * 4
    total = sum(len(ln) + 1 for ln in lines)
    if total < approx * 1.3:
        return None
    for _ in range(20):
        start = rng.randrange(0, max(1, len(lines) // 3))
        text, end = "", start
        while end < len(lines) - 12:
            candidate = text + lines[end] + "\n"
            if len(tokenizer(candidate, add_special_tokens=False)["input_ids"]) >= size:
                break
            text = candidate
            end += 1
        else:
            continue
        # The cursor: inside the next code line, after its first word (like typing).
        code_after = [i for i in _code_lines(lines) if i >= end]
        if not code_after:
            continue
        cur_line = lines[code_after[0]]
        indent = len(cur_line) - len(cur_line.lstrip())
        space = cur_line.find(" ", indent)
        col = space + 1 if 0 < space < len(cur_line) - 3 else len(cur_line) // 2
        head = "\n".join(lines[start : code_after[0]]) + "\n" + cur_line[:col]
        tail = cur_line[col:] + "\n" + "\n".join(lines[code_after[0] + 1 : code_after[0] + 12])
        window_lines = head.split("\n")
        n = len(window_lines) - 1  # editable full lines
        lo, hi = (0.05, 0.5) if region == "first" else (0.5, 0.95)
        candidates = [i for i in range(int(n * lo), max(int(n * lo) + 1, int(n * hi)))]
        outside = [
            ln for i, ln in enumerate(lines) if (i < start or i > code_after[0] + 12) and ln.strip()
        ]
        if len(candidates) < 3 or not outside:
            continue
        edited = list(window_lines)
        ops = {"insert": ["i"], "delete": ["d"], "multi": ["i", "i", "d"]}[kind]
        spots = sorted(rng.sample(candidates, len(ops)), reverse=True)
        for op, at in zip(ops, spots, strict=True):  # bottom-up keeps earlier indices valid
            if op == "i":
                edited.insert(at, rng.choice(outside))
            else:
                del edited[at]
        before = head + tail
        new_head = "\n".join(edited)
        return Case(
            source=str(path.name),
            size=size,
            kind=kind,
            region=region,
            before=before,
            after=new_head + tail,
            cursor_before=len(head),
            cursor_after=len(new_head),
            edit_fraction=min(spots) / max(1, n),
        )
    return None


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / max(len): 1.0 for equal strings."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1 - prev[-1] / max(len(a), len(b))


@dataclass(frozen=True)
class EditRow:
    """One case as one strategy saw it, compared with ``recompute``: a JSON ``rows`` entry."""

    case: int
    size: int
    kind: str
    region: str
    edit_fraction: float
    prompt_tokens: int
    update_ms: float
    encoded: int
    exact: bool
    """The completion equals recompute's."""
    exact32: bool
    """The raw ``PROBE``-token greedy continuation equals recompute's."""
    similarity: float
    similarity32: float
    edit_changed: bool
    """The edit changed recompute's completion."""
    min_margin: float
    gated: bool
    total_ms: float
    deferred: bool = False
    """The gate wanted a refresh past ``gate_refresh_tokens``: answered as the cache was."""
    exact_settled: bool = False
    """The completion equals recompute's once a deferred refresh is through (the next
    request's answer); ``exact`` when nothing was deferred."""

    def to_json(self) -> dict[str, Any]:
        """The row as written to the report (camelCase keys, in this order)."""
        return {
            "case": self.case,
            "size": self.size,
            "kind": self.kind,
            "region": self.region,
            "editFraction": self.edit_fraction,
            "promptTokens": self.prompt_tokens,
            "updateMs": self.update_ms,
            "encoded": self.encoded,
            "exact": self.exact,
            "exact32": self.exact32,
            "similarity": self.similarity,
            "similarity32": self.similarity32,
            "editChanged": self.edit_changed,
            "minMargin": self.min_margin,
            "gated": self.gated,
            "totalMs": self.total_ms,
            "deferred": self.deferred,
            "exactSettled": self.exact_settled,
        }


@dataclass
class Variant:
    """A strategy under test (pie with a given tail, prefix, recompute)."""

    name: str
    strategy: str
    tail: int = 1
    after_edit: int = 0
    rows: list[EditRow] = field(default_factory=list)


class _Probed(NamedTuple):
    """What a strategy's engine answered on the edited document."""

    result: CompletionResult
    ids: list[int]
    """The first ``PROBE`` tokens, greedy, unstopped."""


def _variants(args: argparse.Namespace) -> tuple[list[Variant], Variant]:
    """The strategies under test (``recompute`` last) and the main pie variant."""
    from completion.engine import AFTER_EDIT_TOKENS, TAIL_TOKENS

    specs = args.pie.split(",") if args.pie else ["1:0", f"{TAIL_TOKENS}:{AFTER_EDIT_TOKENS}"]
    variants = []
    for spec in specs:
        tail, _, after = spec.partition(":")
        variants.append(Variant(f"pie{tail}/{after or 0}", "pie", int(tail), int(after or 0)))
    main_pie = next(
        (v for v in variants if (v.tail, v.after_edit) == (TAIL_TOKENS, AFTER_EDIT_TOKENS)),
        variants[-1],
    )
    if not args.no_prefix:
        variants.append(Variant("prefix", "prefix"))
    variants.append(Variant("recompute", "recompute"))
    return variants, main_pie


def _make_cases(
    rng: random.Random, files: list[Path], tok: Any, sizes: list[int], n: int
) -> list[Case]:
    """Up to ``n`` cases per size, edit kind and half of the window."""
    cases: list[Case] = []
    for size in sizes:
        for kind in KINDS:
            for region in ("first", "second"):
                made = 0
                for attempt in range(n * 20):
                    if made >= n:
                        break
                    case = make_case(
                        rng, files[(attempt + made) % len(files)], tok, size, kind, region
                    )
                    if case is not None:
                        cases.append(case)
                        made += 1
    return cases


def _options(size: int, variant: Variant, confidence_margin: float) -> CompletionOptions:
    from completion.engine import CompletionOptions

    return CompletionOptions(
        max_tokens=PROBE,
        multiline="never",
        context_tokens=size + 400,
        strategy=variant.strategy,  # type: ignore[arg-type]
        tail_tokens=variant.tail,
        after_edit_tokens=variant.after_edit,
        confidence_margin=confidence_margin,
    )


@dataclass
class _EditsBench:
    """One engine per strategy on one model (``recompute``'s is the reference)."""

    variants: list[Variant]
    engines: dict[str, ProbeEngine]
    """By variant name."""
    tok: Any
    confidence_margin: float

    def run_case(self, i: int, case: Case) -> None:
        """Every strategy on ``case``: one row added to each variant."""
        from completion.engine import CompletionRequest

        key = f"case{i}"
        ref = self.engines["recompute"]
        # Recompute: the reference for the edited document, and the unedited one.
        ref_before, _ = ref.probe(
            CompletionRequest(
                key, case.before, case.cursor_before, self._options(case, self.variants[-1])
            ),
            PROBE,
        )
        self._warm(key, case)
        probed, settled = {}, {}
        for v in self.variants:
            eng = self.engines[v.name]
            req = CompletionRequest(key, case.after, case.cursor_after, self._options(case, v))
            probed[v.name] = _Probed(*eng.probe(req, PROBE))
            if probed[v.name].result.refresh_wanted:
                # As the server does: the refresh in the background, then the next request.
                eng.refresh(key)
                settled[v.name] = _Probed(*eng.probe(req, PROBE))
            eng.forget(key)
        gold = probed["recompute"]
        changed = gold.result.text != ref_before.text
        for v in self.variants:
            row = self._row(i, case, probed[v.name], gold, changed)
            if v.name in settled:
                exact = settled[v.name].result.text == gold.result.text
                row = dataclasses.replace(row, exact_settled=exact)
            v.rows.append(row)

    def _options(self, case: Case, variant: Variant) -> CompletionOptions:
        return _options(case.size, variant, self.confidence_margin)

    def _warm(self, key: str, case: Case) -> None:
        """Every cached strategy's cache of the unedited document, encoded once."""
        from completion.engine import CompletionRequest

        warm = None
        for v in self.variants[:-1]:
            eng = self.engines[v.name]
            if warm is None:
                eng.prepare(
                    CompletionRequest(key, case.before, case.cursor_before, self._options(case, v))
                )
                warm = eng.caches.get(key)
            else:
                pc = eng.caches.get(key)
                pc.ids, pc.kv, pc.last_logits = (
                    list(warm.ids),
                    copy.deepcopy(warm.kv),
                    warm.last_logits,
                )
                pc.stale = bytearray(warm.stale)

    def _row(self, i: int, case: Case, p: _Probed, gold: _Probed, changed: bool) -> EditRow:
        r, tok = p.result, self.tok
        return EditRow(
            case=i,
            size=case.size,
            kind=case.kind,
            region=case.region,
            edit_fraction=round(case.edit_fraction, 3),
            prompt_tokens=r.prompt_tokens,
            update_ms=r.prefill_ms,
            encoded=r.encoded_tokens,
            exact=r.text == gold.result.text,
            exact32=p.ids == gold.ids,
            similarity=edit_similarity(r.text, gold.result.text),
            similarity32=edit_similarity(tok.decode(p.ids), tok.decode(gold.ids)),
            edit_changed=changed,
            min_margin=r.min_margin,
            gated=r.gated,
            total_ms=r.total_ms,
            deferred=r.refresh_wanted,
            exact_settled=r.text == gold.result.text,
        )


def run_edits(args: argparse.Namespace) -> int:
    """Run the edits benchmark; returns an exit code (1 when the model has no pie)."""
    from tqdm import tqdm

    from completion.engine import CONFIDENCE_MARGIN
    from lsp_server.loading import load_with_progress, model_overrides

    from .engines import ProbeEngine

    o = model_overrides(args)
    loaded = load_with_progress(**o)
    tok = loaded.tokenizer
    if args.confidence_margin is None:
        args.confidence_margin = CONFIDENCE_MARGIN
    sizes = [int(x) for x in args.sizes.split(",")]
    variants, main_pie = _variants(args)
    engines = {v.name: ProbeEngine(loaded) for v in variants}
    ref = engines["recompute"]
    if ref.rerotator is None:
        print(f"pie is not supported by this model ({ref.pie_unsupported})", file=sys.stderr)
        return 1
    measure_verify_cost(ref)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / s for s in SOURCES if (stdlib / s).is_file()]
    rng = random.Random(args.seed)
    cases = _make_cases(rng, files, tok, sizes, args.cases)
    print(
        f"{len(cases)} cases ({args.cases} per size, kind and half) over {len(files)} files",
        file=sys.stderr,
    )
    bench = _EditsBench(variants, engines, tok, args.confidence_margin)
    for i, case in enumerate(tqdm(cases, desc="edit cases", file=sys.stderr)):
        bench.run_case(i, case)
    latency = latency_scenario(
        engines[main_pie.name],
        main_pie,
        files,
        tok,
        rng,
        args.latency_cases,
        args.confidence_margin,
    )
    report = summarize(variants, main_pie, sizes, latency, loaded, args)
    _write(report, variants, o, args.out)
    return 0


def _write(report: dict[str, Any], variants: list[Variant], o: dict[str, Any], out: Path) -> None:
    """``edits.json`` (or ``edits-<model>.json``), its plot, and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    name = "edits" if o.get("model", "default") == "default" else f"edits-{Path(o['model']).name}"
    rows = {v.name: [r.to_json() for r in v.rows] for v in variants}
    (out / f"{name}.json").write_text(json.dumps({**report, "rows": rows}, indent=1))
    plot(report, out / f"{name}.png")
    print_report(report)
    print(f"written: {out / (name + '.json')}, {out / (name + '.png')}")


def latency_scenario(
    pie: Any,
    pie_variant: Variant,
    files: list[Path],
    tok: Any,
    rng: random.Random,
    n: int,
    confidence_margin: float,
) -> dict[str, Any]:
    """Real completions in a 2k-token file: no edit vs right after a one-line edit (pie).

    Speculative decoding is off in both, so that the ratio is the cache's.
    """
    from completion.engine import CompletionOptions, CompletionRequest

    no_edit, after_edit = [], []
    opts = CompletionOptions(
        max_tokens=32,
        multiline="never",
        context_tokens=2400,
        strategy="pie",
        tail_tokens=pie_variant.tail,
        confidence_margin=confidence_margin,
        # This measures the cache: with speculation the no-edit request (a repeat of the
        # previous one) would be drafted whole from the previous answer.
        speculative=False,
    )
    made = 0
    for attempt in range(n * 20):
        if made >= n:
            break
        case = make_case(
            rng, files[attempt % len(files)], tok, 2048, "insert", "first" if made % 2 else "second"
        )
        if case is None:
            continue
        made += 1
        key = f"latency{attempt}"
        pie.complete(CompletionRequest(key, case.before, case.cursor_before, opts))
        t = time.perf_counter()
        pie.complete(CompletionRequest(key, case.before, case.cursor_before, opts))
        no_edit.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        pie.complete(CompletionRequest(key, case.after, case.cursor_after, opts))
        after_edit.append((time.perf_counter() - t) * 1000)
        pie.forget(key)
    return {
        "strategy": pie_variant.name,
        "noEditMs": summary(no_edit) if no_edit else {},
        "afterEditMs": summary(after_edit) if after_edit else {},
        "ratioOfMedians": (statistics.median(after_edit) / statistics.median(no_edit))
        if no_edit
        else None,
    }


def _agg(rows: list[EditRow]) -> dict[str, Any]:
    if not rows:
        return {}
    changed = [r for r in rows if r.edit_changed]
    upd = [r.update_ms for r in rows]
    return {
        "n": len(rows),
        "updateMs": {"median": statistics.median(upd), "p95": percentile(upd, 95)},
        "encodedMedian": statistics.median(r.encoded for r in rows),
        "exact": sum(r.exact for r in rows) / len(rows),
        "exact32": sum(r.exact32 for r in rows) / len(rows),
        "similarity": statistics.mean(r.similarity for r in rows),
        "similarity32": statistics.mean(r.similarity32 for r in rows),
        "gated": sum(r.gated for r in rows) / len(rows),
        "deferred": sum(r.deferred for r in rows) / len(rows),
        "exactSettled": sum(r.exact_settled for r in rows) / len(rows),
        "changedCases": len(changed),
        "followsEdit": (sum(r.exact for r in changed) / len(changed)) if changed else None,
    }


def _single_first_half(r: EditRow) -> bool:
    return r.kind != "multi" and r.region == "first"


def _median_update(variants: list[Variant], name: str, size: int) -> float:
    """Median update time of variant ``name`` on one-line edits in the first half."""
    rows = [
        r
        for x in variants
        if x.name == name
        for r in x.rows
        if r.size == size and _single_first_half(r)
    ]
    return statistics.median(r.update_ms for r in rows) if rows else float("nan")


def summarize(
    variants: list[Variant],
    main_pie: Variant,
    sizes: list[int],
    latency: dict[str, Any],
    loaded: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Aggregate rows per variant, per size and per edit class."""
    out: dict[str, Any] = {
        **report_header("edits", loaded),
        "casesPerCell": args.cases,
        "seed": args.seed,
        "latency": latency,
        "variants": {},
    }
    for v in variants:
        per_size = {}
        for size in sizes:
            rows = [r for r in v.rows if r.size == size]
            per_size[str(size)] = {
                "all": _agg(rows),
                "singleFirstHalf": _agg([r for r in rows if _single_first_half(r)]),
            }
        out["variants"][v.name] = {
            "perSize": per_size,
            "single": _agg([r for r in v.rows if r.kind != "multi"]),
            "multi": _agg([r for r in v.rows if r.kind == "multi"]),
        }
    # Speed ratios on one-line edits in the first half, per size, measured in this run.
    ratios = {}
    pie_name = main_pie.name
    for size in sizes:
        pie_ms = _median_update(variants, pie_name, size)
        ratios[str(size)] = {
            "strategy": pie_name,
            "recomputeOverPie": _median_update(variants, "recompute", size) / pie_ms,
            "prefixOverPie": _median_update(variants, "prefix", size) / pie_ms,
        }
    out["speedupSingleFirstHalf"] = ratios
    return out


def print_report(report: dict[str, Any]) -> None:
    """The table."""
    print(f"\nmodel {report['model']} on {report['device']} ({report['dtype']})")
    head = f"{'variant':<11} {'size':>5} {'n':>3} {'update ms (med/p95)':>20} {'re-enc':>7} {'exact':>6} {'exact32':>7} {'sim':>5} {'sim32':>5} {'follows':>8}"
    print(head)
    for name, v in report["variants"].items():
        for size, cell in v["perSize"].items():
            a = cell["all"]
            if not a:
                continue
            follows = (
                "-" if a["followsEdit"] is None else f"{a['followsEdit']:.2f}/{a['changedCases']}"
            )
            print(
                f"{name:<11} {size:>5} {a['n']:>3} {a['updateMs']['median']:>9.0f}/{a['updateMs']['p95']:<10.0f}"
                f" {a['encodedMedian']:>7.0f} {a['exact']:>6.2f} {a['exact32']:>7.2f} {a['similarity']:>5.2f}"
                f" {a['similarity32']:>5.2f} {follows:>8}"
            )
    print("\nagreement with recompute (completion / 32-token) over all sizes:")
    for name, v in report["variants"].items():
        s, m = v["single"], v["multi"]
        print(
            f"  {name:<11} single edits {s['exact']:.2f} / {s['exact32']:.2f} (n={s['n']})   multi-place {m['exact']:.2f} / {m['exact32']:.2f} (n={m['n']})"
        )
    print("\ngate left to the background (deferred) and completion agreement once refreshed:")
    for name, v in report["variants"].items():
        s, m = v["single"], v["multi"]
        print(
            f"  {name:<11} single: deferred {s['deferred']:.2f}, exact then {s['exactSettled']:.2f}"
            f"   multi-place: deferred {m['deferred']:.2f}, exact then {m['exactSettled']:.2f}"
        )
    print("\nupdate speedup of pie on one-line edits in the first half (median ratio):")
    for size, r in report["speedupSingleFirstHalf"].items():
        print(
            f"  {size:>5} tokens: {r['recomputeOverPie']:.1f}x vs recompute, {r['prefixOverPie']:.1f}x vs prefix"
        )
    lat = report["latency"]
    if lat.get("noEditMs"):
        print(
            f"\n2k file, single-line completion latency ({lat['strategy']}): no edit median {lat['noEditMs']['median']:.0f} ms,"
            f" right after a one-line edit median {lat['afterEditMs']['median']:.0f} ms (p95 {lat['afterEditMs']['p95']:.0f}),"
            f" ratio {lat['ratioOfMedians']:.2f}"
        )


def plot(report: dict[str, Any], path: Path) -> None:
    """Update time against prompt size, per strategy (log scale)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, v in report["variants"].items():
        xs, ys = [], []
        for size, cell in v["perSize"].items():
            if cell["all"]:
                xs.append(int(size))
                ys.append(cell["all"]["updateMs"]["median"])
        ax.plot(xs, ys, marker="o", label=name)
    ax.set_xlabel("prompt size (tokens)")
    ax.set_ylabel("cache update, median (ms)")
    ax.set_yscale("log")
    ax.set_title(f"Cache update after an edit: {report['model']} on {report['device']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
