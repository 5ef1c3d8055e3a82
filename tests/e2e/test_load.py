"""Load, short (``pie-lsp bench load`` runs the storm for a minute and the session for
ten): quiet typing, a 50 keys/s storm with a request per keystroke (each cancelled by
the next), quiet typing again, probes on a second document and ``pie/stats`` pings all
along. Every request is answered and the server exits cleanly; the figures are the
benchmark's."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tooling.bench_load import run_load

pytestmark = [pytest.mark.e2e]


def test_every_request_of_a_typing_storm_is_answered(tmp_path: Path) -> None:
    args = argparse.Namespace(
        model="tiny", quiet_s=3.0, storm_s=4.0, keys_per_s=50.0, long_s=3.0, out=tmp_path
    )
    assert run_load(args) == 0
    report = json.loads((tmp_path / "load.json").read_text())
    assert report["answered"] == report["requests"] > 150
    assert report["exitCode"] == 0
    assert report["keystrokes"]["storm"] >= 150
    assert report["serverCounters"]["errors"] == 0
    assert {"quiet", "storm", "long"} <= set(report["probe"])
