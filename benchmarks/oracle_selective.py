"""Oracle for selective recomputation (docs/cache.md, "Selective recomputation").

For one-line and multi-place edits in the first half of 1k-token prompts: build the pie
cache after the edit and a full recompute, measure each stale token's key/value
deviation, then make the top k% stale tokens exact (their keys and values copied from
the recompute) and compare 16-token greedy continuations with recompute's. Selection
by the true all-layer deviation (an oracle), by layer-1/2 deviation (CacheBlend's cheap
signal) and by distance from the edit.

Run: .venv/bin/python benchmarks/oracle_selective.py [cases=30] [seed=7]
"""

from __future__ import annotations

import copy
import random
import sys
import sysconfig
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from completion.decode import forward, generate
from completion.engine import CompletionOptions, CompletionRequest
from completion.models import load_model
from tooling.bench_edits import SOURCES, make_case
from tooling.engines import PrepareEngine

FRACTIONS = [0.0, 0.02, 0.05, 0.1, 0.2]
SIZE = 1024


def continuation(model: Any, kv: Any, ids: list[int]) -> list[int]:
    """16 greedy tokens after re-feeding the last prompt token on a copy of ``kv``."""
    kv = copy.deepcopy(kv)
    kv.crop(-1)
    logits = forward(model, [ids[-1]], kv, len(ids) - 1)
    return list(generate(model, kv, logits, len(ids), 16))


def main(n_cases: int, seed: int) -> None:
    loaded = load_model("default")
    tok, model = loaded.tokenizer, loaded.model
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [stdlib / s for s in SOURCES if (stdlib / s).is_file()]
    rng = random.Random(seed)
    results: dict[str, list[tuple[bool, bool]]] = {
        f"{m}{f}": [] for m in ("all", "l1", "l2", "near") for f in FRACTIONS
    }
    pie, ref = PrepareEngine(loaded), PrepareEngine(loaded)

    def opts(strategy: str) -> CompletionOptions:
        return CompletionOptions(
            max_tokens=16, multiline="never", context_tokens=SIZE + 400, strategy=strategy
        )  # type: ignore[arg-type]

    def first_line(ids: list[int]) -> str:
        return tok.decode(ids).split("\n")[0]

    made = attempt = 0
    while made < n_cases and attempt < n_cases * 20:
        attempt += 1
        kind = ("insert", "delete", "multi")[made % 3]
        case = make_case(rng, files[attempt % len(files)], tok, SIZE, kind, "first")
        if case is None:
            continue
        made += 1
        key = f"c{made}"
        pie.prepare(CompletionRequest(key, case.before, case.cursor_before, opts("pie")))
        pie.prepare(CompletionRequest(key, case.after, case.cursor_after, opts("pie")))
        ref.prepare(CompletionRequest(key, case.after, case.cursor_after, opts("recompute")))
        p, r = pie.caches.get(key), ref.caches.get(key)
        assert p.ids == r.ids
        stale = torch.nonzero(torch.tensor(list(p.stale), dtype=torch.bool)).flatten()
        layers = len(r.kv.layers)
        devs = torch.stack(
            [
                (p.kv.layers[i].keys[0] - r.kv.layers[i].keys[0]).float().norm(dim=(0, 2))
                + (p.kv.layers[i].values[0] - r.kv.layers[i].values[0]).float().norm(dim=(0, 2))
                for i in range(layers)
            ]
        )  # [layers, tokens]
        scores = {"all": devs.sum(0), "l1": devs[1], "l2": devs[2]}
        gold = continuation(model, r.kv, r.ids)
        for f in FRACTIONS:
            k = round(f * len(stale))
            for method in ("all", "l1", "l2", "near"):
                if k == 0:
                    sel = stale[:0]
                elif method == "near":
                    sel = stale[:k]
                else:
                    sel = stale[torch.topk(scores[method][stale], k).indices]
                kv = copy.deepcopy(p.kv)
                for i in range(layers):
                    kv.layers[i].keys[0][:, sel] = r.kv.layers[i].keys[0][:, sel]
                    kv.layers[i].values[0][:, sel] = r.kv.layers[i].values[0][:, sel]
                out = continuation(model, kv, p.ids)
                results[f"{method}{f}"].append((out == gold, first_line(out) == first_line(gold)))
                if k == 0:
                    break
        s = scores["all"][stale].sort(descending=True).values
        share = float(s[: max(1, len(s) // 10)].sum() / s.sum()) if len(s) else 0.0
        pair = torch.stack([scores["l1"][stale], scores["all"][stale]])
        corr = float(torch.corrcoef(pair)[0, 1]) if len(stale) > 2 else 0.0
        print(
            f"case {made} {kind}: {len(stale)} stale of {len(p.ids)}, top 10% share {share:.2f},"
            f" corr(layer 1, all) {corr:.2f}, pie as is {results['all0.0'][-1]}",
            flush=True,
        )
        pie.forget(key)
        ref.forget(key)
    print()
    for name, v in results.items():
        if v:
            exact = sum(a for a, _ in v) / len(v)
            line = sum(b for _, b in v) / len(v)
            print(
                f"{name:<10} 16 tokens exact {exact:.2f}, first line exact {line:.2f} (n={len(v)})"
            )


if __name__ == "__main__":
    main(
        int(sys.argv[1]) if len(sys.argv) > 1 else 30, int(sys.argv[2]) if len(sys.argv) > 2 else 7
    )
