"""The README's tables from a ``bench constraints`` report.

``python -m tooling.constraints_report bench-results/constraints/constraints-test.json``
prints one markdown table (a row per model, mode and side) and a line of figures per
model, the way README's Constraints section shows them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

LABELS = {"default": "SmolLM2", "qwen2.5-coder-0.5b": "Qwen"}
HEADER = (
    "| model | mode | side | n | exact | similarity | invented / writes a member "
    "| `ast.parse` breaks (real file parsed) | of documents that parsed "
    "| trimmed/closed/dropped | latency median ms |\n" + "|---" * 11 + "|"
)


def _count(rate: dict[str, Any]) -> str:
    return f"{rate['count']}/{rate['of']}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}%"


def _num(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def row(label: str, mode: str, side: str, cell: dict[str, Any]) -> str:
    """One table row: a model, a mode, constraints off or on."""
    actions = "-"
    if side == "on":
        actions = "/".join(str(cell[k]["count"]) for k in ("trimmed", "closed", "dropped"))
    cells = [
        label,
        mode,
        side,
        str(cell["n"]),
        _count(cell["exact"]),
        f"{cell['similarity']:.2f}",
        _count(cell["invented"]),
        _count(cell["breaks"]),
        _count(cell["breaksOfParsingDocuments"]),
        actions,
        f"{cell['latencyMs']['median']:.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _mode_line(mode: str, m: dict[str, Any]) -> str:
    spec = m["speculation"]
    return (
        f"{mode}: latency on/off {_num(m['latencyRatio'])} "
        f"(paired {_num(m['latencyRatioPaired'])}), exact/similarity drop "
        f"{m['exactDropPoints']:.1f}/{m['similarityDropPoints']:.1f} pts, acceptance "
        f"{_num(spec['off']['acceptance'])}/{_num(spec['on']['acceptance'])}, cost steps per "
        f"token {_num(spec['off']['costStepsPerToken'])}/{_num(spec['on']['costStepsPerToken'])}"
    )


def figures(label: str, model: dict[str, Any]) -> str:
    """The line of figures under the table for one model."""
    fb = model["falseBlocks"]
    checks, wait = model["overheadChecks"], model["oracleWait"]
    parts = [
        f"true members blocked {_count(fb['falseBlock'])} of known at {fb['positions']} "
        f"member uses ({fb['reasons']})",
        f"mask + check time / decode time per request median {_pct(checks['median'])}, "
        f"p95 {_pct(checks['p95'])}",
        f"oracle wait / decode median {_pct(wait['median'])}, p95 {_pct(wait['p95'])}",
        *(_mode_line(mode, m) for mode, m in model["modes"].items()),
    ]
    return f"- {label}: " + "; ".join(parts)


def report(data: dict[str, Any]) -> str:
    """The table and the figures of one report."""
    lines = [HEADER]
    for name, model in data["models"].items():
        label = LABELS.get(name, name)
        for mode, m in model["modes"].items():
            lines += [row(label, mode, side, m[side]) for side in ("off", "on")]
    lines.append("")
    lines += [figures(LABELS.get(n, n), m) for n, m in data["models"].items()]
    return "\n".join(lines)


def main() -> None:
    """Print the tables of the reports named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    for path in parser.parse_args().reports:
        data = json.loads(path.read_text(encoding="utf-8"))
        print(
            f"**{data['split']} split** ({data['positionsPerKind']} positions per kind, "
            f"{data['date'][:10]})\n"
        )
        print(report(data) + "\n")


if __name__ == "__main__":
    main()
