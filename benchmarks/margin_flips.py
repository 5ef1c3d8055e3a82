"""Do a suggestion's greedy margins predict which of its tokens an edit elsewhere flips?

At real positions in standard-library files (those of ``pie-lsp bench decode``: single
lines and blocks), decode 24 greedy tokens, add a comment line 40 lines above the
cursor, decode again from a fresh encode, and find the first token that differs. Counts
per margin band (the margin the first decode picked each token by) how many tokens up
to that point came again and how many flipped: the priors of ``MarginBands`` and the
figures in docs/speculative.md ("Verifying a re-asked suggestion with the prompt").

Run: .venv/bin/python benchmarks/margin_flips.py [--model default] [--n 10] [--seed 11]
"""

from __future__ import annotations

import argparse
import bisect
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cache.growing import growing_cache
from completion.decode import generate, prefill
from completion.engine import CompletionOptions, CompletionRequest, Engine
from completion.models import load_model
from completion.suggestion_memory import MarginBands
from tooling.bench_decode import make_positions

TOKENS = 24


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=10, help="positions per kind (line, block)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    loaded = load_model(args.model, "cpu", "auto")
    eng = Engine(loaded)

    def greedy(text: str, cursor: int) -> tuple[list[int], list[float]]:
        opts = CompletionOptions(speculative=False)
        prompt = eng._prompt(CompletionRequest("x", text, cursor, opts))
        kv = growing_cache(loaded.model.config)
        logits = prefill(loaded.model, prompt.ids, kv, 0)
        margins: list[float] = []
        out = list(
            generate(
                loaded.model,
                kv,
                logits,
                len(prompt.ids),
                TOKENS,
                0.0,
                eng.format.stop_ids,
                None,
                margins=margins,
            )
        )
        return out, margins

    edges = MarginBands.EDGES
    names = MarginBands.NAMES[: len(edges) + 1]
    kept = [0] * len(names)
    flipped = [0] * len(names)
    whole = thin = total = 0
    for pos in make_positions(args.seed, args.n, 6000):
        total += 1
        text, cursor = pos.text, pos.cursor
        before, margins = greedy(text, cursor)
        starts = [0] + [j + 1 for j, c in enumerate(text[:cursor]) if c == "\n"]
        at = starts[max(0, len(starts) - 40)]
        comment = "# reviewed\n"
        after, _ = greedy(text[:at] + comment + text[at:], cursor + len(comment))
        n = min(len(before), len(after))
        diverge = next((i for i in range(n) if before[i] != after[i]), n)
        whole += diverge == n
        thin += any(m < 0.5 for m in margins[: len(before)])
        for i, m in enumerate(margins[: min(diverge + 1, len(before))]):
            band = bisect.bisect_right(edges, m)
            if i < diverge:
                kept[band] += 1
            else:
                flipped[band] += 1
        print(
            f"{pos.kind} {pos.source}: {len(before)} tokens, first difference at {diverge}",
            file=sys.stderr,
        )
    print(
        f"{args.model}: {whole} of {total} answers the same for their first {TOKENS} tokens;"
        f" {thin} had a pick by a margin below 0.5"
    )
    for name, k, f in zip(names, kept, flipped, strict=True):
        print(f"  margin {name:>5}: {k} picked again, {f} flipped")


if __name__ == "__main__":
    main()
