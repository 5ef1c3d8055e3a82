"""End to end: the edit-aware cache behind the real server, against recompute."""

from __future__ import annotations

from pathlib import Path

import pytest

from lsp_server.client import PieClient

pytestmark = [pytest.mark.e2e, pytest.mark.model]

SOURCE = '''import os


def list_files(path):
    """Return the files below path."""
    found = []
    for root, dirs, files in os.walk(path):
        for name in files:
            found.append(os.path.join(root, name))
    return found


def count_lines(filename):
    """Count the lines of a text file."""
    with open(filename) as handle:
        return sum(1 for _ in handle)


def total_lines(path):
    """Count the lines of every file below path."""
    return sum(count_'''


async def run(strategy: str, tmp: Path) -> tuple[list[str], dict]:
    client = PieClient()
    await client.start(
        {"cache": {"strategy": strategy, "staleBudget": 100000}, "completion": {"maxTokens": 16}}
    )
    try:
        text = SOURCE
        uri = client.open(tmp / f"cache_{strategy}.py", text)
        lines = text.split("\n")
        line, col = len(lines) - 1, len(lines[-1])
        out = [(await client.inline(uri, line, col))[0]]
        # Edits far above the cursor: an inserted line, then a replaced word.
        client.change(uri, (1, 0), (1, 0), "import sys\n")
        out.append((await client.inline(uri, line + 1, col))[0])
        client.change(uri, (4, 4), (4, 14), "list_all_files")
        out.append((await client.inline(uri, line + 1, col))[0])
        stats = await client.stats()
        return out, stats
    finally:
        await client.stop()


async def test_pie_matches_recompute_and_reencodes_far_fewer_tokens(tmp_path: Path) -> None:
    pie_out, pie_stats = await run("pie", tmp_path)
    ref_out, ref_stats = await run("recompute", tmp_path)
    assert pie_out == ref_out
    assert all(pie_out)
    pie_tokens = pie_stats["totals"]["tokensReencoded"]
    ref_tokens = ref_stats["totals"]["tokensReencoded"]
    prompt = pie_stats["documents"][0]["tokens"]
    assert ref_tokens >= 3 * prompt - 3  # every completion re-encoded everything
    assert pie_tokens < ref_tokens / 2, (pie_tokens, ref_tokens)
    doc = pie_stats["documents"][0]
    assert doc["strategy"] == "pie" and doc["staleTokens"] > 0
    assert ref_stats["documents"][0]["staleTokens"] == 0
    assert pie_stats["totals"]["edits"] == 2
    for key in ("cacheUpdateMs", "refreshes", "cacheBytes"):
        assert key in pie_stats["totals"]
