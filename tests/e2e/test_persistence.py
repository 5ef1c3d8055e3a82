"""End to end: prompt caches saved by one server and restored by the next (issue 20).

The real default model over stdio, a real file of about 4,000 tokens (the standard
library's ``json/encoder.py``, copied into a temporary workspace), servers started one
after another on the same store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tooling.client import PieClient

pytestmark = [pytest.mark.e2e, pytest.mark.model]

OPTIONS = {"completion": {"maxTokens": 16, "contextTokens": 4096}}
LINE = "        return ''.join(chunks)"
CUT = "        return ''.join("
"""The cursor's line: the file's ``LINE`` with its rest removed."""


def source() -> str:
    text = (Path(json.__file__).parent / "encoder.py").read_text(encoding="utf-8")
    assert LINE in text
    return text.replace(LINE, CUT, 1)


def cursor(text: str) -> tuple[int, int]:
    return text.split("\n").index(CUT), len(CUT)


SHORT = {"completion": {"maxTokens": 16, "contextTokens": 512}}
"""For the tests of faults: a short prompt is enough."""


async def session(path: Path, kv: Path, options: dict | None = None) -> tuple[str, dict, list[str]]:
    """Start a server on store ``kv``, open ``path``, complete once, shut down.

    Returns the completion, the totals of ``pie/stats`` before shutting down and the
    messages the server showed.
    """
    messages: list[str] = []
    client = PieClient(on_message=messages.append, kv_dir=kv)
    await client.start({**OPTIONS, **(options or {})})
    try:
        text = path.read_text(encoding="utf-8")
        uri = client.open(path, text)
        line, col = cursor(text)
        completion, _ = await client.inline(uri, line, col)
        totals = (await client.stats())["totals"]
    finally:
        await client.stop()
    return completion, totals, messages


async def test_a_restarted_server_completes_from_the_saved_cache(tmp_path: Path) -> None:
    path, kv = tmp_path / "encoder.py", tmp_path / "kv"
    path.write_text(source(), encoding="utf-8")

    first, cold, _ = await session(path, kv)
    assert first.strip(), "the cold server gave no completion"
    assert cold["diskMisses"] == 1 and cold["diskHits"] == 0
    assert cold["tokensReencoded"] == cold["promptTokens"] > 1500  # the whole prompt
    assert list(kv.glob("*.safetensors")) and list(kv.glob("*.json"))  # saved at shutdown

    again, warm, _ = await session(path, kv)
    assert again == first
    assert warm["diskHits"] == 1 and warm["diskMisses"] == 0 and warm["diskErrors"] == 0
    assert warm["tokensReencoded"] <= 64  # the prompt's tail, not the file

    # The file changes while no server runs: a line inserted near the top.
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("import re\n", "import re\nimport sys\n", 1), encoding="utf-8")
    repaired, after, _ = await session(path, kv)
    assert after["diskRepairs"] == 1 and after["diskHits"] == 0
    assert after["tokensReencoded"] < cold["tokensReencoded"] / 4
    recomputed, _, _ = await session(
        path, tmp_path / "kv-recompute", {"cache": {"strategy": "recompute"}}
    )
    assert repaired == recomputed


async def test_a_damaged_store_is_a_cold_start_not_a_failure(tmp_path: Path) -> None:
    path, kv = tmp_path / "encoder.py", tmp_path / "kv"
    path.write_text(source(), encoding="utf-8")
    first, _, _ = await session(path, kv, SHORT)
    for tensors in kv.glob("*.safetensors"):
        blob = tensors.read_bytes()
        tensors.write_bytes(blob[: len(blob) // 2])  # truncated
    again, totals, messages = await session(path, kv, SHORT)
    assert again == first
    assert totals["diskErrors"] == 1 and totals["diskHits"] == 0
    assert totals["diskMisses"] == 1 and not messages


async def test_persistence_off_saves_nothing(tmp_path: Path) -> None:
    path, kv = tmp_path / "encoder.py", tmp_path / "kv"
    path.write_text(source(), encoding="utf-8")
    _, totals, _ = await session(path, kv, {**SHORT, "cache": {"diskMB": 0}})
    assert totals["diskCacheBytes"] == 0 and totals["diskSaves"] == 0
    assert not kv.exists() or not any(kv.iterdir())


async def test_a_store_that_cannot_be_written_is_counted_and_serving_goes_on(
    tmp_path: Path,
) -> None:
    import asyncio

    path = tmp_path / "encoder.py"
    path.write_text(source(), encoding="utf-8")
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the store should be")
    messages: list[str] = []
    client = PieClient(on_message=messages.append, kv_dir=blocked / "kv")
    await client.start(SHORT)
    try:
        text = path.read_text(encoding="utf-8")
        line, col = cursor(text)
        uri = client.open(path, text)
        first, _ = await client.inline(uri, line, col)
        client.close(uri)  # the save fails on the disk thread
        for _ in range(100):
            totals = (await client.stats())["totals"]
            if totals["diskErrors"]:
                break
            await asyncio.sleep(0.1)
        assert totals["diskErrors"] == 1 and totals["diskSaves"] == 0
        uri = client.open(path, text)  # and the server goes on as from a cold start
        again, _ = await client.inline(uri, line, col)
        assert again == first and not messages
    finally:
        await client.stop()
