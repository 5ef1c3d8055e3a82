"""What drafting does to cold completions, by the cost curve (free of timing noise).

At real positions in standard-library files (those of ``pie-lsp bench decode``: single
lines, then blocks; the files of the last three positions open as other documents),
one engine completes each position once, then re-asks there (so history is learned as
in an editor). For each cold completion it prints the draft sources used and its
speedup by the cost curve: plain decoding's forwards (one per token after the first)
over the speculating engine's forwards weighted by the verify-cost curve
(``decodeCostSteps``). ``--all-unbounded`` lets every source learned sure draft past the
loss allowance, as before 2026-12-02 (docs/speculative.md, "When to draft").

Run: .venv/bin/python benchmarks/cold_drafting.py [--model default] [--n 8] [--all-unbounded]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import completion.drafting_policy as policy
from completion.drafting_sources import DRAFT_SOURCES
from completion.engine import CompletionOptions, CompletionRequest, Engine
from completion.models import load_model
from tooling.bench_decode import make_positions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=8, help="positions per kind (line, block)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--all-unbounded", action="store_true")
    args = ap.parse_args()
    if args.all_unbounded:
        policy.UNBOUNDED_SOURCES = frozenset(DRAFT_SOURCES)
    engine = Engine(load_model(args.model, "cpu", "auto"))
    # Measured once, before the first completion (the server does it at start-up).
    print("verify cost:", {n: round(engine.costs.cost(n), 2) for n in (2, 4, 8, 16)})
    positions = make_positions(args.seed, args.n, 6000)
    opts = CompletionOptions(max_tokens=64, context_tokens=1024, confidence_margin=0.0)
    opened: dict[str, str] = {}
    ratios = []
    for i, pos in enumerate(positions):
        others = tuple((n, b) for n, b in reversed(opened.items()) if n != pos.source)[:3]
        t = engine.totals
        cost0 = t.decodeCostSteps
        by0 = {k: list(v) for k, v in t.draftsBySource.items()}
        req = CompletionRequest(f"doc{i}", pos.text, pos.cursor, opts, others)
        r = engine.complete(req)
        cost = t.decodeCostSteps - cost0
        used = {
            k: [v[0] - by0[k][0], v[1] - by0[k][1]]
            for k, v in t.draftsBySource.items()
            if v != by0[k]
        }
        ratio = (r.generated_tokens - 1) / cost if cost else None
        if ratio is not None:
            ratios.append(ratio)
        engine.complete(req)  # the re-ask: history and acceptance learn as in an editor
        opened.pop(pos.source, None)
        opened[pos.source] = pos.path.read_text(encoding="utf-8") if pos.path else pos.text
        shown = "-" if ratio is None else f"{ratio:.2f}x"
        print(f"{i:2} {pos.kind:5} {r.generated_tokens:3} tokens  {shown:>6}  drafted {used}")
    if ratios:
        print(
            f"by the cost curve: median {statistics.median(ratios):.3f}x, worst {min(ratios):.3f}x"
        )


if __name__ == "__main__":
    main()
